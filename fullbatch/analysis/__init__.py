"""Measurements of the training problem during training (sharpness of the full-batch loss)."""
