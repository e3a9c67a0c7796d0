"""A run's life cycle around the training loop: start-up checks, the run folder, device set-up, resume,
signals, outputs, trackers and sweeps. May import every layer below it (training and down), never an entry point."""
