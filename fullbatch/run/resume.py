"""Which checkpoint a run continues from: `impl.checkpoint.resume` = auto | true | false | a path.

auto (default): the newest complete checkpoint of this run name and config, if any, so that re-running a
preempted or requeued command simply continues; true: the same, but a missing checkpoint is an error;
false: start from step 0; a path: exactly that checkpoint. A damaged newest checkpoint falls back to the
previous one with a warning; a checkpoint of a different config is refused. A run continued by auto or true is
the same run (it inherits the lineage its checkpoints are pruned by); one started from a given path is a new run
that branches off, so it never prunes the checkpoints of the run it started from.
"""
import logging
import os

from fullbatch.errors import ConfigError
from fullbatch.training.checkpoint import CheckpointUnusable, checkpoint_candidates, load_checkpoint

log = logging.getLogger("fullbatch")


def resume_mode(value):
    """Normalise the config value to ('auto' | 'true' | 'false' | 'path', path-or-None)."""
    if value is True or str(value).lower() == "true":
        return "true", None
    if value is False or str(value).lower() in ("false", "", "none", "never"):
        return "false", None
    if str(value).lower() == "auto":
        return "auto", None
    return "path", str(value)


def restore(trainer, checkpoint_cfg, identity):
    """Load the checkpoint to continue from into `trainer`; return its absolute path, or None."""
    mode, path = resume_mode(checkpoint_cfg.resume)
    if mode == "false":
        return None
    if mode == "path":
        if not os.path.isfile(path):
            raise ConfigError(f"impl.checkpoint.resume={path!r} is not allowed: no such file; give an existing "
                              "checkpoint, auto, true or false")
        try:
            state = load_checkpoint(path, trainer.device)
        except CheckpointUnusable as error:
            raise ConfigError(f"impl.checkpoint.resume={path!r} is not allowed: {error}") from None
        return _load(trainer, state, os.path.abspath(path), identity, inherit=False)
    candidates = checkpoint_candidates(checkpoint_cfg.search_dir, identity)
    for candidate in candidates:
        try:
            state = load_checkpoint(candidate, trainer.device)
        except CheckpointUnusable as error:
            log.warning(f"Skipping checkpoint: {error}; trying the previous one")
            continue
        return _load(trainer, state, os.path.abspath(candidate), identity, inherit=True)
    if mode == "true":
        raise ConfigError(f"impl.checkpoint.resume=true is not allowed here: no usable checkpoint of this config "
                          f"under {checkpoint_cfg.search_dir}; use auto or false to start from step 0")
    if candidates:
        log.warning(f"Every checkpoint of this config under {checkpoint_cfg.search_dir} is damaged "
                    f"({len(candidates)} tried); STARTING AGAIN FROM STEP 0")
    else:
        log.info(f"No checkpoint of this config under {checkpoint_cfg.search_dir}; starting from step 0")
    return None


def _load(trainer, state, path, identity, inherit):
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"impl.checkpoint.resume={path!r} is not allowed: it holds a {type(state).__name__}, not "
                          "a checkpoint written by this project (checkpoints/step-N.pt)")
    if state.get("config_hash") != identity:
        raise ConfigError(f"impl.checkpoint.resume={path!r} is not allowed: it was written for a different "
                          f"config (hash {state.get('config_hash')} vs {identity}); resume with the same "
                          "data, model, hyp and seed")
    trainer.load_state_dict(state)
    if inherit and isinstance(state.get("lineage"), str) and state["lineage"]:
        trainer.lineage = state["lineage"]  # checkpoints of earlier versions have none: they are never pruned
    log.info(f"Resumed from {path} at step {trainer.step}")
    return path
