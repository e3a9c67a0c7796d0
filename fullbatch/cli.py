"""The command line: one-line start-up errors for the entry scripts (also for mistakes that Hydra itself finds
while composing) and the argument parser of the package's tools.

Before a single (non-sweep) run starts, the command-line overrides are composed once with Hydra's compose API;
a misspelt key, a wrong type or an unknown option then ends the run with one line naming it. Sweeps and Hydra's
own flags (-m, --cfg, --help, ...) go to Hydra unchanged.
"""
import argparse
import difflib
import os
import re

from fullbatch.config.paths import compose_config, config_dir
from fullbatch.errors import ExitCode, first_line, report
from fullbatch.files.atomic import overlong_part, unsafe_folder, unwritable


def composition_errors():
    """What composing a config raises for a user's mistake. Imported here, so that the tools that only parse
    arguments (status, results) start without loading Hydra."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return HydraException, OmegaConfBaseException, ValueError


def config_keys(cfg, prefix=""):
    """Every leaf key of a config, dotted ('hyp.optim.lr')."""
    from omegaconf import DictConfig

    keys = []
    for key in cfg.keys():
        value = cfg._get_node(key)
        dotted = f"{prefix}{key}"
        keys += config_keys(value, dotted + ".") if isinstance(value, DictConfig) else [dotted]
    return keys


def close_keys(wrong, config_name="train"):
    """Keys of the default config that the misspelt `wrong` probably meant: same last part, else similar."""
    try:
        known = config_keys(compose_config([], config_name))
    except composition_errors():
        return []
    last = wrong.split(".")[-1]
    same_name = [key for key in known if key.split(".")[-1] == last]
    if same_name:
        return same_name[:3]
    ratio = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()  # noqa: E731
    scored = [(ratio(last, key.split(".")[-1]), ratio(wrong, key), key) for key in known]
    return [key for name_score, _, key in sorted(scored, reverse=True) if name_score >= 0.75][:2]


def one_line(error, config_name="train"):
    """The gist of a Hydra or OmegaConf error: its first line, the cause's first line, any options listed, and
    for an unknown key the keys it probably meant."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = first_line(text) or type(error).__name__
    if error.__cause__ is not None and str(error.__cause__).strip():
        message = f"{message.rstrip('.')}: {first_line(error.__cause__)}"
    if "Available options in" in text:
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options in"))
        options = [line for line in lines[start + 1:] if not line.startswith("Config search path")]
        options = options[: next((i for i, line in enumerate(options) if line.startswith("provider=")), len(options))]
        message += f"; available: {', '.join(o for o in options if not o.startswith('_'))}"
    unknown = re.search(r"Key '[^']+' not in '\w+'\s+full_key: (\S+)", f"{text}\n{error.__cause__ or ''}")
    if unknown and (suggestions := close_keys(unknown.group(1), config_name)):
        message += f"; did you mean {' or '.join(suggestions)}?"
    return message


def added_key_error(arguments, config_name="train"):
    """The one-line error for a `+key=value` that adds a key the schema does not have, or None. Hydra accepts
    such additions silently, and nothing ever reads them: a misspelt `+hyp.optim.lrr=0.1` would train with the
    default lr. Config groups (`+logger=wandb`) and Hydra's own keys are left to Hydra."""
    additions = [argument.lstrip("+").split("=", 1)[0] for argument in arguments if argument.startswith("+")]
    additions = [key for key in additions if not key.startswith("hydra") and "/" not in key and "@" not in key
                 and not os.path.isdir(os.path.join(config_dir(), key))]
    if not additions:
        return None
    try:
        known = config_keys(compose_config([], config_name))
    except composition_errors():
        return None
    for key in additions:
        if key not in known and not any(name.startswith(key + ".") for name in known):
            suggestions = close_keys(key, config_name)
            hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
            return f"+{key} is not allowed: {key} is not a key of the config, and keys cannot be added{hint}"
    return None


PLUGIN_GROUPS = ("hydra/launcher", "hydra/sweeper")
PLUGIN_EXTRAS = {"submitit_local": "hydra-submitit-launcher", "submitit_slurm": "hydra-submitit-launcher",
                 "optuna": "hydra-optuna-sweeper"}  # the project's cluster extra installs these


def plugin_error(arguments, config_name="train"):
    """The one-line error for a Hydra launcher or sweeper (`hydra/launcher=submitit_slurm`) that is not installed,
    or None. Hydra's own message lists its search path over a dozen lines; this one names the extra to install.
    Overrides are read as Hydra reads them (quotes, spaces); with a search path of the user's own (--config-dir,
    hydra.searchpath) the check is Hydra's alone."""
    if any(argument.startswith(("-cd", "--config-dir", "hydra.searchpath", "+hydra.searchpath", "-cp",
                                "--config-path")) for argument in arguments):
        return None
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in arguments if not a.startswith("-")])
    except composition_errors():  # a syntax error: Hydra's own message says where
        return None
    chosen = [(o.key_or_group, o.value()) for o in overrides if o.key_or_group in PLUGIN_GROUPS and not o.is_delete()]
    chosen = [(group, str(name)) for group, name in chosen if isinstance(name, str)]  # null: Hydra's default
    if not chosen:
        return None

    import fullbatch.config.schema  # noqa: F401  (registers the schema)

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        options = {group: loader.get_group_options(group) for group, _ in chosen}
    for group, name in chosen:
        if name not in options[group]:
            package = PLUGIN_EXTRAS.get(name)
            hint = (f"; {name} comes with {package}, in the cluster extra: pip install -e \".[cluster]\""
                    if package else "")
            return f"{group}={name} is not allowed: expected one of {', '.join(options[group])}{hint}"
    return None


def check_arguments(arguments, config_name="train"):
    """(the one-line error of composing `arguments`, or None; the run folder they name, or None). Sweeps and
    Hydra's own flags are only checked for a launcher or sweeper that is not installed, and give no folder."""
    plugin = plugin_error(arguments, config_name)
    if plugin:
        return plugin, None
    if any(argument.startswith("-") for argument in arguments):
        return None, None
    added = added_key_error(arguments, config_name)
    if added:
        return added, None
    try:
        cfg = compose_config(arguments, config_name, return_hydra_config=True)
        run_dir = cfg.hydra.run.dir
    except composition_errors() as error:
        return one_line(error, config_name), None
    problem = unsafe_folder(run_dir) or overlong_part(run_dir) or unwritable(run_dir)
    return (f"hydra.run.dir={run_dir!r} is not allowed: {problem}" if problem else None), run_dir


def composition_error(arguments, config_name="train"):
    """The one-line error of composing `arguments` (the overrides of a single run), or None if they compose."""
    return check_arguments(arguments, config_name)[0]


def hydra_full_error():
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are the project's single line on stderr (`fullbatch: ...`, exit 2) instead of the
    usage text and a second line, so that every tool reports a bad argument the same way."""

    def error(self, message):
        raise SystemExit(report(message, ExitCode.BAD_INPUT))


def count_problem(flag, value, least, most=None):
    """Why the integer `value` of `flag` (e.g. --seeds) is out of range, or None; None values are not given."""
    if value is None or (value >= least and (most is None or value <= most)):
        return None
    expected = f"an integer >= {least}" if most is None else f"an integer from {least} to {most}"
    return f"{flag}={value} is not allowed: expected {expected}"
