"""The two errors a user is meant to read: a configuration that cannot work, and data that is not there.

They sit at the bottom of the package, so every layer can raise them without importing a higher one; the
entry scripts turn them into one line on stderr and exit code 2."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and what is allowed."""


class DatasetUnavailable(RuntimeError):
    """The dataset files are missing, unreadable or malformed; the message says which and what to do."""
