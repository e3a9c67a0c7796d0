"""File safety: atomic writes, locks, loaders that rebuild data without running code, walks that end, and the
one reader of a run's JSON files. May import: errors, progress, config."""
