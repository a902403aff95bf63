"""How to sample and train a diffusion model, whatever the network: schedules and respacing,
samplers over a `denoise(x, i)` callable, guidance wrappers, per-image noise and losses.
Imports only `nets`."""
