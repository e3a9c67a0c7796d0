"""run(cfg): a whole training run from a composed config, called by the Hydra entry script and by tests."""
import logging
import os
import platform
import time

import torch
from omegaconf import OmegaConf

from fullbatch.analysis.hook import TrainingAnalysis
from fullbatch.data import load_device_dataset
from fullbatch.errors import ConfigError
from fullbatch.files.atomic import atomic_save, unwritable
from fullbatch.models import build_model
from fullbatch.models.ghost_batchnorm import supports_block_groups
from fullbatch.run import outputs
from fullbatch.run.interruption import Stopped, StopRequest
from fullbatch.run.resume import restore, resume_mode
from fullbatch.run.runtime import autocast_factory, config_hash, configure_backend, memory_format, resolve_device
from fullbatch.run.trackers import open_tracker
from fullbatch.run.validation import validate
from fullbatch.training.distributed import Communicator
from fullbatch.training.loop import train_loop
from fullbatch.training.trainer import Trainer

log = logging.getLogger("fullbatch")


def _hydra_context():
    """(output folder, group choices, command-line overrides) of the current Hydra job, or (None, {}, [])."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, {}, []
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.runtime.output_dir, dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task)


def _dryrun_cut(dataset, cfg):
    """Dry runs check the pipeline on four blocks of training and validation data."""
    keep_train, keep_test = 4 * cfg.data.batch_size, 4 * cfg.impl.eval_batch_size
    dataset.train_images, dataset.train_labels = dataset.train_images[:keep_train], dataset.train_labels[:keep_train]
    dataset.test_images, dataset.test_labels = dataset.test_images[:keep_test], dataset.test_labels[:keep_test]


def build_trainer(cfg, comm=None):
    comm = comm or Communicator()
    device = configure_backend(cfg.impl, cfg.seed, comm.local_rank if comm.active else None)
    dataset = load_device_dataset(cfg.data, cfg.seed, device, cfg.hyp.train_semi_stochastic, comm)
    if cfg.data.batch_size > dataset.num_train:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} is not allowed: expected at most the training set "
                          f"size ({dataset.num_train} examples)")
    if cfg.dryrun:
        _dryrun_cut(dataset, cfg)
    fmt = memory_format(cfg.impl)
    model = build_model(cfg.model.name, cfg.model.width, cfg.data.classes, cfg.data.image_size,
                        cfg.model.downsample)
    model = model.to(device, dtype=getattr(torch, cfg.impl.dtype), memory_format=fmt)
    forward_model = torch.compile(model, mode=str(cfg.impl.compile_mode)) if cfg.impl.compile else model
    if cfg.impl.merge_blocks > 1 and not supports_block_groups(model):
        raise ConfigError(f"impl.merge_blocks={cfg.impl.merge_blocks} is not allowed for model.name="
                          f"{cfg.model.name!r}: its BatchNorm layers cannot keep per-block statistics; use 1")
    return Trainer(cfg, model, dataset, device, autocast_factory(cfg.impl, device), fmt, forward_model, comm,
                   TrainingAnalysis(cfg.analysis, cfg.seed))


def _check_writable(folder, key):
    """Fail at start-up, not after hours of training, when results could not be written."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"{key}={folder!r} is not allowed: it is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        pass  # the probe below names the folder that cannot be written
    problem = unwritable(folder)
    if problem:
        raise ConfigError(f"{key}={folder!r} is not allowed: {problem}")


def run(cfg, output_dir=None, choices=None, overrides=None):
    """Train as configured; write metrics.jsonl, summary.json, model.pt and a table row. Return the summary."""
    validate(cfg)
    hydra_dir, hydra_choices, hydra_overrides = _hydra_context()
    output_dir = output_dir or hydra_dir or os.path.join("outputs", cfg.name)
    context = dict(choices=choices if choices is not None else hydra_choices,
                   overrides=overrides if overrides is not None else hydra_overrides)
    comm = Communicator.from_environment(cfg.impl.setup, resolve_device(cfg.impl.device).type)
    try:
        return _run(cfg, output_dir, context, comm)
    except Exception:
        if comm.active:  # the failing rank's error goes into the shared run log, not only its stderr
            log.exception(f"rank {comm.rank} of {comm.world_size} failed")
        raise
    finally:
        comm.close()


def _run(cfg, output_dir, context, comm):
    if not comm.is_main:
        log.setLevel(logging.WARNING)  # errors of every rank still reach the log
    tables = os.path.abspath(cfg.tables)
    if comm.is_main:
        _check_writable(output_dir, "hydra.run.dir")
        _check_writable(tables, "tables")
    # the commit is read before training (and once per process): one made while it trains is not the code it ran
    start = dict(time=time.time(), revision=outputs.git_revision(os.path.dirname(os.path.abspath(__file__))))
    identity = config_hash(cfg)
    trainer = build_trainer(cfg, comm)
    resume_path = restore(trainer, cfg.impl.checkpoint, identity)
    log.info(f"Run folder: {os.path.abspath(output_dir)}")
    log.info(f"Training {cfg.model.name} on {cfg.data.name} ({trainer.dataset.num_train} examples) on "
             f"{trainer.device} x {comm.world_size} processes, "
             f"{'stochastic' if cfg.hyp.train_stochastic else 'full-batch'} mode, {trainer.total_steps} steps")
    continued = resume_path if resume_mode(cfg.impl.checkpoint.resume)[0] != "path" else None  # a branch: its own
    tracker = open_tracker(cfg, output_dir, continued, trainer.step, context["choices"]) if comm.is_main else None
    metrics = outputs.MetricsLog(os.path.join(output_dir, "metrics.jsonl"), tracker) if comm.is_main else None
    with StopRequest() as stop_request:  # a signal during the final writes waits for them to finish
        try:
            outcome = train_loop(trainer, cfg, output_dir, identity, metrics, stop_request)
        finally:
            if metrics:
                metrics.close()
        summary = _summary(cfg, trainer, outcome, start, output_dir, context, resume_path, identity)
        summary["stopped_by"] = stop_request.signal if outcome.status == "preempted" else None
        if resume_path and not outcome.steps_trained and outcome.status != "preempted":
            summary = outputs.refill_measured(summary, resume_path)  # reported again: keep what was measured
        if comm.is_main:
            _write_outputs(cfg, trainer, outcome, summary, output_dir, tables)
    if stop_request.signal and outcome.status != "preempted":  # it came after the last step: outputs are done
        raise Stopped(f"{stop_request.signal} while the run wrote its outputs (they are complete); run the same "
                      "command again to go on")
    log.info(f"{outcome.status}: final validation accuracy {summary['final_val_acc']}, "
             f"best {summary['best_val_acc']}")
    return summary


def _write_outputs(cfg, trainer, outcome, summary, output_dir, tables):
    written = []
    if outcome.status not in ("diverged", "preempted"):
        model_path = os.path.join(output_dir, "model.pt")
        written += _write("model.pt", atomic_save, trainer.model.state_dict(), model_path) * [f"model {model_path}"]
    summary_path = os.path.join(output_dir, "summary.json")
    written += _write("summary.json", outputs.write_json, summary_path, summary) * [f"summary {summary_path}"]
    if outcome.status != "preempted":
        table = outputs.table_path(tables, cfg.template, cfg.dryrun)
        written += _write("the table row", outputs.record_table_row, table, outputs.table_row(summary),
                          level=logging.WARNING) * [f"table row {table}"]
    log.info(f"Wrote metrics {os.path.join(output_dir, 'metrics.jsonl')}" + "".join(f", {item}" for item in written))


def _write(what, write, *args, level=logging.ERROR):
    """An output that cannot be written (full disk, a damaged table) is logged; it must not cost the run its exit
    code or the other outputs (the checkpoints already hold the trained state, summary.json the results)."""
    try:
        write(*args)
    except (OSError, RuntimeError, ValueError) as error:  # torch.save reports a full disk as a RuntimeError
        log.log(level, f"Could not write {what} ({error}); the checkpoints keep the trained state")
        return False
    return True


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def _summary(cfg, trainer, outcome, start, output_dir, context, resume_path, identity):
    last = outcome.last
    return dict(
        status=outcome.status, name=cfg.name, config_hash=identity, steps=trainer.step, final_val_acc=last.get("val_acc"),
        final_val_loss=last.get("val_loss"), best_val_acc=trainer.best_val_acc,
        final_train_loss=last.get("train_loss"), final_train_acc=last.get("train_acc"),
        last_finite_step=outcome.last_finite, lr_restores=outcome.restores, wall_time=time.time() - start["time"],
        seconds_per_step=outcome.seconds_per_step, finished_at=time.strftime("%Y-%m-%d %H:%M:%S"),
        device=_device_name(trainer.device), world_size=trainer.comm.world_size, torch_version=torch.__version__,
        git_revision=start["revision"], resumed_from=resume_path,
        output_dir=os.path.abspath(output_dir), choices=context["choices"], overrides=context["overrides"],
        config=OmegaConf.to_container(cfg, resolve=True))
