"""What figures need to know about run folders: their metrics joined across resumes, and labels that say how
the runs differ from each other. A damaged metrics.jsonl or summary.json is read as far as it goes, with a
warning naming it (on the "fullbatch" logger): a figure drawn from part of a run must not look like all of it."""
import json
import logging
import os

import yaml

from fullbatch.files.atomic import read_regular
from fullbatch.files.run_json import DamagedRunFile, read_json_object
from fullbatch.run.outputs import compact_overrides

log = logging.getLogger("fullbatch")
_warned = set()


def warn_once(path, problem):
    """Log `problem` with `path` once per process: a folder's summary is read again and again (every check of
    whether a row ended), and one warning per damaged file is enough."""
    if path not in _warned:
        _warned.add(path)
        log.warning(f"{path} {problem}")


def _metrics_row(line):
    """The metrics row of one line of metrics.jsonl, or None for a damaged line (cut short, garbled, no step)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row.get("step"), bool):
        return row
    return None


def read_metrics(run_dir):
    """The rows of metrics.jsonl, as one increasing sequence of steps: a run resumed in its own folder repeats
    the steps after its checkpoint, and the later rows are the ones that count. Damaged lines (cut short by a
    kill or a full disk, garbled bytes, no step) are skipped, with one warning naming the file."""
    path = os.path.join(run_dir, "metrics.jsonl")
    rows, damaged = [], []
    with open(path, errors="replace") as handle:  # garbled bytes make a damaged line, not a UnicodeDecodeError
        for number, line in enumerate(handle, 1):
            row = _metrics_row(line)
            if row is None:
                if line.strip():
                    damaged.append(number)
                continue
            while rows and rows[-1]["step"] >= row["step"]:
                rows.pop()
            rows.append(row)
    if damaged:
        log.warning(f"{path}: skipped {len(damaged)} damaged line(s) (line {damaged[0]} first); the figure "
                    "shows the rest")
    return rows


def read_summary(run_dir):
    """The run's summary.json as a dict; {} when there is none yet, or (with a warning) when it is damaged."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.lexists(path):
        return {}
    try:
        return read_json_object(path)
    except DamagedRunFile as damaged:
        warn_once(path, f"{damaged.reason}; it is left out")
        return {}


def resumed_from_dir(run_dir):
    """The run folder whose checkpoint this run continued from, or None."""
    checkpoint = read_summary(run_dir).get("resumed_from")
    if not checkpoint or not isinstance(checkpoint, str):
        return None
    folder = os.path.dirname(os.path.dirname(checkpoint))  # <run>/checkpoints/step-N.pt
    return folder if os.path.isfile(os.path.join(folder, "metrics.jsonl")) else None


def joined_metrics(run_dir):
    """The metrics of a run and of the runs it resumed from, as one curve: each earlier segment up to the step
    the next one continued from."""
    rows, folder, seen = read_metrics(run_dir), run_dir, {os.path.abspath(run_dir)}
    while (earlier := resumed_from_dir(folder)) and os.path.abspath(earlier) not in seen:
        seen.add(os.path.abspath(earlier))
        first = rows[0]["step"] if rows else float("inf")
        rows = [row for row in read_metrics(earlier) if row["step"] < first] + rows
        folder = earlier
    return rows


def chain(run_dir):
    """Absolute paths of this run's folder and of every folder it resumed from."""
    folders, folder = [os.path.abspath(run_dir)], run_dir
    while (earlier := resumed_from_dir(folder)) and os.path.abspath(earlier) not in folders:
        folders.append(os.path.abspath(earlier))
        folder = earlier
    return folders


def newest_of_chains(run_dirs):
    """Leave out folders that another given folder resumed from: their curve is part of that one's."""
    covered = {folder for run_dir in run_dirs for folder in chain(run_dir)[1:]}
    return [run_dir for run_dir in run_dirs if os.path.abspath(run_dir) not in covered]


def overrides(run_dir):
    """The command-line overrides of a run, with its seed, without its name, paths and cadences."""
    path = os.path.join(run_dir, ".hydra", "overrides.yaml")
    try:
        given = yaml.safe_load(read_regular(path)) or []
    except (OSError, ValueError, yaml.YAMLError):  # a pipe is refused, not waited on
        given = []
    if not isinstance(given, list):  # a damaged file: a mapping or a bare word is not a list of overrides
        given = []
    return compact_overrides([str(item) for item in given], keep_seed=True)


def _name(run_dir):
    """The run's name from its summary, else its folder's name."""
    name = read_summary(run_dir).get("name")
    return name if isinstance(name, str) and name else os.path.basename(os.path.normpath(run_dir))


def distinguishing_labels(run_dirs):
    """One label per run: the overrides that are not shared by all runs (e.g. 'hyp=fbclip seed=1'), with the run
    name when the names differ; the name alone when nothing else does. Repeats get the job folder's name."""
    given = [overrides(run_dir) for run_dir in run_dirs]
    shared = set.intersection(*(set(items) for items in given)) if given else set()
    names = [_name(run_dir) for run_dir in run_dirs]
    labels = []
    for run_dir, items, name in zip(run_dirs, given, names):
        differing = [item for item in items if item not in shared]
        label = " ".join(differing)
        if len(set(names)) > 1 or not label:
            label = f"{name} {label}".strip()
        labels.append(label)
    return [label if labels.count(label) == 1 else f"{label} ({os.path.basename(os.path.normpath(run_dir))})"
            for label, run_dir in zip(labels, run_dirs)]
