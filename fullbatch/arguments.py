"""Command-line parsing for the package's tools with the project's one-line errors."""
import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are the project's single line on stderr (`fullbatch: ...`, exit 2) instead of the
    usage text and a second line, so that every tool reports a bad argument the same way."""

    def error(self, message):
        print(f"fullbatch: {message}", file=sys.stderr)
        raise SystemExit(2)
