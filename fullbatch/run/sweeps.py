"""Hydra sweeps (-m) that go on past a failed job: each job's status is recorded where its results would be
(summary.json in its folder, a row in its table), and the entry script lists the failed jobs at the end, also
those that ran in other processes (a launcher plugin such as submitit). Each job returns its objective, so that
a sweeper plugin (optuna) can optimise it."""
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

from hydra.experimental.callback import Callback

from fullbatch.files.run_json import DamagedRunFile, read_json_object
from fullbatch.run import outputs

log = logging.getLogger("fullbatch")


@dataclass
class JobContext:
    multirun: bool = False
    number: Optional[int] = None
    overrides: List[str] = field(default_factory=list)
    output_dir: Optional[str] = None
    job_log: Optional[str] = None  # Hydra's log file of the job, in its output folder

    def describe(self):
        return f"job {self.number} ({' '.join(self.overrides) or 'no overrides'})"


def job_context():
    """Where the current Hydra job runs and whether it is one job of a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return JobContext()
    hydra_cfg = HydraConfig.get()
    return JobContext(hydra_cfg.mode == RunMode.MULTIRUN, hydra_cfg.job.get("num"), list(hydra_cfg.overrides.task),
                      hydra_cfg.runtime.output_dir, f"{hydra_cfg.job.name}.log")


def _run_key(cfg, job):
    """The key its table row would have had had it run: a successful rerun replaces this row."""
    from fullbatch.run.runtime import config_hash

    try:
        return f"{cfg.name}/{config_hash(cfg)}"
    except Exception:  # a value bad enough to break hashing: the overrides still name the job
        return f"{cfg.name}/{' '.join(sorted(job.overrides))}"


class FailedJobs:
    """The failed jobs of this process's sweep, in order; the first one's exit code is the sweep's."""

    def __init__(self):
        self.jobs = []
        self.launcher = None  # the sweep's launcher class, once a sweep has started

    @property
    def jobs_run_elsewhere(self):
        """Whether a launcher plugin runs the sweep's jobs in other processes (submitit), not Hydra's own."""
        return bool(self.launcher) and not self.launcher.startswith("hydra._internal.core_plugins.basic_launcher")

    def stop_message(self, stop):
        """What a stop signal to this process means: for a sweep whose jobs run elsewhere, only this process
        stopped waiting; its jobs go on under their scheduler, and running the command again would submit them
        again."""
        if not self.jobs_run_elsewhere:
            return str(stop)
        return (f"{str(stop).split()[0]}: stopped waiting for the sweep; its jobs go on under their scheduler "
                "(cancel them there); their results land in their folders and tables as usual")

    def __bool__(self):
        return bool(self.jobs)

    @property
    def exit_code(self):
        return self.jobs[0][1] if self.jobs else 0

    def recorded(self, output_dir):
        return any(job.output_dir and os.path.abspath(job.output_dir) == os.path.abspath(output_dir)
                   for job, *_ in self.jobs)

    def record(self, job, cfg, status, code, message, error=None):
        """Log the failure, write the job's summary.json and table row (best effort), and remember it. Returns
        what the job gives a sweeper (`failed_objective`)."""
        if error is not None:
            log.error(f"{job.describe()} crashed", exc_info=error)
        else:
            log.error(f"{job.describe()}: {message}")
        self.jobs.append((job, code, status, message))
        if status == "diverged":  # the run itself wrote its summary and its row
            return failed_objective()
        summary = dict(status=status, error=message, name=cfg.name, overrides=job.overrides,
                       output_dir=os.path.abspath(job.output_dir))
        row = dict(run_key=_run_key(cfg, job), name=cfg.name, status=status,
                   error=message[:300], output_dir=summary["output_dir"])
        try:
            outputs.write_json(os.path.join(job.output_dir, "summary.json"), summary)
            outputs.record_table_row(outputs.table_path(str(cfg.tables), cfg.template, cfg.dryrun), row)
        except (OSError, ValueError) as write_error:
            log.error(f"Could not record the status of {job.describe()} ({write_error})")
        return failed_objective()

    def report(self):
        for job, _, status, message in self.jobs:
            where = f" in {job.output_dir}" if job.output_dir else ""
            text = status if message == status else f"{status}: {message}"
            print(f"fullbatch: {job.describe()} {text}{where}", file=sys.stderr)


FAILED = FailedJobs()  # this process's failed sweep jobs; the entry script reports them when the sweep ends


def in_submitit_job():
    """Whether this process runs a job of a submitit launcher (Hydra's, or `reproduce --launcher`)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def failed_objective():
    """What a job that did not finish returns to a sweeper: the worst value for the sweeper's direction (-inf
    when it maximises, +inf when it minimises), so that optuna ranks it last and goes on (it refuses NaN and
    would end the sweep); NaN for sweepers without a direction. The sweep's exit code still counts the job."""
    from hydra.core.hydra_config import HydraConfig

    direction = HydraConfig.get().sweeper.get("direction") if HydraConfig.initialized() else None
    direction = str(direction).lower()
    return -math.inf if direction.endswith("maximize") else math.inf if direction.endswith("minimize") else math.nan


def objective_value(summary, objective):
    """What a job returns to Hydra: the summary's `objective` entry (the final validation accuracy by default)
    for a run that trained to its end, else `failed_objective()`."""
    value = summary.get(str(objective)) if summary.get("status") in outputs.FINISHED else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return failed_objective()


class SweepOutcome(Callback):
    """At the end of a sweep, in the process that launched it: adds to FAILED every job of the sweep folder whose
    summary records a failure. Jobs that a launcher plugin ran in other processes (submitit) recorded their
    failure there, where this process's FAILED never sees it; without this a sweep whose jobs all failed would
    end with exit code 0. Only summaries written since the sweep started count: a reused sweep folder may hold
    an older sweep's."""

    def __init__(self):
        self.started = None

    def on_multirun_start(self, config, **kwargs):
        self.started = time.time()
        FAILED.launcher = str(config.hydra.launcher.get("_target_", ""))

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = str(config.hydra.sweep.dir)
        if not os.path.isdir(sweep_dir):
            return
        for name in sorted(os.listdir(sweep_dir), key=lambda entry: (len(entry), entry)):
            folder = os.path.join(sweep_dir, name)
            path = os.path.join(folder, "summary.json")
            if not os.path.lexists(path) or FAILED.recorded(folder) or _older(path, self.started):
                continue
            try:
                summary = read_json_object(path)
            except DamagedRunFile as damaged:
                log.error(f"job {name}: {damaged}")
                continue
            status = summary.get("status")
            if status not in outputs.FINISHED and status in outputs.STATUS_EXIT_CODES:
                job = JobContext(True, name, list(summary.get("overrides") or []), folder)
                message = str(summary.get("error") or status)
                FAILED.jobs.append((job, outputs.STATUS_EXIT_CODES[status], status, message))


def _older(path, started):
    try:
        return started is not None and os.lstat(path).st_mtime < started - 1  # 1 s: coarse file system clocks
    except OSError:
        return True
