"""Train an image classifier with full-batch gradient descent or the SGD baseline.

    python train_with_gradient_descent.py name=fb_clip hyp=fbclip
    python train_with_gradient_descent.py -m hyp=fb1,fbclip seed=0,1,2

Exit codes: 0 finished, 2 configuration or data error (one line on stderr), 3 diverged, 4 stopped by
SIGTERM/SIGINT after writing a checkpoint (run the same command again to continue).
"""
import sys

import hydra

import fullbatch.config  # noqa: F401  (registers the schema; PyTorch is imported only once the config composes)
from fullbatch.cli import composition_error, hydra_full_error
from fullbatch.errors import ConfigError, DatasetUnavailable

EXIT_CONFIG_ERROR, EXIT_DIVERGED, EXIT_PREEMPTED = 2, 3, 4


def fail(message):
    print(f"fullbatch: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


@hydra.main(config_path="config", config_name="train", version_base="1.3")
def main(cfg):
    from fullbatch.train import run

    try:
        summary = run(cfg)
    except (ConfigError, DatasetUnavailable) as error:
        if hydra_full_error():
            raise
        fail(error)
    if summary["status"] == "diverged":
        sys.exit(EXIT_DIVERGED)
    if summary["status"] == "preempted":
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    if not hydra_full_error() and (message := composition_error(sys.argv[1:])):
        fail(message)
    main()
