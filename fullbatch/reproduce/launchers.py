"""`--launcher slurm | local`: every row and seed as its own job through submitit (`pip install -e
".[cluster]"`), running the same `run_job` as the other paths, so a job that ended is skipped and a stopped one
continues from its checkpoint.

Requeue: submitit's signal (USR2: SLURM sends it before the time limit, and submitit treats it as preemption)
reaches the training, which finishes its step, writes a checkpoint and returns 'preempted'; the job then hands
over to submitit's own handler for that signal, which calls `checkpoint()` and requeues it, and the requeued
job resumes from the checkpoint. The signal during start-up goes straight to submitit's handler (nothing has
run since the last checkpoint). SIGTERM (`scancel`) stops the job after a checkpoint without a requeue: run the
command again to submit what has not ended.
"""
import logging
import os
import time

import yaml

from fullbatch.errors import ConfigError, last_line
from fullbatch.reproduce.runner import pending_jobs, run_job
from fullbatch.run.interruption import PREEMPT_SIGNAL

log = logging.getLogger("fullbatch")
SLURM_KEYS = {"partition": str, "time": int, "gpus": int, "cpus": int, "account": str}
MAX_REQUEUES = 50  # time-limit requeues of one job before submitit gives up on it


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
        from fullbatch.run.interruption import Stopped, hand_over_preemption, signals_held

        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
        log.info(f"{self!r} started in process {os.getpid()}")
        with signals_held():  # PyTorch's import; submitit's handler gets a signal once it has finished
            import fullbatch.train  # noqa: F401
        try:
            summary = run_job(self.root, self.scale, self.row, self.seed, self.extra)
        except Stopped:  # a second signal, or one while the outputs were written: the checkpoints stay
            summary = {"status": "preempted", "stopped_by": None}
        if not hand_over_preemption(summary) and summary.get("stopped_by") == PREEMPT_SIGNAL.name:
            raise RuntimeError(f"{self!r} was preempted but submitit's {PREEMPT_SIGNAL.name} handler is missing")
        return summary["status"]

    def checkpoint(self, *args, **kwargs):
        submitit = import_submitit()
        return submitit.helpers.DelayedSubmission(RowJob(self.root, self.scale, self.row, self.seed, self.extra))

    def __repr__(self):
        return f"RowJob({self.scale}, {self.row}, seed {self.seed})"


def _checked(key, value):
    kind = SLURM_KEYS[key]
    if key == "account" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a numeric account name
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "gpus" else 1):
            raise ConfigError(f"slurm {key}={value!r} is not allowed: expected an integer >= "
                              f"{0 if key == 'gpus' else 1}")
    elif not isinstance(value, str) or not value.strip():
        raise ConfigError(f"slurm {key}={value!r} is not allowed: expected a name")
    return value


def slurm_options(args):
    """Partition, time (minutes), GPUs and CPUs per job and account, from --slurm-config (YAML) and options; the
    options win."""
    options = {"time": 24 * 60, "gpus": 1, "cpus": 8}
    if args.slurm_config:
        try:
            with open(args.slurm_config) as handle:
                loaded = yaml.safe_load(handle) or {}
        except (OSError, ValueError, yaml.YAMLError) as error:
            raise ConfigError(f"--slurm-config {args.slurm_config} cannot be read: {error}") from None
        if not isinstance(loaded, dict) or set(loaded) - set(SLURM_KEYS):
            raise ConfigError(f"--slurm-config {args.slurm_config}: expected a mapping with keys "
                              f"{', '.join(SLURM_KEYS)}")
        options.update(loaded)
    for key in SLURM_KEYS:
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    return {key: _checked(key, value) for key, value in options.items() if value is not None}


def executor_for(launcher, folder, options, scale):
    """submitit's SLURM executor (through AutoExecutor, which names its SLURM keys), or its local one (which
    alone can make one GPU visible to each job)."""
    submitit = import_submitit()
    if launcher == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(timeout_min=options["time"])
        return executor
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_REQUEUES)
    except RuntimeError as error:  # no srun: not a SLURM machine
        raise ConfigError(f"--launcher slurm is not allowed here: {error}") from None
    parameters = dict(name=f"fullbatch-{scale.name}", timeout_min=options["time"], cpus_per_task=options["cpus"],
                      tasks_per_node=1, slurm_signal_delay_s=120)
    if options["gpus"]:
        parameters["gpus_per_node"] = options["gpus"]
    parameters.update({f"slurm_{key}": options[key] for key in ("partition", "account") if options.get(key)})
    executor.update_parameters(**parameters)
    return executor


def submit_slurm(root, scale, rows, seeds, options, extra=()):
    """Submit every (row, seed) that has not ended as one SLURM job array; return the jobs."""
    todo = pending_jobs(root, scale, rows, seeds)
    executor = executor_for("slurm", submitit_folder(root, scale), options, scale)
    try:
        with executor.batch():
            submitted = [executor.submit(RowJob(root, scale.name, row.name, seed, extra)) for row, seed in todo]
    except Exception as error:  # sbatch missing or refusing: its own words, in one line
        raise ConfigError(f"SLURM refused the jobs: {last_line(error) or repr(error)}") from None
    for job, (row, seed) in zip(submitted, todo):
        log.info(f"{row.name} seed {seed}: SLURM job {job.job_id}")
    return submitted


def submitit_folder(root, scale):
    return os.path.join(root, "outputs", "reproduce", scale.name, "submitit")


def run_local(root, scale, rows, seeds, options, jobs=1, device="auto", extra=(), wait=None):
    """The same jobs with submitit's local executor, `jobs` at a time on this machine's slots (one CPU thread,
    or one GPU made visible to the job alone); waits for all. Stop signals go to the running jobs, which
    checkpoint and stop. Returns (jobs submitted, whether a stop signal came). `wait(job)` is called once per
    submitted job, for tests."""
    from fullbatch.reproduce.parallel import _Forwarder, child_overrides, slots

    todo = pending_jobs(root, scale, rows, seeds)
    executor = executor_for("local", submitit_folder(root, scale), options, scale)
    free, running, submitted = slots(device, jobs), {}, []
    with _Forwarder() as forwarder:
        while (todo and not forwarder.received) or running:
            while todo and free and not forwarder.received:
                row, seed = todo.pop(0)
                slot = original = free.pop(0)
                device_slot = next((item.split("=", 1)[1] for item in slot if item.startswith("impl.device=")), "")
                if device_slot.startswith("cuda:"):  # the job sees its one GPU as cuda:0
                    executor.update_parameters(gpus_per_node=1, visible_gpus=(int(device_slot[5:]),))
                    slot = ["impl.device=cuda:0"]
                job = executor.submit(RowJob(root, scale.name, row.name, seed, child_overrides(slot, extra)))
                log.info(f"{row.name} seed {seed}: local job {job.job_id} ({' '.join(slot)})")
                running[job] = original
                forwarder.children.append(job._process)
                submitted.append(job)
                if wait:
                    wait(job)
            for job in [job for job in running if job.done()]:
                free.append(running.pop(job))
                forwarder.children.remove(job._process)
            time.sleep(0.2)
    return submitted, bool(forwarder.received)
