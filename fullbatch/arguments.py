"""Command-line parsing for the package's tools with the project's one-line errors."""
import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are the project's single line on stderr (`fullbatch: ...`, exit 2) instead of the
    usage text and a second line, so that every tool reports a bad argument the same way."""

    def error(self, message):
        print(f"fullbatch: {message}", file=sys.stderr)
        raise SystemExit(2)


def count_problem(flag, value, least, most=None):
    """Why the integer `value` of `flag` (e.g. --seeds) is out of range, or None; None values are not given."""
    if value is None or (value >= least and (most is None or value <= most)):
        return None
    expected = f"an integer >= {least}" if most is None else f"an integer from {least} to {most}"
    return f"{flag}={value} is not allowed: expected {expected}"
