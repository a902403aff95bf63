"""What computes: the U-Net and its configs, the text transformer, the noised CLIP, small
layers, building and loading checkpoints, and the tokenizers. Imports no other wing."""
