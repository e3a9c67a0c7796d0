"""How the newest run below a folder ended, as an exit code a batch script can act on.

    python -m fullbatch.status outputs/<name>    # prints "<status> <run folder>"; exit 0, 3 or 4

torchrun reports a SIGTERM of its own with exit 1, whatever the workers did, so a SLURM script that requeues
preempted runs asks this instead: 4 when the newest run was preempted or never wrote its summary (killed during
start-up), 3 when it diverged, 0 when it finished, 2 when there is no run at all.
"""
import argparse
import glob
import json
import os
import sys

EXIT_CODES = dict(finished=0, stopped_at_full_training_accuracy=0, diverged=3, preempted=4, unfinished=4)


def newest_run(folder):
    """The most recently started run folder below `folder` (one that Hydra gave a .hydra/), or None."""
    runs = [os.path.dirname(path) for path in glob.glob(os.path.join(glob.escape(folder), "**", ".hydra"),
                                                         recursive=True)]
    return max(runs, key=lambda run: os.path.getmtime(os.path.join(run, ".hydra")), default=None)


def run_status(run_folder):
    try:
        with open(os.path.join(run_folder, "summary.json")) as handle:
            return json.load(handle).get("status", "unfinished")
    except (OSError, ValueError):
        return "unfinished"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a run name's folder, e.g. outputs/fb_clip")
    folder = parser.parse_args(argv).folder
    run = newest_run(folder)
    if run is None:
        print(f"none {folder}")
        return 2
    status = run_status(run)
    print(f"{status} {run}")
    return EXIT_CODES.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
