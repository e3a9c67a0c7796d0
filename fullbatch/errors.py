"""How the package reports a problem: the errors a user is meant to read, the one line they print and the exit
code every entry point ends with.

They sit at the bottom of the package, so every layer can raise them without importing a higher one; the
entry scripts and tools turn them into one line on stderr and an exit code from `ExitCode`."""
import enum
import sys


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and what is allowed."""


class DatasetUnavailable(RuntimeError):
    """The dataset files are missing, unreadable or malformed; the message says which and what to do."""


class Stopped(BaseException):
    """A stop signal that cannot wait for the end of a step. A BaseException, so that no `except Exception`
    on the way (Hydra's job runner, data loaders) swallows it."""


class ExitCode(enum.IntEnum):
    """The exit codes of the entry scripts and tools, the same everywhere so that batch scripts can requeue."""
    DONE = 0
    FAILED = 1        # crashed, or (reproduce) a job failed
    BAD_INPUT = 2     # a configuration, argument or data error: one line on stderr
    DIVERGED = 3
    STOPPED = 4       # a stop signal: run the same command again to continue


def exit_code(error):
    """The exit code for an error the user is meant to read, or None for any other (a crash)."""
    if isinstance(error, (ConfigError, DatasetUnavailable)):
        return ExitCode.BAD_INPUT
    if isinstance(error, Stopped):
        return ExitCode.STOPPED
    return None


def report(error, code=None):
    """Print `error` (or a message) as the package's one line on stderr; return `code`, else the error's."""
    print(f"fullbatch: {error}", file=sys.stderr)
    return code if code is not None else (exit_code(error) or ExitCode.FAILED)


def _lines(text):
    return [line.strip() for line in str(text).splitlines() if line.strip()]


def first_line(text, limit=None):
    """The first non-blank line of `text` (an error, say), stripped and cut to `limit` characters; '' if none."""
    lines = _lines(text)
    return lines[0][:limit] if lines else ""


def last_line(text):
    """The last non-blank line of `text`, stripped: where a subprocess's or a remote job's traceback says what
    went wrong. '' if none."""
    lines = _lines(text)
    return lines[-1] if lines else ""


def refusal(key, value, reason):
    """The ConfigError for `key=value`, in the one form every check uses."""
    return ConfigError(f"{key}={value!r} is not allowed: {reason}")


def require(condition, key, allowed, value):
    """Raise the ConfigError for `key=value` unless `condition` holds; `allowed` says what would be."""
    if not condition:
        raise refusal(key, value, f"expected {allowed}")
