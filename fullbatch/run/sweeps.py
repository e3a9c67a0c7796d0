"""Hydra sweeps (-m) that go on past a failed job: each job's status is recorded where its results would be
(summary.json in its folder, a row in its table), and the entry script lists the failed jobs at the end."""
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

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

    def __bool__(self):
        return bool(self.jobs)

    @property
    def exit_code(self):
        return self.jobs[0][1] if self.jobs else 0

    def record(self, job, cfg, status, code, message, error=None):
        """Log the failure, write the job's summary.json and table row (best effort), and remember it."""
        if error is not None:
            log.error(f"{job.describe()} crashed", exc_info=error)
        else:
            log.error(f"{job.describe()}: {message}")
        self.jobs.append((job, code, status, message))
        if status == "diverged":  # the run itself wrote its summary and its row
            return
        summary = dict(status=status, error=message, name=cfg.name, overrides=job.overrides,
                       output_dir=os.path.abspath(job.output_dir))
        row = dict(run_key=_run_key(cfg, job), name=cfg.name, status=status,
                   error=message[:300], output_dir=summary["output_dir"])
        try:
            outputs.write_json(os.path.join(job.output_dir, "summary.json"), summary)
            outputs.record_table_row(outputs.table_path(str(cfg.tables), cfg.template, cfg.dryrun), row)
        except (OSError, ValueError) as write_error:
            log.error(f"Could not record the status of {job.describe()} ({write_error})")

    def report(self):
        for job, _, status, message in self.jobs:
            where = f" in {job.output_dir}" if job.output_dir else ""
            text = status if message == status else f"{status}: {message}"
            print(f"fullbatch: {job.describe()} {text}{where}", file=sys.stderr)
