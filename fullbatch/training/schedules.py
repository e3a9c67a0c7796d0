"""Optimizers and learning-rate schedules, stepped once per training step (once per epoch in SGD mode).

The schedule is the original code's, exactly: for training step t = 0, 1, 2, ... with warmup W,
  warmup       : t / W for t <= W, so step 0 runs at lr 0 (its update only fills the momentum buffer)
                 and steps W and W + 1 both run at the peak
  cosine-decay : 0.5 * (1 + cos(pi * (t - W - 1) / steps)) for t > W: the horizon starts after warmup
  cosine-4000  : the same with a horizon of 4000, so a 3000-step run stops before the end
  linear       : 0.1 ** k, k = how many of steps // 2.667, steps // 1.6, steps // 1.142 are <= t - W - 1
  none         : 1
With W = 0 the original has no warmup wrapper, so the schedule starts at step 0 itself: cosine is
0.5 * (1 + cos(pi * t / T)) and linear drops at t >= milestone. Nothing clamps the cosine: past its horizon it
rises again, as the original's does.
"""
import logging
import math

import torch

from fullbatch.config.choices import Optimizer, Scheduler

log = logging.getLogger("fullbatch")


COSINE_HORIZONS = {Scheduler("cosine-decay"): None, Scheduler("cosine-4000"): 4000}  # None: hyp.steps
LINEAR_DIVISORS = (2.667, 1.6, 1.142)  # the 10x drops; floor division of floats, as the original computes them


def lr_factor(step, scheduler, steps, warmup, horizon=None):
    """The factor of the peak lr that training step `step` (counted from 0) uses; `horizon` replaces the 4000
    of cosine-4000 (smaller-scale reproductions shrink it with the steps)."""
    if warmup:
        if step <= warmup:
            return step / warmup
        t = step - warmup - 1  # the original's warmup wrapper starts its inner schedule one step late
    else:
        t = step  # without warmup the original has no wrapper: the schedule itself, from step 0
    if scheduler in COSINE_HORIZONS:
        horizon = (horizon or COSINE_HORIZONS[scheduler]) if scheduler == Scheduler("cosine-4000") else steps
        return 0.5 * (1.0 + math.cos(math.pi * t / horizon))
    if scheduler == Scheduler.linear:
        return 0.1 ** sum(steps // divisor <= t for divisor in LINEAR_DIVISORS)
    return 1.0


def _sgd(params, optim):
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, dampening=optim.dampening,
                           nesterov=optim.nesterov, weight_decay=optim.weight_decay)


def _adamw(params, optim):
    return torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                             weight_decay=optim.weight_decay)


def _lbfgs(params, optim):
    line_search = None if optim.line_search is None else str(optim.line_search)  # a plain str in checkpoints
    return torch.optim.LBFGS(params, lr=optim.lr, max_iter=optim.max_iter, history_size=optim.history_size,
                             line_search_fn=line_search)


OPTIMIZERS = {Optimizer.SGD: _sgd, Optimizer.AdamW: _adamw, Optimizer.LBFGS: _lbfgs}


def build_optimizer(params, optim_cfg):
    return OPTIMIZERS[optim_cfg.name](params, optim_cfg)


def build_scheduler(optimizer, hyp, lr_scale=lambda: 1.0):
    """LambdaLR over `lr_factor`, times `lr_scale()` (a divergence restore halves it; kept in checkpoints)."""
    scheduler = Scheduler.none if hyp.scheduler is None else hyp.scheduler
    if hyp.warmup >= hyp.steps:
        log.warning(f"hyp.warmup={hyp.warmup} >= hyp.steps={hyp.steps}: the lr rises for the whole run and "
                    f"ends at {lr_factor(hyp.steps - 1, scheduler, hyp.steps, hyp.warmup, hyp.cosine_horizon):.3g} of "
                    "its peak")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_scale() * lr_factor(step, scheduler, hyp.steps, hyp.warmup, hyp.cosine_horizon))
