"""Optimizers that only make sense with exact gradients: L-BFGS with the full-batch gradient as its closure,
and gradient descent with an Armijo backtracking line search on the full-batch objective.

The objective is F(theta) = mean training loss + (weight_decay / 2) ||theta||^2 (+ the regularizer's penalty);
every evaluation is one exact full-batch pass. BatchNorm running statistics are left as they were by the
line search's trial evaluations.
"""
import torch

from fullbatch.data.blocks import block_length
from fullbatch.models.state import unchanged_buffers


@torch.no_grad()
def full_batch_loss(comm, step, blocks):
    """The example-mean training loss over `blocks` (all ranks together), without touching running statistics."""
    total = sum(block_length(block) for block in blocks)
    loss = torch.zeros((), dtype=torch.float64, device=step.labels.device)
    with unchanged_buffers(step.model):
        for block in comm.share(blocks):
            loss += step.forward_loss(block)[3].double() * (block_length(block) / total)
    comm.all_reduce_sum_([loss])
    return loss


def squared_norm(tensors):
    return torch.stack([t.double().pow(2).sum() for t in tensors]).sum()


def armijo_step(params, direction, objective, initial, slope, c=1e-4, shrink=0.5, max_backtracks=20):
    """Move `params` along `direction` by the largest t = initial * shrink^k with
    objective(t) <= objective(0) + c * t * slope; return (t, evaluations). `slope` is the directional derivative."""
    start = [p.detach().clone() for p in params]
    reference = objective()
    step_size, evaluations = initial, 1
    for _ in range(max_backtracks + 1):
        with torch.no_grad():
            for param, origin, move in zip(params, start, direction):
                param.copy_(origin + step_size * move)
        value = objective()
        evaluations += 1
        if value <= reference + c * step_size * slope:
            return step_size, evaluations
        step_size *= shrink
    return step_size / shrink, evaluations  # the smallest step tried stays in place


def weight_decay_terms(params, grads, weight_decay):
    """Add weight_decay * theta to `grads` in place; return (weight_decay / 2) ||theta||^2."""
    if not weight_decay:
        return torch.zeros((), dtype=torch.float64, device=grads[0].device)
    torch._foreach_add_(grads, [p.detach() for p in params], alpha=weight_decay)
    return 0.5 * weight_decay * squared_norm(params)
