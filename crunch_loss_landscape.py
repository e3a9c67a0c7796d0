"""Loss landscapes of saved models along filter-normalized random directions.

    python crunch_loss_landscape.py viz=1d checkpoints='[outputs/a/.../model.pt, outputs/b/.../model.pt]'
    python crunch_loss_landscape.py viz=2d viz.resolution=41 checkpoint=outputs/a/.../model.pt
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig

import fullbatch.config  # noqa: F401  (registers the schema; PyTorch is imported only once the config composes)
from fullbatch.cli import composition_error, hydra_full_error
from fullbatch.errors import ConfigError, DatasetUnavailable


def fail(message):
    print(f"fullbatch: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="config", config_name="crunch", version_base="1.3")
def main(cfg):
    from fullbatch.visualization.crunch import crunch

    try:
        hydra_cfg = HydraConfig.get()
        crunch(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
    except (ConfigError, DatasetUnavailable) as error:
        if hydra_full_error():
            raise
        fail(error)


if __name__ == "__main__":
    if not hydra_full_error() and (message := composition_error(sys.argv[1:], config_name="crunch")):
        fail(message)
    main()
