"""One-line start-up errors for the entry script, also for mistakes that Hydra itself finds while composing.

Before a single (non-sweep) run starts, the command-line overrides are composed once with Hydra's compose API;
a misspelt key, a wrong type or an unknown option then ends the run with one line naming it. Sweeps and Hydra's
own flags (-m, --cfg, --help, ...) go to Hydra unchanged.
"""
import os

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from fullbatch.files import unwritable
from fullbatch.paths import compose_config


def one_line(error):
    """The gist of a Hydra or OmegaConf error: its first line, the cause's first line, and any options listed."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if error.__cause__ is not None and str(error.__cause__).strip():
        message = f"{message.rstrip('.')}: {str(error.__cause__).strip().splitlines()[0]}"
    if "Available options in" in text:
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options in"))
        options = [line for line in lines[start + 1:] if not line.startswith("Config search path")]
        options = options[: next((i for i, line in enumerate(options) if line.startswith("provider=")), len(options))]
        message += f"; available: {', '.join(o for o in options if not o.startswith('_'))}"
    return message


def composition_error(arguments, config_name="train"):
    """The one-line error of composing `arguments` (the overrides of a single run), or None if they compose."""
    if any(argument.startswith("-") for argument in arguments):
        return None
    try:
        cfg = compose_config(arguments, config_name, return_hydra_config=True)
        run_dir = cfg.hydra.run.dir
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        return one_line(error)
    problem = unwritable(run_dir)
    return f"hydra.run.dir={run_dir!r} is not allowed: {problem}" if problem else None


def hydra_full_error():
    return os.environ.get("HYDRA_FULL_ERROR") == "1"
