"""What a run leaves behind: metrics.jsonl, summary.json, model.pt and a row in tables/<template>.csv."""
import csv
import json
import math
import os
import logging
import subprocess

from fullbatch.files import atomic_write, locked_file

log = logging.getLogger("fullbatch")


def _plain(value):
    """JSON-safe, recursively: NaN and infinities become strings instead of invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class MetricsLog:
    """Appends one JSON object per line and flushes, so a crash loses at most the current step. A row that
    cannot be written (full disk) is logged and skipped: it must not end hours of training."""

    def __init__(self, path):
        self.handle = open(path, "a")

    def write(self, row):
        try:
            self.handle.write(json.dumps(_plain(row)) + "\n")
            self.handle.flush()
        except OSError as error:
            log.error(f"Could not write the metrics of step {row.get('step')} ({error}); training goes on")

    def close(self):
        self.handle.close()


def write_json(path, content):
    atomic_write(path, lambda handle: json.dump(_plain(content), handle, indent=2, default=str), mode="w")


def git_revision(folder):
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def append_table_row(path, row):
    """Append `row` to a CSV, writing the header for a new file; a lock keeps concurrent sweep jobs apart."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with locked_file(path, "a", newline="") as handle:
        handle.seek(0, os.SEEK_END)
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerow({key: _plain(value) for key, value in row.items()})
        handle.flush()
