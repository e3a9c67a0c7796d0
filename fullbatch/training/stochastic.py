"""One step of the stochastic baseline: an epoch of mini-batch SGD over the (augmented) training set.

Each mini-batch gets the same treatment a full gradient gets in full-batch mode (regularizer, norm bias,
clipping, noise), then an optimizer update; the learning-rate schedule advances once per epoch. A mini-batch
is processed as `shards` equal pieces with BatchNorm statistics per piece: under torchrun each rank takes one
piece (the usual data-parallel semantics); in one process `shards > 1` reproduces that split exactly.
"""
import torch

from fullbatch.data.augmentation import step_generator
from fullbatch.data.blocks import block_length
from fullbatch.training.gradients import gradient_norm, post_process_
from fullbatch.training.reduction import mean_gradient, split_evenly


def stochastic_epoch(step, batches, optimizer, hyp, seed, step_index, comm, shards=1, regularizer=None):
    """Run one epoch; return device tensors of summed loss, correct, penalty, norms (before and after clipping)
    and the clipped count."""
    device = step.labels.device
    totals = {key: torch.zeros((), device=device, dtype=torch.float64)
              for key in ("loss_sum", "penalty_sum", "norm_sum", "applied_norm_sum", "clipped")}
    correct = torch.zeros((), device=device, dtype=torch.int64)
    noise = step_generator(seed, step_index, device, stream=3)
    count = 0
    for batch in batches:
        grads, stats = mean_gradient(comm, step, split_evenly(batch, shards), batch_clip=hyp.batch_clip,
                                     clip_norm=hyp.grad_clip_norm, regularizer=regularizer, sub_batch=hyp.sub_batch)
        norm, clipped, _ = post_process_(grads, step.params, hyp, noise)
        for param, grad in zip(step.params, grads):
            param.grad = grad.to(param.dtype)
        optimizer.step()
        totals["loss_sum"] += stats["loss_sum"]
        totals["penalty_sum"] += stats["penalty_sum"]
        totals["norm_sum"] += norm.double()
        totals["applied_norm_sum"] += gradient_norm(grads).double()
        totals["clipped"] += clipped.double()
        correct += stats["correct"]
        count += block_length(batch)
    return dict(totals, correct=correct, count=count, updates=len(batches))
