"""`glide train`: the loop (loop.py), its settings (settings.py), where a run starts
(start.py), its batches (data.py), its run state and checkpoints (state.py), and the shapes
data set (dataset.py). Imports `render` (to draw samples during a run) and below."""
