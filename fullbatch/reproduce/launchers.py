"""`--launcher slurm | local`: every row and seed as its own job through submitit (`pip install -e
".[cluster]"`), running the same `run_job` as the other paths, so a job that ended is skipped and a stopped one
continues from its checkpoint.

Preemption: SLURM (or the local executor, for tests) signals the job; the training finishes its step, writes
a checkpoint and returns 'preempted'; the job then hands over to submitit's own handler for that signal, which
calls `checkpoint()` and requeues it. The requeued job resumes from the checkpoint. A signal during start-up
goes straight to submitit's handler: nothing has run since the last checkpoint.
"""
import logging
import os
import signal
import time

import yaml

from fullbatch.errors import ConfigError
from fullbatch.reproduce.runner import pending_jobs, run_job

log = logging.getLogger("fullbatch")
SLURM_KEYS = {"partition": str, "time": int, "gpus": int, "cpus": int, "account": str}
PREEMPT_SIGNAL = signal.SIGUSR2  # submitit's default (its SUBMITIT_PREEMPT_SIGNAL)


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher needs submitit, an optional extra: pip install -e \".[cluster]\"") from None
    return submitit


class RowJob:
    """One row and seed as a submitit job: callable, and checkpointable by requeueing itself unchanged (the run
    folder's checkpoint is the state)."""

    def __init__(self, root, scale, row, seed, extra=()):
        self.root, self.scale, self.row, self.seed, self.extra = root, scale, row, seed, list(extra)

    def __call__(self):
        from fullbatch.interruption import Stopped
        from fullbatch.reproduce.runner import finished_summary, run_folder
        from fullbatch.reproduce.scales import ROWS, SCALES

        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
        try:
            summary = run_job(self.root, self.scale, self.row, self.seed, self.extra)
        except Stopped:  # a signal after the last step, while the outputs were written: they are complete
            summary = finished_summary(run_folder(self.root, SCALES[self.scale], ROWS[self.row], self.seed)) or {
                "status": "preempted"}
        if summary["status"] == "preempted":
            handler = signal.getsignal(PREEMPT_SIGNAL)  # submitit's, back in place after the training
            if callable(handler):
                handler(PREEMPT_SIGNAL, None)  # checkpoint() and requeue; it exits this process
        return summary["status"]

    def checkpoint(self, *args, **kwargs):
        submitit = import_submitit()
        return submitit.helpers.DelayedSubmission(RowJob(self.root, self.scale, self.row, self.seed, self.extra))

    def __repr__(self):
        return f"RowJob({self.scale}, {self.row}, seed {self.seed})"


def slurm_options(args):
    """Partition, time (minutes), GPUs and CPUs per job and account, from --slurm-config (YAML) and options; the
    options win."""
    options = {"time": 24 * 60, "gpus": 1, "cpus": 8}
    if args.slurm_config:
        try:
            with open(args.slurm_config) as handle:
                loaded = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"--slurm-config {args.slurm_config} cannot be read: {error}") from None
        if not isinstance(loaded, dict) or set(loaded) - set(SLURM_KEYS):
            raise ConfigError(f"--slurm-config {args.slurm_config}: expected a mapping with keys "
                              f"{', '.join(SLURM_KEYS)}")
        options.update(loaded)
    for key in SLURM_KEYS:
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    for key, kind in SLURM_KEYS.items():
        value = options.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is int and value < (key != "gpus"))):
            raise ConfigError(f"slurm {key}={value!r} is not allowed: expected {'a positive integer' if kind is int else 'a name'}")
    return options


def executor_for(launcher, folder, options, scale):
    submitit = import_submitit()
    executor = submitit.AutoExecutor(folder=folder, cluster=launcher)
    parameters = dict(name=f"fullbatch-{scale.name}", timeout_min=options["time"])
    if launcher == "slurm":
        parameters.update(gpus_per_node=options["gpus"], cpus_per_task=options["cpus"], tasks_per_node=1,
                          slurm_signal_delay_s=120)
        parameters.update({f"slurm_{key}": options[key] for key in ("partition", "account") if options.get(key)})
    executor.update_parameters(**parameters)
    return executor


def submit_rows(launcher, root, scale, rows, seeds, options, jobs=1, device="auto", extra=(), wait=None):
    """Submit every (row, seed) that has not ended. slurm: all at once, as a job array; returns the jobs.
    local: `jobs` at a time on this machine's slots, waiting for all (`wait(job)` is called once per submitted
    job, for tests); returns the jobs."""
    from fullbatch.reproduce.parallel import child_overrides, slots

    todo = pending_jobs(root, scale, rows, seeds)
    executor = executor_for(launcher, os.path.join(root, "outputs", "reproduce", scale.name, "submitit"), options,
                            scale)
    if launcher == "slurm":
        with executor.batch():
            submitted = [executor.submit(RowJob(root, scale.name, row.name, seed, extra)) for row, seed in todo]
        for job, (row, seed) in zip(submitted, todo):
            log.info(f"{row.name} seed {seed}: SLURM job {job.job_id}")
        return submitted
    free, running, submitted = slots(device, jobs), {}, []
    while todo or running:
        while todo and free:
            row, seed = todo.pop(0)
            slot = free.pop(0)
            job = executor.submit(RowJob(root, scale.name, row.name, seed, child_overrides(slot, extra)))
            log.info(f"{row.name} seed {seed}: local job {job.job_id} ({' '.join(slot)})")
            running[job] = slot
            submitted.append(job)
            if wait:
                wait(job)
        for job in [job for job in running if job.done()]:
            free.append(running.pop(job))
        time.sleep(0.2)
    return submitted
