"""Loss landscapes of saved models along filter-normalized random directions.

    python crunch_loss_landscape.py viz=1d checkpoints='[outputs/a/.../model.pt, outputs/b/.../model.pt]'
    python crunch_loss_landscape.py viz=2d viz.resolution=41 checkpoint=outputs/a/.../model.pt

Exit codes: 0 done, 2 a bad setting, checkpoint or run file (one line on stderr, before any work; checkpoints
are read without running code from them).
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig

import fullbatch.config.schema  # noqa: F401  (registers the schema; PyTorch is imported only once the config composes)
from fullbatch.cli import check_arguments, hydra_full_error
from fullbatch.errors import ConfigError, DatasetUnavailable, ExitCode
from fullbatch.run.folder import FolderSnapshot, undo_start_up
from fullbatch.run.sweeps import job_context

BEFORE = None  # the run folder as it was before Hydra wrote into it (single runs)


def fail(message):
    print(f"fullbatch: {message}", file=sys.stderr)
    sys.exit(ExitCode.BAD_INPUT)


@hydra.main(config_path="config", config_name="crunch", version_base="1.3")
def main(cfg):
    from fullbatch.visualization.crunch import crunch

    try:
        hydra_cfg = HydraConfig.get()
        crunch(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
    except (ConfigError, DatasetUnavailable) as error:
        if hydra_full_error():
            raise
        job = job_context()
        if not job.multirun:
            undo_start_up(BEFORE, job.output_dir, job.job_log)  # a refused input leaves no folder behind
        fail(error)


if __name__ == "__main__":
    if not hydra_full_error():
        message, run_dir = check_arguments(sys.argv[1:], config_name="crunch")
        if message:
            fail(message)
        BEFORE = FolderSnapshot(run_dir) if run_dir else None
    main()
