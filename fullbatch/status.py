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
from fullbatch.errors import ExitCode, report
from fullbatch.files.run_json import read_json_object
from fullbatch.files.walk import find_folders
from fullbatch.run.outputs import STATUS_EXIT_CODES



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
        return report(f"{folder} is not allowed: expected a folder of runs{missing}", ExitCode.BAD_INPUT)
    run = newest_run(folder)
    if run is None:
        print(f"none {folder}")
        return ExitCode.BAD_INPUT
    status = run_status(run)
    print(f"{status} {run}")
    return STATUS_EXIT_CODES.get(status, ExitCode.FAILED)


if __name__ == "__main__":
    sys.exit(main())
