"""A run's life cycle around the training loop: start-up checks, the run folder, device set-up, resume,
signals, outputs, trackers and sweeps. Imports from every layer below it, never from the entry points."""
