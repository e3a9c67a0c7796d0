"""How much the block gradients of a full-batch step disagree: the quantities the regularizer acts on.

From the block gradients g_b (weights w_b = |b| / N) and their mean g:
  block_grad_sq_mean = sum_b w_b ||g_b||^2, block_grad_norm_max = max_b ||g_b||
  block_ratio = block_grad_sq_mean / ||g||^2 (1 when all blocks agree; the regularizer penalises the excess)
  grad_snr = ||g||^2 / sum_b w_b ||g_b - g||^2
  noise_scale: McCandlish et al.'s (2018) "simple" B_noise = tr(Sigma) / ||G||^2, estimated from the squared
  gradient norms at batch sizes B (the block) and N (the full batch).
"""
import torch

from fullbatch.data.blocks import block_length
from fullbatch.models.state import unchanged_buffers


def block_gradient_statistics(step, blocks):
    """One extra pass over `blocks` (running statistics restored); returns a dict of floats."""
    total = sum(block_length(block) for block in blocks)
    mean = [torch.zeros_like(p, dtype=torch.float64) for p in step.params]
    squares, largest, sizes = 0.0, 0.0, []
    with unchanged_buffers(step.model):
        for block in blocks:
            _, _, _, loss = step.forward_loss(block)
            grads = [g.double() for g in torch.autograd.grad(loss, step.params)]
            weight = block_length(block) / total
            squared = float(sum((g**2).sum() for g in grads))
            squares += weight * squared
            largest = max(largest, squared**0.5)
            torch._foreach_add_(mean, grads, alpha=weight)
            sizes.append(block_length(block))
    full = float(sum((g**2).sum() for g in mean))
    spread = max(squares - full, 0.0)
    small = sum(sizes) / len(sizes)
    stats = dict(block_grad_sq_mean=squares, block_grad_norm_max=largest, full_grad_norm=full**0.5,
                 block_ratio=squares / full if full > 0 else float("inf"),
                 grad_snr=full / spread if spread > 0 else float("inf"))
    if total > small:  # two batch sizes are needed for the estimate
        true_grad_sq = (total * full - small * squares) / (total - small)
        trace = (squares - full) / (1 / small - 1 / total)
        stats["noise_scale"] = trace / true_grad_sq if true_grad_sq > 0 else float("inf")
    return stats
