"""Runs the rows of a scale as ordinary training runs (fullbatch.train.run, the entry script's function), one
folder per row and seed, so that running the same command again skips what finished and resumes what was
stopped from its checkpoint."""
import logging
import os
import shlex

from fullbatch.paths import compose_config
from fullbatch.reproduce.scales import row_overrides
from fullbatch.results import FINISHED
from fullbatch.visualization.runs import read_summary

log = logging.getLogger("fullbatch")


def run_folder(root, scale, row, seed):
    return os.path.join(root, "outputs", "reproduce", scale.name, row.name, f"seed{seed}")


def tables_folder(root, scale):
    return os.path.join(root, "outputs", "reproduce", scale.name, "tables")


def job_overrides(root, scale, row, seed, extra=()):
    """Everything the run needs, including where its outputs go: the same for `--list` and for running."""
    folder = run_folder(root, scale, row, seed)
    return [*row_overrides(scale, row, seed), f"name=repro-{scale.name}-{row.name}",
            f"tables={tables_folder(root, scale)}", f"impl.checkpoint.search_dir={folder}", *extra], folder


def command_line(root, scale, row, seed, extra=()):
    """The entry-script command of a row: what a cluster user submits as a job instead."""
    overrides, folder = job_overrides(root, scale, row, seed, extra)
    return shlex.join(["python", "train_with_gradient_descent.py", *overrides, f"hydra.run.dir={folder}"])


def finished_summary(folder):
    """The summary of a run that ended (finished or diverged: running it again would give the same), else None."""
    summary = read_summary(folder)
    return summary if summary.get("status") in FINISHED + ("diverged",) else None


def run_rows(root, scale, rows, seeds, device="auto", extra=()):
    """Run every (row, seed) that has not ended yet; return 'preempted' if a signal stopped one, else 'done'."""
    from fullbatch.train import run

    jobs = [(row, seed) for row in rows for seed in range(seeds)]
    for number, (row, seed) in enumerate(jobs, 1):
        overrides, folder = job_overrides(root, scale, row, seed, [f"impl.device={device}", *extra])
        if finished_summary(folder):
            log.info(f"[{number}/{len(jobs)}] {row.name} seed {seed}: already ended, kept")
            continue
        log.info(f"[{number}/{len(jobs)}] {row.name} seed {seed}: {folder}")
        os.makedirs(folder, exist_ok=True)
        summary = run(compose_config(overrides), output_dir=folder, choices={"hyp": _preset(row)},
                      overrides=overrides)
        if summary["status"] == "preempted":
            return "preempted"
    return "done"


def _preset(row):
    return next(item.split("=", 1)[1] for item in row.overrides if item.startswith("hyp="))
