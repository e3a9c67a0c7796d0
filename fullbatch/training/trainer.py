"""The training loop: one object holding the run's state, one method per concern.

A step is an exact full-batch gradient step (`hyp.train_stochastic=False`) or one epoch of mini-batch SGD.
Host and device meet once per step, when the step's metrics row is read.
"""
import logging
import math
import time
import warnings
from functools import partial

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from fullbatch.analysis.gradient_noise import block_gradient_statistics
from fullbatch.analysis.sharpness import full_batch_hvp, hutchinson_trace, top_eigenvalue
from fullbatch.data.augmentation import step_generator
from fullbatch.data.blocks import block_plan, example_order
from fullbatch.models.modules import GradRegularizer
from fullbatch.training.evaluation import evaluate
from fullbatch.training.distributed import Communicator
from fullbatch.training.exact_optimizers import armijo_step, full_batch_loss, squared_norm, weight_decay_terms
from fullbatch.training.full_batch import StepInputs
from fullbatch.training.modifications import apply_trust_ratios_, sam_gradient, trust_ratios
from fullbatch.training.gradients import gradient_norm, post_process_
from fullbatch.training.reduction import mean_gradient
from fullbatch.training.schedules import build_optimizer, build_scheduler
from fullbatch.training.stochastic import stochastic_epoch

log = logging.getLogger("fullbatch")


class Trainer:
    def __init__(self, cfg, model, dataset, device, autocast=None, memory_format=torch.contiguous_format,
                 forward_model=None, comm=None):
        self.cfg, self.hyp, self.model, self.dataset, self.device = cfg, cfg.hyp, model, dataset, device
        self.comm = comm or Communicator()
        self.forward_model = model if forward_model is None else forward_model  # compiled wrapper shares parameters
        self.autocast, self.memory_format = autocast, memory_format
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.dtype = self.params[0].dtype
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.hyp.label_smoothing)
        self.optimizer = build_optimizer(self.params, self.hyp.optim)
        self.scheduler = build_scheduler(self.optimizer, self.hyp)
        reg = self.hyp.grad_reg
        self.regularizer = GradRegularizer(self.forward_model, self.optimizer, self.loss_fn, reg.block_strength,
                                           reg.acc_strength, reg.eps, reg.implementation,
                                           mixed_precision=cfg.impl.mixed_precision, norm=reg.norm,
                                           precision=reg.precision)
        self.ema = None
        if self.hyp.evaluate_ema:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.hyp.eval_ema_momentum),
                                     use_buffers=True)
        self.step = 0  # completed steps
        self.best_val_acc = None
        self.full_accuracy_streak = 0
        self.lr_scale = 1.0  # halved by each divergence restore (impl.checkpoint.on_divergence=restore)

    def prepare(self, images):
        return self.dataset.normalize(images, self.memory_format).to(self.dtype)

    def _step_inputs(self):
        images, labels = self.dataset.training_set(self.step)
        return StepInputs(self.forward_model, self.loss_fn, self.params, images, labels, self.prepare, self.autocast)

    def _blocks(self):
        order = example_order(self.dataset.num_train, self.cfg.seed, self.step, self.device, self.hyp.shuffle)
        return block_plan(self.dataset.num_train, self.cfg.data.batch_size, order, self.cfg.data.drop_last_block)

    def _full_gradient(self, inputs, blocks, noise=None):
        """The post-processed exact gradient, written into the parameters' .grad; returns the metrics tensors."""
        hyp, merge = self.hyp, self.cfg.impl.merge_blocks
        pre_grads = None
        if self.regularizer.active and hyp.grad_reg.acc_strength != 0:
            pre_grads, _ = mean_gradient(self.comm, inputs, blocks, merge=merge)
        grads, stats = mean_gradient(self.comm, inputs, blocks, batch_clip=hyp.batch_clip, clip_norm=hyp.grad_clip_norm,
                                     regularizer=self.regularizer, sub_batch=hyp.sub_batch, pre_grads=pre_grads,
                                     merge=merge)
        grads = self._modified(inputs, blocks, grads, pre_grads)
        pre_clip, clipped, bias_penalty = post_process_(grads, self.params, hyp, noise)
        for param, grad in zip(self.params, grads):
            param.grad = grad.to(param.dtype)
        count = stats["count"]
        return grads, dict(train_loss=stats["loss_sum"] / count, train_acc=stats["correct"].double() / count,
                           penalty=stats["penalty_sum"] / count + bias_penalty, grad_norm=gradient_norm(grads),
                           pre_clip_norm=pre_clip, clipped=clipped, param_norm_sq=self._param_norm_sq())

    def _modified(self, inputs, blocks, grads, pre_grads):
        """SAM: the gradient at the perturbed point; LARS/LARC: per-tensor trust ratios."""
        hyp, modification = self.hyp, self.hyp.optim_modification
        if modification.name == "SAM":
            return sam_gradient(self.params, grads, modification.rho, lambda: mean_gradient(
                self.comm, inputs, blocks, batch_clip=hyp.batch_clip, clip_norm=hyp.grad_clip_norm,
                regularizer=self.regularizer, sub_batch=hyp.sub_batch, pre_grads=pre_grads,
                merge=self.cfg.impl.merge_blocks)[0])
        if modification.name in ("LARS", "LARC"):
            lr = self.optimizer.param_groups[0]["lr"] if modification.name == "LARC" else None
            apply_trust_ratios_(grads, trust_ratios(self.params, grads, modification.trust,
                                                    hyp.optim.weight_decay, lr))
        return grads

    def full_batch_step(self):
        """One exact gradient step; returns device tensors for the metrics row."""
        inputs, blocks = self._step_inputs(), self._blocks()
        optim = self.hyp.optim
        if optim.name == "LBFGS":
            return self._lbfgs_step(inputs, blocks)
        noise = step_generator(self.cfg.seed, self.step, self.device, stream=3)
        grads, row = self._full_gradient(inputs, blocks, noise)
        if optim.line_search == "armijo":
            row["step_size"], row["evaluations"] = self._armijo_step(inputs, blocks, grads, row)
        else:
            self.optimizer.step()
        return row

    def _lbfgs_step(self, inputs, blocks):
        """torch.optim.LBFGS with one exact full-batch pass per evaluation of its closure."""
        rows = []

        def closure():
            grads, row = self._full_gradient(inputs, blocks)
            decay = weight_decay_terms(self.params, grads, self.hyp.optim.weight_decay)
            for param, grad in zip(self.params, grads):
                param.grad = grad.to(param.dtype)
            rows.append(row)
            return (row["train_loss"] + row["penalty"] + decay).to(self.params[0].dtype)

        self.optimizer.step(closure)
        return dict(rows[0], evaluations=len(rows))

    def _armijo_step(self, inputs, blocks, grads, row):
        """Backtrack from the scheduled lr until the full-batch objective decreases enough (Armijo)."""
        weight_decay = self.hyp.optim.weight_decay
        direction = [-(g + weight_decay * p.detach()) for g, p in zip(grads, self.params)]

        def objective():
            return (full_batch_loss(self.comm, inputs, blocks) + 0.5 * weight_decay * squared_norm(self.params)).item()

        slope = -squared_norm(direction).item()
        optim = self.hyp.optim
        return armijo_step(self.params, direction, objective, self.optimizer.param_groups[0]["lr"], slope,
                           optim.armijo_c, optim.backtrack, optim.max_backtracks)

    def stochastic_step(self):
        """One epoch of mini-batch SGD; returns device tensors for the metrics row."""
        shards = self.cfg.impl.setup.batch_shards or self.comm.world_size
        stats = stochastic_epoch(self._step_inputs(), self._blocks(), self.optimizer, self.hyp, self.cfg.seed,
                                 self.step, self.comm, shards, self.regularizer)
        count, updates = stats["count"], stats["updates"]
        return dict(train_loss=stats["loss_sum"] / count, train_acc=stats["correct"].double() / count,
                    penalty=stats["penalty_sum"] / count, pre_clip_norm=stats["norm_sum"] / updates,
                    grad_norm=stats["applied_norm_sum"] / updates,
                    clipped=stats["clipped"] / updates, param_norm_sq=self._param_norm_sq())

    def _param_norm_sq(self):
        return torch.stack([p.detach().double().pow(2).sum() for p in self.params]).sum()

    def validate(self):
        model = self.ema.module if self.ema is not None else self.forward_model
        loss, acc = evaluate(model, self.dataset.test_images, self.dataset.test_labels, self.prepare,
                             self.cfg.impl.eval_batch_size, self.autocast, self.hyp.test_time_flips)
        return dict(val_loss=loss, val_acc=acc)

    def analysis(self, lr):
        """The configured measurements when due (analysis=none: nothing, at no cost)."""
        analysis = self.cfg.analysis
        if not (analysis.block_statistics or analysis.sharpness):
            return {}
        last = self.step == self.total_steps
        if not last and (analysis.final_only or self.step % analysis.check_every_nth_step):
            return {}
        values = dict(param_norm=float(self._param_norm_sq()) ** 0.5)
        if analysis.block_statistics:
            values.update(block_gradient_statistics(self._step_inputs(), self._blocks()[: analysis.blocks]))
        if analysis.sharpness:
            values.update(self.sharpness(lr))
        return values

    def sharpness(self, lr):
        """Top Hessian eigenvalue (and trace) of the full training loss at the current weights, and 2 / lr."""
        analysis = self.cfg.analysis
        inputs, blocks = self._step_inputs(), self._blocks()[: analysis.blocks]
        hvp = partial(full_batch_hvp, inputs, blocks)
        values = dict(top_eigenvalue=top_eigenvalue(hvp, self.params, analysis.power_iterations, self.cfg.seed),
                      two_over_lr=2.0 / lr if lr > 0 else float("inf"))
        if analysis.trace_samples:
            values["hessian_trace"] = hutchinson_trace(hvp, self.params, analysis.trace_samples, self.cfg.seed)
        return values

    def run_step(self):
        """Train one step, advance schedule and EMA, validate when due; return the metrics row (host values)."""
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        if self.hyp.train_stochastic:
            row = self.stochastic_step()
        else:
            row = self.full_batch_step()
        with warnings.catch_warnings():
            if self.hyp.optim.line_search == "armijo":
                # The Armijo step moves the weights itself; PyTorch's "optimizer.step first" check does not apply.
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        if self.step % self.cfg.impl.validate_every_nth_step == 0 or self.step == self.total_steps:
            row.update(self.validate())
        row.update(self.analysis(lr))
        values = {key: value.item() if torch.is_tensor(value) else value for key, value in row.items()}
        weight_decay = 0.5 * self.hyp.optim.weight_decay * values.pop("param_norm_sq")
        values["full_loss"] = values["train_loss"] + values.pop("penalty") + weight_decay
        values["clipped"] = values["clipped"] if self.hyp.train_stochastic else bool(values["clipped"])
        return dict(step=self.step, lr=lr, **values, seconds=time.perf_counter() - started)

    @property
    def total_steps(self):
        return min(self.hyp.steps, 2) if self.cfg.dryrun else self.hyp.steps

    def diverged(self, row):
        return not all(math.isfinite(row[key]) for key in ("train_loss", "pre_clip_norm"))

    def should_stop_early(self, row):
        """`hyp.stop_at_full_training_accuracy` consecutive steps at 100% training accuracy."""
        limit = self.hyp.stop_at_full_training_accuracy
        self.full_accuracy_streak = self.full_accuracy_streak + 1 if row["train_acc"] >= 1.0 else 0
        return limit > 0 and self.full_accuracy_streak >= limit

    def scale_learning_rate(self, factor):
        """Scale the schedule's peak and the current learning rate; kept in checkpoints through the scheduler."""
        self.lr_scale *= factor
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor

    def state_dict(self):
        state = dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                     scheduler=self.scheduler.state_dict(), step=self.step, best_val_acc=self.best_val_acc,
                     full_accuracy_streak=self.full_accuracy_streak, lr_scale=self.lr_scale,
                     cpu_rng=torch.get_rng_state())
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
