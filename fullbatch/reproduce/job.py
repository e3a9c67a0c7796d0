"""python -m fullbatch.reproduce.job '<json>': one row and seed of a scale in its own process (`--jobs N`).

The argument is {"root", "scale", "row", "seed", "extra"}; the exit codes are the entry script's: 0 ended
(finished or diverged: the summary says which), 2 configuration or data error, 4 stopped by a signal after a
checkpoint (run it again to continue).
"""
import json
import logging
import sys

from fullbatch.interruption import Stopped, signals_held, stop_at_once_on_signals


def main(argv=None):
    stop_at_once_on_signals()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    job = json.loads((argv if argv is not None else sys.argv[1:])[0])
    try:
        with signals_held():  # PyTorch's import: a signal is delivered when it has finished
            from fullbatch.errors import ConfigError, DatasetUnavailable
            from fullbatch.reproduce.runner import run_job
            import fullbatch.train  # noqa: F401
        try:
            summary = run_job(job["root"], job["scale"], job["row"], job["seed"], job["extra"])
        except (ConfigError, DatasetUnavailable) as error:
            print(f"fullbatch: {error}", file=sys.stderr)
            return 2
    except Stopped as stop:
        print(f"fullbatch: {stop}", file=sys.stderr)
        return 4
    return 4 if summary["status"] == "preempted" else 0


if __name__ == "__main__":
    sys.exit(main())
