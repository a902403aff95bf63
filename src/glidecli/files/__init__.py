"""What is read and written: the weights manifest (weights.toml), fetching and caching
weights, pictures and masks in, PNGs with their settings out. Imports `diffusion` and `nets`."""
