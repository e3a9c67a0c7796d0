"""What figures need to know about run folders: their metrics joined across resumes, and labels that say how
the runs differ from each other."""
import json
import os

import yaml

from fullbatch.outputs import compact_overrides


def read_metrics(run_dir):
    """The rows of metrics.jsonl, as one increasing sequence of steps: a run resumed in its own folder repeats
    the steps after its checkpoint, and the later rows are the ones that count. A line cut short by a kill or
    a full disk is skipped."""
    rows = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                while rows and rows[-1]["step"] >= row["step"]:
                    rows.pop()
                rows.append(row)
    return rows


def read_summary(run_dir):
    try:
        with open(os.path.join(run_dir, "summary.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def resumed_from_dir(run_dir):
    """The run folder whose checkpoint this run continued from, or None."""
    checkpoint = read_summary(run_dir).get("resumed_from")
    if not checkpoint:
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
        with open(path) as handle:
            given = yaml.safe_load(handle) or []
    except (OSError, yaml.YAMLError):
        given = []
    return compact_overrides(given, keep_seed=True)


def distinguishing_labels(run_dirs):
    """One label per run: the overrides that are not shared by all runs (e.g. 'hyp=fbclip seed=1'), with the run
    name when the names differ; the name alone when nothing else does. Repeats get the job folder's name."""
    given = [overrides(run_dir) for run_dir in run_dirs]
    shared = set.intersection(*(set(items) for items in given)) if given else set()
    names = [read_summary(run_dir).get("name") or os.path.basename(os.path.normpath(run_dir)) for run_dir in run_dirs]
    labels = []
    for run_dir, items, name in zip(run_dirs, given, names):
        differing = [item for item in items if item not in shared]
        label = " ".join(differing)
        if len(set(names)) > 1 or not label:
            label = f"{name} {label}".strip()
        labels.append(label)
    return [label if labels.count(label) == 1 else f"{label} ({os.path.basename(os.path.normpath(run_dir))})"
            for label, run_dir in zip(labels, run_dirs)]
