"""Train an image classifier with full-batch gradient descent or the SGD baseline.

    python train_with_gradient_descent.py name=fb_clip hyp=fbclip
    python train_with_gradient_descent.py -m hyp=fb1,fbclip seed=0,1,2

Exit codes: 0 finished, 1 crashed, 2 configuration or data error (one line on stderr), 3 diverged, 4 stopped by
SIGTERM/SIGINT (run the same command again to continue from the last checkpoint). A sweep (-m) records each
job's status and goes on past a failed job; at the end it prints one line per failed job and exits with the
code of the first one, also when a launcher plugin (hydra/launcher=submitit_slurm) ran the jobs elsewhere. Each
job returns its `objective` (final validation accuracy by default; the worst value for the sweeper's direction if
it did not finish) to a sweeper plugin such as hydra/sweeper=optuna. Inside a submitit job, a preemption (SIGUSR2) ends with a checkpoint and submitit's
requeue; the requeued job continues from the checkpoint.
"""
import sys

from fullbatch.run.interruption import (Stopped, hand_over_preemption, ignore_signals, signals_held,
                                        stop_at_once_on_signals)

stop_at_once_on_signals()  # before the slow imports: a SIGTERM at any point of start-up ends with exit 4

import hydra  # noqa: E402

import fullbatch.config.schema  # noqa: F401,E402  (registers the schema; PyTorch is imported once the config composes)
from fullbatch.cli import check_arguments, hydra_full_error  # noqa: E402
from fullbatch.errors import ConfigError, DatasetUnavailable, ExitCode  # noqa: E402
from fullbatch.run.folder import FolderSnapshot, undo_start_up  # noqa: E402
from fullbatch.run.sweeps import FAILED, failed_objective, in_submitit_job, job_context, objective_value  # noqa: E402

EXIT_CRASHED, EXIT_CONFIG_ERROR, EXIT_DIVERGED, EXIT_PREEMPTED = (ExitCode.FAILED, ExitCode.BAD_INPUT,
                                                                   ExitCode.DIVERGED, ExitCode.STOPPED)
BEFORE = None  # the run folder as it was before Hydra wrote into it (single runs)


def fail(message, code=EXIT_CONFIG_ERROR):
    print(f"fullbatch: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path="config", config_name="train", version_base="1.3")
def main(cfg):
    with signals_held():  # PyTorch's import: a signal is delivered when it has finished
        from fullbatch.train import run

    job = job_context()
    try:
        summary = run(cfg)
    except (ConfigError, DatasetUnavailable) as error:
        if hydra_full_error():
            raise
        if not job.multirun:
            undo_start_up(BEFORE, job.output_dir, job.job_log)
            fail(error)
        return FAILED.record(job, cfg, "config_error", EXIT_CONFIG_ERROR, str(error))
    except Exception as error:
        if not job.multirun:
            raise
        return FAILED.record(job, cfg, "crashed", EXIT_CRASHED, f"{type(error).__name__}: {error}", error)
    if summary["status"] == "preempted":
        hand_over_preemption(summary)  # inside a submitit job: requeued from the checkpoint (this process exits)
        if in_submitit_job():  # not requeued (scancel's SIGTERM): the launching process reports it, exit 4
            return failed_objective()
        ignore_signals()
        FAILED.report()
        sys.exit(EXIT_PREEMPTED)  # also ends a sweep: the node is going away; the requeue continues it
    if summary["status"] == "diverged":
        if not job.multirun:
            sys.exit(EXIT_DIVERGED)
        return FAILED.record(job, cfg, "diverged", EXIT_DIVERGED, "diverged")
    return objective_value(summary, cfg.objective)


if __name__ == "__main__":
    try:
        if not hydra_full_error():
            message, run_dir = check_arguments(sys.argv[1:])
            if message:
                fail(message)
            BEFORE = FolderSnapshot(run_dir) if run_dir else None
        main()
    except Stopped as stop:
        ignore_signals()
        FAILED.report()
        fail(FAILED.stop_message(stop), EXIT_PREEMPTED)
    if FAILED:
        ignore_signals()
        FAILED.report()
        sys.exit(FAILED.exit_code)
