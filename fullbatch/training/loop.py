"""The step loop of a run: metrics, checks, checkpoints, divergence, early stop and preemption."""
import logging
import os

from fullbatch.files.atomic import atomic_save
from fullbatch.progress import Progress
from fullbatch.training.checkpoint import CheckpointUnusable, find_checkpoints, load_checkpoint, save_checkpoint

log = logging.getLogger("fullbatch")


class Outcome:
    """How the loop ended: status, the last metrics row, the last finite row, and learning-rate restores."""

    def __init__(self):
        self.status, self.last, self.last_finite, self.restores = "finished", {}, None, 0
        self.restore_below = None  # a restore after another, with no checkpoint saved between, goes further back
        self.step_seconds, self.steps_trained = 0.0, 0

    @property
    def seconds_per_step(self):
        return self.step_seconds / self.steps_trained if self.steps_trained else None


def _format(row):
    return " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def _save(trainer, cfg, folder, identity, outcome):
    if trainer.comm.is_main:
        save_checkpoint(dict(trainer.state_dict(), config_hash=identity), folder, trainer.step, identity,
                        cfg.impl.checkpoint.keep, cfg.impl.checkpoint.search_dir, trainer.lineage)
    outcome.restore_below = None


def _restore_last_good(trainer, folders, identity, below):
    """Load the newest usable checkpoint of this config before step `below` from this run's folder or the
    folders it was resumed from; return its step, or None if there is none."""
    for step, path in find_checkpoints(folders, identity):
        if step >= below:
            continue
        try:
            trainer.load_state_dict(load_checkpoint(path, trainer.device))
        except CheckpointUnusable as error:
            log.warning(f"Skipping checkpoint: {error}")
            continue
        log.info(f"Restoring {path}")
        return step
    return None


def _handle_divergence(trainer, cfg, row, outcome, output_dir, identity):
    """Stop, or (impl.checkpoint.on_divergence=restore) go back to the last good checkpoint with half the lr."""
    last = outcome.last_finite
    log.error(f"Step {row['step']}: non-finite loss or gradient (train_loss={row['train_loss']}, pre_clip_norm="
              f"{row['pre_clip_norm']}, val_loss={row.get('val_loss', 'not measured')}); last finite step: "
              f"{_format(last) if last else 'none'}")
    ckpt = cfg.impl.checkpoint
    if ckpt.on_divergence == "restore" and outcome.restores < ckpt.max_restores:
        target_scale = trainer.lr_scale * 0.5  # compounds: the checkpoint may predate earlier halvings
        # A checkpoint that was just restored and diverged again may hold blown-up (finite) weights: go further
        # back each time, until a checkpoint is saved again; the oldest one is reused (at a lower lr) when there
        # is none further back.
        folders = [output_dir, ckpt.search_dir]
        below = outcome.restore_below if outcome.restore_below is not None else row["step"]
        restored = _restore_last_good(trainer, folders, identity, below)
        if restored is None and outcome.restore_below is not None:
            restored = _restore_last_good(trainer, folders, identity, outcome.restore_below + 1)
        if restored is not None:
            trainer.set_lr_scale(target_scale)
            outcome.restores, outcome.restore_below = outcome.restores + 1, restored
            log.warning(f"Restored step {trainer.step} and halved the learning rate (restore {outcome.restores} of "
                        f"{ckpt.max_restores}); peak lr now {trainer.peak_lr:.4g}, lr of the next step "
                        f"{trainer.lr:.4g}")
            return False
        log.error(f"No checkpoint of this run before step {below} to restore (set "
                  "impl.checkpoint.save_every_nth_step)")
    log.error("Stopping: the run diverged; earlier checkpoints are kept")
    return True


def train_loop(trainer, cfg, output_dir, identity, metrics, stop_request):
    """Run steps until the end, divergence, early stop or a stop signal; return the Outcome."""
    outcome, comm = Outcome(), trainer.comm
    checkpoints = os.path.join(output_dir, "checkpoints")
    every = cfg.impl.checkpoint.save_every_nth_step
    if trainer.step >= trainer.total_steps:  # resumed from the final checkpoint: report, do not train
        log.info(f"Nothing to train: the checkpoint is at step {trainer.step} of {trainer.total_steps}")
        outcome.last = dict(step=trainer.step, **{k: v.item() for k, v in trainer.validate().items()})
    progress = Progress(trainer.total_steps, trainer.step)
    while trainer.step < trainer.total_steps:
        row = outcome.last = trainer.run_step()
        outcome.step_seconds, outcome.steps_trained = outcome.step_seconds + row["seconds"], outcome.steps_trained + 1
        position = progress.tick()
        if comm.is_main:
            metrics.write(row)
        if trainer.step % cfg.impl.setup.check_every_nth_step == 0 or trainer.step == trainer.total_steps:
            comm.check_identical(trainer.params, trainer.step)
        if trainer.diverged(row):
            if _handle_divergence(trainer, cfg, row, outcome, output_dir, identity):
                outcome.status = "diverged"
                return outcome
            continue
        outcome.last_finite = row
        if "val_acc" in row:
            best = trainer.best_val_acc
            trainer.best_val_acc = row["val_acc"] if best is None else max(best, row["val_acc"])
        log.info(f"step {position} | {_format({k: v for k, v in row.items() if k != 'step'})}")
        keep_model = cfg.analysis.save_models_every_nth_step
        if keep_model and comm.is_main and trainer.step % keep_model == 0:
            os.makedirs(os.path.join(output_dir, "models"), exist_ok=True)  # for later landscape crunching
            atomic_save(trainer.model.state_dict(), os.path.join(output_dir, "models", f"step-{trainer.step:07d}.pt"))
        saved = (every and trainer.step % every == 0) or trainer.step == trainer.total_steps
        if saved:
            _save(trainer, cfg, checkpoints, identity, outcome)
        if trainer.should_stop_early(row):
            log.info(f"Stopping: {trainer.full_accuracy_streak} steps at 100% training accuracy")
            outcome.status = "stopped_at_full_training_accuracy"
            return outcome
        if stop_request.requested(comm, trainer.device):
            if not saved:
                _save(trainer, cfg, checkpoints, identity, outcome)
            log.warning(f"{stop_request.signal or 'a signal on another rank'}: stopped after step {trainer.step} "
                        "with a checkpoint; run the same command again to continue")
            outcome.status = "preempted"
            return outcome
    return outcome
