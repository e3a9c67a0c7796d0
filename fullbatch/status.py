"""How the newest run below a folder ended, as an exit code a batch script can act on.

    python -m fullbatch.status outputs/<name>    # prints "<status> <run folder>"; exit 0, 3 or 4

torchrun reports a SIGTERM of its own with exit 1, whatever the workers did, so a SLURM script that requeues
preempted runs asks this instead: 4 when the newest run was preempted or never wrote its summary (killed during
start-up), 3 when it diverged, 0 when it finished, 2 when there is no run at all (or the folder is not one). A
damaged summary.json counts as no summary, with a warning naming it on stderr.
"""
import json
import os
import sys

from fullbatch.cli import OneLineParser
from fullbatch.files.run_json import read_json_object
from fullbatch.files.walk import find_folders

EXIT_CODES = dict(finished=0, stopped_at_full_training_accuracy=0, diverged=3, preempted=4, unfinished=4)


def _started(run):
    """When Hydra started `run` (its .hydra/ folder's time); 0 for one that vanished meanwhile."""
    try:
        return os.path.getmtime(os.path.join(run, ".hydra"))
    except OSError:
        return 0.0


def newest_run(folder):
    """The most recently started run folder below `folder` (one that Hydra gave a .hydra/), or None. A symlink
    loop below it is walked once."""
    runs = [os.path.dirname(path) for path in find_folders(folder, ".hydra")]
    return max(runs, key=_started, default=None)


def read_status(path):
    """The status recorded in the summary.json at `path`; raises ValueError naming what is wrong with it."""
    summary = read_json_object(path)
    status = summary.get("status", "unfinished")
    if not isinstance(status, str):
        raise ValueError(f"{path} records a status that is not a word: {json.dumps(status)[:60]}")
    return status


def run_status(run_folder):
    """The run's status; 'unfinished' when it wrote no summary (killed during start-up) or a damaged one (then
    with a warning on stderr): either way a batch script requeues it, as for a preempted run."""
    path = os.path.join(run_folder, "summary.json")
    if not os.path.lexists(path):
        return "unfinished"
    try:
        return read_status(path)
    except ValueError as error:
        print(f"fullbatch: warning: {error}; counted as unfinished", file=sys.stderr)
        return "unfinished"


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a run name's folder, e.g. outputs/fb_clip")
    folder = parser.parse_args(argv).folder
    if not os.path.isdir(folder):
        missing = "" if os.path.exists(folder) else " (it does not exist)"
        print(f"fullbatch: {folder} is not allowed: expected a folder of runs{missing}", file=sys.stderr)
        return 2
    run = newest_run(folder)
    if run is None:
        print(f"none {folder}")
        return 2
    status = run_status(run)
    print(f"{status} {run}")
    return EXIT_CODES.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
