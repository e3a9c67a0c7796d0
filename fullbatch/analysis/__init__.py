"""Measurements of the training problem during training (sharpness, block gradient noise, the regularizer's
precision). May import: errors, progress, config, files, data, models, training."""
