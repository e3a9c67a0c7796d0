"""Sharpness of the full training loss: the top Hessian eigenvalue by power iteration, and the Hessian trace by
Hutchinson's estimator, both from exact Hessian-vector products (double backward).

Full-batch gradient descent with learning rate lr is stable on a quadratic only while the top eigenvalue stays
below 2 / lr, the "edge of stability" that Cohen et al. (2021) observe training to hover at; logging both
shows where a run is.
"""
import torch

from fullbatch.data.blocks import block_length
from fullbatch.models.state import unchanged_buffers


def full_batch_hvp(step, blocks, vector):
    """H v for the size-weighted mean loss over `blocks` (one train-mode forward per block, as in training)."""
    total = sum(block_length(block) for block in blocks)
    result = [torch.zeros_like(p) for p in step.params]
    with unchanged_buffers(step.model):  # keep BatchNorm running statistics untouched
        for block in blocks:
            _, _, _, loss = step.forward_loss(block)
            grads = torch.autograd.grad(loss, step.params, create_graph=True)
            products = torch.autograd.grad(grads, step.params, grad_outputs=vector)
            torch._foreach_add_(result, [p.detach() for p in products], alpha=block_length(block) / total)
    return result


def _dot(a, b):
    return sum((x * y).sum() for x, y in zip(a, b))


def top_eigenvalue(hvp, params, iterations, seed=0):
    """Largest-magnitude Hessian eigenvalue by power iteration on `hvp(vector) -> H vector`."""
    generator = torch.Generator().manual_seed(seed)
    vector = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    eigenvalue = torch.zeros(())
    for _ in range(iterations):
        norm = torch.sqrt(_dot(vector, vector))
        vector = [v / norm for v in vector]
        product = hvp(vector)
        eigenvalue = _dot(vector, product)
        vector = product
    return float(eigenvalue)


def hutchinson_trace(hvp, params, samples, seed=0):
    """Tr(H) estimated as the mean of z^T H z over Rademacher vectors z."""
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(samples):
        probe = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.device, p.dtype) for p in params]
        estimates.append(float(_dot(probe, hvp(probe))))
    return sum(estimates) / len(estimates)
