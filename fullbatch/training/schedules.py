"""Optimizers and learning-rate schedules, stepped once per training step.

Schedule (factor of the peak lr at step s, counted from 0):
  warmup  : (s + 1) / warmup for s < warmup, so the last warmup step reaches the peak
  cosine-decay : 0.5 * (1 + cos(pi * (s - warmup) / (steps - warmup))) afterwards
  cosine-4000  : the same with a horizon of 4000 steps, so a 3000-step run stops before the end
  linear  : drops by 10x at 3/8, 5/8 and 7/8 of `steps`
  none    : constant after warmup
"""
import math

import torch


def lr_factor(step, scheduler, steps, warmup):
    if step < warmup:
        return (step + 1) / warmup
    if scheduler in ("cosine-decay", "cosine-4000"):
        horizon = steps if scheduler == "cosine-decay" else 4000
        progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if scheduler == "linear":
        drops = sum(step >= steps * fraction for fraction in (3 / 8, 5 / 8, 7 / 8))
        return 0.1**drops
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
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, scheduler, hyp.steps, hyp.warmup))
