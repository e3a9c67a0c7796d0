"""The run's state between steps: model, optimizer, schedule, EMA, step count; validation and checkpoints.

A step is one of the kinds in `steps.py` (full batch, line search, L-BFGS, SGD epoch), chosen once from the
config. Host and device meet once per step, when the step's metrics row is read.
"""
import math
import time
import uuid
import warnings

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fullbatch.data.blocks import block_plan, example_order
from fullbatch.training.distributed import Communicator
from fullbatch.training.evaluation import evaluate
from fullbatch.training.full_batch import BlockRule, StepInputs
from fullbatch.training.regularizer import GradRegularizer
from fullbatch.training.schedules import build_optimizer, build_scheduler
from fullbatch.training.steps import step_kind


def new_lineage():
    return uuid.uuid4().hex[:16]


class Trainer:
    def __init__(self, cfg, model, dataset, device, autocast=None, memory_format=torch.contiguous_format,
                 forward_model=None, comm=None, analysis=None):
        self.cfg, self.hyp, self.model, self.dataset, self.device = cfg, cfg.hyp, model, dataset, device
        self.comm = comm or Communicator()
        self.forward_model = model if forward_model is None else forward_model  # compiled wrapper shares parameters
        self.autocast, self.memory_format = autocast, memory_format
        self.analysis = analysis  # called after each step: (trainer, lr) -> values for the metrics row
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.dtype = self.params[0].dtype
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.hyp.label_smoothing)
        self.optimizer = build_optimizer(self.params, self.hyp.optim)
        self.lr_scale = 1.0  # halved by each divergence restore (impl.checkpoint.on_divergence=restore)
        self.scheduler = build_scheduler(self.optimizer, self.hyp, lambda: self.lr_scale)
        reg = self.hyp.grad_reg
        self.regularizer = GradRegularizer(self.forward_model, self.optimizer, self.loss_fn, reg.block_strength,
                                           reg.acc_strength, reg.eps, reg.implementation,
                                           mixed_precision=cfg.impl.mixed_precision, norm=reg.norm,
                                           precision=reg.precision)
        self.rule = BlockRule.from_config(self.hyp, cfg.impl, self.regularizer)
        self.ema = None
        if self.hyp.evaluate_ema:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.hyp.eval_ema_momentum),
                                     use_buffers=True)
        self.kind = step_kind(self.hyp)(self)
        self.step = 0  # completed steps
        self.lineage = new_lineage()  # this run and the requeues that resume it; its checkpoints carry it
        self.best_val_acc = None
        self.full_accuracy_streak = 0

    @property
    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def prepare(self, images):
        return self.dataset.normalize(images, self.memory_format).to(self.dtype)

    def step_inputs(self):
        images, labels = self.dataset.training_set(self.step)
        return StepInputs(self.forward_model, self.loss_fn, self.params, images, labels, self.prepare, self.autocast)

    def blocks(self):
        order = example_order(self.dataset.num_train, self.cfg.seed, self.step, self.device, self.hyp.shuffle)
        return block_plan(self.dataset.num_train, self.cfg.data.batch_size, order, self.cfg.data.drop_last_block)

    def param_norm_sq(self):
        return torch.stack([p.detach().double().pow(2).sum() for p in self.params]).sum()

    def validate(self):
        model = self.ema.module if self.ema is not None else self.forward_model
        loss, acc = evaluate(model, self.dataset.test_images, self.dataset.test_labels, self.prepare,
                             self.cfg.impl.eval_batch_size, self.autocast, self.hyp.test_time_flips)
        return dict(val_loss=loss, val_acc=acc)

    def run_step(self):
        """Train one step, advance schedule and EMA, validate when due; return the metrics row (host values)."""
        started = time.perf_counter()
        lr = self.lr
        row = self.kind.step()
        with warnings.catch_warnings():
            if not self.kind.steps_the_optimizer:
                # Armijo moves the weights itself and L-BFGS skips its lr-0 step: PyTorch's "optimizer.step
                # first" check does not apply, and no value of the schedule is skipped.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        if self.step % self.cfg.impl.validate_every_nth_step == 0 or self.step == self.total_steps:
            row.update(self.validate())
        if self.analysis is not None:
            row.update(self.analysis(self, lr))
        values = {key: value.item() if torch.is_tensor(value) else value for key, value in row.items()}
        weight_decay = 0.5 * self.hyp.optim.weight_decay * values.pop("param_norm_sq")
        values["full_loss"] = values["train_loss"] + values.pop("penalty") + weight_decay
        values["clipped"] = values["clipped"] if self.hyp.train_stochastic else bool(values["clipped"])
        return dict(step=self.step, lr=lr, **values, seconds=time.perf_counter() - started)

    @property
    def total_steps(self):
        return min(self.hyp.steps, 2) if self.cfg.dryrun else self.hyp.steps

    def diverged(self, row):
        """A non-finite loss or gradient, or a non-finite validation loss (weights blown up to where the
        training loss still looks finite): the run has stopped learning anything."""
        keys = ("train_loss", "pre_clip_norm", "val_loss") if "val_loss" in row else ("train_loss", "pre_clip_norm")
        return not all(math.isfinite(row[key]) for key in keys)

    def should_stop_early(self, row):
        """`hyp.stop_at_full_training_accuracy` consecutive steps at 100% training accuracy."""
        limit = self.hyp.stop_at_full_training_accuracy
        self.full_accuracy_streak = self.full_accuracy_streak + 1 if row["train_acc"] >= 1.0 else 0
        return limit > 0 and self.full_accuracy_streak >= limit

    def set_lr_scale(self, scale):
        """Scale the whole schedule (the factor lives in the schedule function and in checkpoints)."""
        self.lr_scale = scale
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)

    @property
    def peak_lr(self):
        return self.scheduler.base_lrs[0] * self.lr_scale

    def state_dict(self):
        state = dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                     scheduler=self.scheduler.state_dict(), step=self.step, best_val_acc=self.best_val_acc,
                     full_accuracy_streak=self.full_accuracy_streak, lr_scale=self.lr_scale,
                     cpu_rng=torch.get_rng_state(), lineage=self.lineage)
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_val_acc = state["step"], state["best_val_acc"]
        self.full_accuracy_streak = state["full_accuracy_streak"]
        self.lr_scale = state.get("lr_scale", 1.0)
        torch.set_rng_state(state["cpu_rng"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
