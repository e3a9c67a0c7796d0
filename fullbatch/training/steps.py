"""The kinds of training step, behind one interface: `step() -> metrics row` (device tensors, read once).

    FullBatchStep   the exact full-batch gradient, post-processed, then one optimizer update
    LineSearchStep  the same gradient, then Armijo backtracking on the exact objective
    LBFGSStep       torch.optim.LBFGS whose closure is one exact full-batch pass
    SGDEpoch        one epoch of mini-batch SGD (the stochastic baseline)

A step reads the run's state (model, optimizer, data, step index) from the trainer it is given; the trainer
keeps that state, the schedule and validation.
"""
import dataclasses

from fullbatch.data.augmentation import step_generator
from fullbatch.training.exact_optimizers import armijo_step, full_batch_loss, squared_norm, weight_decay_terms
from fullbatch.training.full_batch import mean_gradient, split_evenly
from fullbatch.training.gradients import gradient_norm, post_process_
from fullbatch.training.modifications import apply_trust_ratios_, sam_gradient, trust_ratios


def exact_gradient(trainer, inputs, blocks, noise=None):
    """The full-batch step's gradient, read top to bottom: block mean (with the per-block rule), SAM or LARS,
    norm bias, clipping and noise. It is written into the parameters' .grad; returns (grads, metrics row)."""
    hyp, rule, comm, params = trainer.hyp, trainer.rule, trainer.comm, trainer.params
    pre_grads = None
    if rule.regularized and hyp.grad_reg.acc_strength != 0:  # the regularizer's v needs the full gradient
        pre_grads, _ = mean_gradient(comm, inputs, blocks, rule.without_per_block_terms())
    grads, stats = mean_gradient(comm, inputs, blocks, rule, pre_grads)
    modification = hyp.optim_modification.name
    if modification == "SAM":
        grads = sam_gradient(params, grads, hyp.optim_modification.rho,
                             lambda: mean_gradient(comm, inputs, blocks, rule, pre_grads)[0])
    elif modification in ("LARS", "LARC"):
        lr = trainer.lr if modification == "LARC" else None
        apply_trust_ratios_(grads, trust_ratios(params, grads, hyp.optim_modification.trust,
                                                hyp.optim.weight_decay, lr))
    pre_clip, clipped, bias_penalty = post_process_(grads, params, hyp, noise)
    for param, grad in zip(params, grads):
        param.grad = grad.to(param.dtype)
    count = stats["count"]
    return grads, dict(train_loss=stats["loss_sum"] / count, train_acc=stats["correct"].double() / count,
                       penalty=stats["penalty_sum"] / count + bias_penalty, grad_norm=gradient_norm(grads),
                       pre_clip_norm=pre_clip, clipped=clipped, param_norm_sq=trainer.param_norm_sq())


class StepKind:
    steps_the_optimizer = True  # False: the step may move the weights without optimizer.step()

    def __init__(self, trainer):
        self.trainer = trainer

    def gradient(self):
        """This step's data and blocks, and its exact gradient with noise drawn from (seed, step)."""
        trainer = self.trainer
        inputs, blocks = trainer.step_inputs(), trainer.blocks()
        noise = step_generator(trainer.cfg.seed, trainer.step, trainer.device, stream=3)
        grads, row = exact_gradient(trainer, inputs, blocks, noise)
        return inputs, blocks, grads, row


class FullBatchStep(StepKind):
    def step(self):
        *_, row = self.gradient()
        self.trainer.optimizer.step()
        return row


class LineSearchStep(StepKind):
    """Backtrack from the scheduled lr until the full-batch objective decreases enough (Armijo). Validation
    refuses everything that would bend the step away from -grad F, so the slope is -||grad F||^2."""
    steps_the_optimizer = False

    def step(self):
        trainer = self.trainer
        inputs, blocks, grads, row = self.gradient()
        optim, params = trainer.hyp.optim, trainer.params
        direction = [-(g + optim.weight_decay * p.detach()) for g, p in zip(grads, params)]

        def objective():
            loss = full_batch_loss(trainer.comm, inputs, blocks)
            return (loss + 0.5 * optim.weight_decay * squared_norm(params)).item()

        row["step_size"], row["evaluations"] = armijo_step(
            params, direction, objective, trainer.lr, -squared_norm(direction).item(), optim.armijo_c,
            optim.backtrack, optim.max_backtracks)
        return row


class LBFGSStep(StepKind):
    steps_the_optimizer = False  # not at lr 0

    def step(self):
        trainer = self.trainer
        inputs, blocks = trainer.step_inputs(), trainer.blocks()
        if trainer.lr == 0:  # warmup's first step: the line search cannot start from t = 0, and nothing would move
            return dict(exact_gradient(trainer, inputs, blocks)[1], evaluations=1)
        rows = []

        def closure():
            grads, row = exact_gradient(trainer, inputs, blocks)
            decay = weight_decay_terms(trainer.params, grads, trainer.hyp.optim.weight_decay)
            for param, grad in zip(trainer.params, grads):
                param.grad = grad.to(param.dtype)
            rows.append(row)
            return (row["train_loss"] + row["penalty"] + decay).to(trainer.params[0].dtype)

        trainer.optimizer.step(closure)
        return dict(rows[0], evaluations=len(rows))


class SGDEpoch(StepKind):
    """Each mini-batch gets what a full gradient gets in full-batch mode (regularizer, norm bias, clipping,
    noise), then an update. A mini-batch is `shards` equal pieces with BatchNorm statistics per piece: one per
    rank under torchrun; in one process `impl.setup.batch_shards` reproduces that split exactly."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self.rule = dataclasses.replace(trainer.rule, merge=1)  # a piece is one forward pass

    def step(self):
        trainer = self.trainer
        hyp, comm, params = trainer.hyp, trainer.comm, trainer.params
        shards = trainer.cfg.impl.setup.batch_shards or comm.world_size
        inputs = trainer.step_inputs()
        noise = step_generator(trainer.cfg.seed, trainer.step, trainer.device, stream=3)
        totals = {key: 0.0 for key in ("loss_sum", "penalty_sum", "norm_sum", "applied_norm_sum", "clipped")}
        correct, count, batches = 0, 0, trainer.blocks()
        for batch in batches:
            grads, stats = mean_gradient(comm, inputs, split_evenly(batch, shards), self.rule)
            norm, clipped, _ = post_process_(grads, params, hyp, noise)
            for param, grad in zip(params, grads):
                param.grad = grad.to(param.dtype)
            trainer.optimizer.step()
            totals["loss_sum"] += stats["loss_sum"]
            totals["penalty_sum"] += stats["penalty_sum"]
            totals["norm_sum"] += norm.double()
            totals["applied_norm_sum"] += gradient_norm(grads).double()
            totals["clipped"] += clipped.double()
            correct += stats["correct"]
            count += stats["count"]
        updates = len(batches)
        return dict(train_loss=totals["loss_sum"] / count, train_acc=correct.double() / count,
                    penalty=totals["penalty_sum"] / count, pre_clip_norm=totals["norm_sum"] / updates,
                    grad_norm=totals["applied_norm_sum"] / updates, clipped=totals["clipped"] / updates,
                    param_norm_sq=trainer.param_norm_sq())


def step_kind(hyp):
    """The step class for this config."""
    if hyp.train_stochastic:
        return SGDEpoch
    if hyp.optim.name == "LBFGS":
        return LBFGSStep
    return LineSearchStep if hyp.optim.line_search == "armijo" else FullBatchStep
