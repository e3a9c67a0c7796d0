"""Optimizers and learning-rate schedules, stepped once per training step (once per epoch in SGD mode).

The schedule is the original code's, exactly: for training step t = 0, 1, 2, ... with warmup W,
  warmup       : t / W for t <= W, so step 0 runs at lr 0 (its update only fills the momentum buffer)
                 and steps W and W + 1 both run at the peak
  cosine-decay : 0.5 * (1 + cos(pi * (t - W - 1) / steps)) for t > W: the horizon starts after warmup
  cosine-4000  : the same with a horizon of 4000, so a 3000-step run stops before the end
  linear       : 0.1 ** k, k = how many of steps // 2.667, steps // 1.6, steps // 1.142 are <= t - W - 1
  none         : 1
With W = 0 there is no warmup: steps 0 and 1 run at the peak, as W and W + 1 do otherwise. Nothing clamps
the cosine: past its horizon it rises again, as the original's does.
"""
import logging
import math

import torch

log = logging.getLogger("fullbatch")


COSINE_HORIZONS = {"cosine-decay": None, "cosine-4000": 4000}  # None: hyp.steps
LINEAR_DIVISORS = (2.667, 1.6, 1.142)  # the 10x drops; floor division of floats, as the original computes them


def lr_factor(step, scheduler, steps, warmup):
    """The factor of the peak lr that training step `step` (counted from 0) uses."""
    if step <= warmup:
        return step / warmup if warmup else 1.0
    after_warmup = step - warmup - 1
    if scheduler in COSINE_HORIZONS:
        horizon = COSINE_HORIZONS[scheduler] or steps
        return 0.5 * (1.0 + math.cos(math.pi * after_warmup / horizon))
    if scheduler == "linear":
        return 0.1 ** sum(steps // divisor <= after_warmup for divisor in LINEAR_DIVISORS)
    return 1.0


def build_optimizer(params, optim_cfg):
    if optim_cfg.name == "SGD":
        return torch.optim.SGD(params, lr=optim_cfg.lr, momentum=optim_cfg.momentum, dampening=optim_cfg.dampening,
                               nesterov=optim_cfg.nesterov, weight_decay=optim_cfg.weight_decay)
    if optim_cfg.name == "AdamW":
        return torch.optim.AdamW(params, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                                 weight_decay=optim_cfg.weight_decay)
    if optim_cfg.name == "LBFGS":
        return torch.optim.LBFGS(params, lr=optim_cfg.lr, max_iter=optim_cfg.max_iter, history_size=optim_cfg.history_size,
                                 line_search_fn=optim_cfg.line_search)
    raise ValueError(f"hyp.optim.name={optim_cfg.name!r} is not known: expected SGD, AdamW or LBFGS")


def build_scheduler(optimizer, hyp):
    scheduler = "none" if hyp.scheduler is None else hyp.scheduler
    if hyp.warmup >= hyp.steps:
        log.warning(f"hyp.warmup={hyp.warmup} >= hyp.steps={hyp.steps}: the lr rises for the whole run and "
                    f"ends at {lr_factor(hyp.steps - 1, scheduler, hyp.steps, hyp.warmup):.3g} of its peak")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, scheduler, hyp.steps, hyp.warmup))
