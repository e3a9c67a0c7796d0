"""Full-batch and stochastic steps, gradient post-processing, schedules, checkpoints and the loop. May import:
errors, progress, config, files, data, models."""
