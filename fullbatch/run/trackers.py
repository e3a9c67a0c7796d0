"""Experiment trackers beside metrics.jsonl: `logger=tensorboard` or `logger=wandb` (optional extras).

Every metrics row goes to the tracker at its step (numbers only; booleans such as `clipped` as 0/1), and the
composed config with the chosen presets goes in as hyperparameters. Only the main process (rank 0) logs. A run
resumed from a checkpoint continues the tracker of the run that wrote it: the same TensorBoard folder, whose
events after the checkpoint's step are purged, and the same W&B run id. What a run tracks is saved in
`tracker.json` in its run folder, which is how its resumption finds it.
"""
import importlib.util
import json
import os
import uuid

from omegaconf import OmegaConf

from fullbatch.errors import ConfigError
from fullbatch.files.atomic import atomic_write
from fullbatch.files.run_json import DamagedRunFile, read_json_object

STATE = "tracker.json"
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # name: (module, extra)


def check_installed(name):
    """At start-up: the tracker's package is there, or one line that names the extra to install."""
    if str(name) in PACKAGES:
        module, extra = PACKAGES[str(name)]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={name} is not allowed here: the {module} package is missing; install the "
                              f"optional extra: pip install -e \".[{extra}]\"")


def _numbers(row):
    return {key: float(value) for key, value in row.items() if key != "step" and isinstance(value, (int, float))}


def _earlier_state(resume_path):
    """The tracker state of the run that wrote the checkpoint this run resumed from, or {}."""
    if not resume_path:
        return {}
    try:
        state = read_json_object(os.path.join(os.path.dirname(os.path.dirname(resume_path)), STATE))
    except DamagedRunFile:
        return {}
    return {key: value for key, value in state.items() if isinstance(value, str) and value}  # a damaged id: a new one


def _hyperparameters(cfg, choices):
    config = OmegaConf.to_container(cfg, resolve=True)
    return dict(config, presets={str(key): str(value) for key, value in (choices or {}).items()})


class TensorBoard:
    def __init__(self, folder, start_step, hyperparameters):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard drops the events an earlier session wrote after the checkpoint
        self.writer = SummaryWriter(log_dir=folder, purge_step=start_step + 1 if start_step else None)
        if not start_step:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(OmegaConf.create(hyperparameters)) + "\n```")
            self._hparams(hyperparameters)

    def _hparams(self, hyperparameters):
        from torch.utils.tensorboard.summary import hparams

        flat = {}

        def walk(prefix, value):
            if isinstance(value, dict):
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), item)
            elif isinstance(value, (bool, int, float, str)):
                flat[prefix] = value
            elif value is not None:
                flat[prefix] = str(value)

        walk("", hyperparameters)
        for summary in hparams(flat, {}):
            self.writer.file_writer.add_summary(summary)

    def log(self, step, values):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self):
        self.writer.close()


class WeightsAndBiases:
    def __init__(self, logger_cfg, run_id, name, folder, hyperparameters):
        import wandb

        self.run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity, group=logger_cfg.group,
                              tags=list(logger_cfg.tags), name=name, id=run_id, resume="allow", dir=folder,
                              config=hyperparameters)

    def log(self, step, values):
        self.run.log(values, step=step)

    def close(self):
        self.run.finish()


class Tracker:
    """The metrics rows of a run, sent to its tracker as they are written."""

    def __init__(self, backend):
        self.backend = backend

    def write(self, row):
        values = _numbers(row)
        if values and isinstance(row.get("step"), int):
            self.backend.log(row["step"], values)

    def close(self):
        self.backend.close()


def open_tracker(cfg, output_dir, resume_path, start_step, choices=None):
    """The run's tracker (None with logger=none), continuing the one of the run it resumed from."""
    name = str(cfg.logger.name)
    if name == "none":
        return None
    state = _earlier_state(resume_path)
    hyperparameters = _hyperparameters(cfg, choices)
    if name == "tensorboard":
        folder = state.get("tensorboard") or os.path.abspath(os.path.join(output_dir, "tensorboard"))
        state = {"tensorboard": folder}
        backend = TensorBoard(folder, start_step, hyperparameters)
    else:
        state = {"wandb_id": state.get("wandb_id") or uuid.uuid4().hex[:12]}
        backend = WeightsAndBiases(cfg.logger, state["wandb_id"], cfg.name, os.path.abspath(output_dir),
                                   hyperparameters)
    atomic_write(os.path.join(output_dir, STATE), lambda handle: json.dump(state, handle), mode="w")
    return Tracker(backend)
