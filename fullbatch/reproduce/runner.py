"""Runs the rows of a scale as ordinary training runs (fullbatch.train.run, the entry script's function), one
folder per row and seed, so that running the same command again skips what finished and resumes what was
stopped from its checkpoint. `run_job` is the one function every launcher calls: this process, a child process
of `--jobs N`, or a submitit job."""
import logging
import os
import shlex

from fullbatch.config.paths import compose_config
from fullbatch.errors import ConfigError
from fullbatch.reproduce.scales import ROWS, SCALES, row_overrides
from fullbatch.run.outputs import FINISHED
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


def ended(root, scale, row, seed):
    """The summary of this row and seed if its run ended, else None. A run folder that holds a run of another
    design of the scale (an earlier version's data size or lengths) is an error, not a result to reuse."""
    folder = run_folder(root, scale, row, seed)
    summary = read_summary(folder)
    if summary:
        recorded = summary.get("overrides")
        missing = [item for item in row_overrides(scale, row, seed)
                   if not isinstance(recorded, list) or item not in recorded]
        if missing:
            raise ConfigError(f"{folder} holds a run of another design of scale {scale.name} (it lacks "
                              f"{missing[0]}); move it away or give another --root")
    return summary if summary.get("status") in FINISHED + ("diverged",) else None


def pending_jobs(root, scale, rows, seeds):
    """[(row, seed)] of the runs that have not ended, in table order."""
    return [(row, seed) for row, seed in scale.jobs(rows, seeds) if not ended(root, scale, row, seed)]


def run_job(root, scale_name, row_name, seed, extra=()):
    """Train one row and seed unless it ended already; return its summary (status 'preempted' when a signal
    stopped it after a checkpoint). Takes names, not objects, so that it pickles for child processes."""
    from fullbatch.train import run

    scale, row = SCALES[scale_name], ROWS[row_name]
    overrides, folder = job_overrides(root, scale, row, seed, extra)
    summary = ended(root, scale, row, seed)
    if summary:
        return summary
    os.makedirs(folder, exist_ok=True)
    return run(compose_config(overrides), output_dir=folder, choices={"hyp": preset(row)}, overrides=overrides)


def run_rows(root, scale, rows, seeds=None, device="auto", extra=()):
    """Run every (row, seed) that has not ended, one after the other in this process; return 'preempted' if a
    signal stopped one, else 'done'."""
    jobs = scale.jobs(rows, seeds)
    for number, (row, seed) in enumerate(jobs, 1):
        folder = run_folder(root, scale, row, seed)
        if ended(root, scale, row, seed):
            log.info(f"[{number}/{len(jobs)}] {row.name} seed {seed}: already ended, kept")
            continue
        log.info(f"[{number}/{len(jobs)}] {row.name} seed {seed}: {folder}")
        summary = run_job(root, scale.name, row.name, seed, [f"impl.device={device}", *extra])
        if summary["status"] == "preempted":
            return "preempted"
    return "done"


def preset(row):
    return next(item.split("=", 1)[1] for item in row.overrides if item.startswith("hyp="))
