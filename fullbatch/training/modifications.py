"""Optimizer modifications that act on the exact full gradient before the update.

SAM (sharpness-aware minimisation, Foret et al. 2021): the update uses the full-batch gradient taken at
theta + rho * g / ||g||, the worst-case point at distance rho in the gradient direction; one extra full pass.
LARS / LARC (You et al. 2017): each parameter tensor's gradient is rescaled by its trust ratio
eta * ||w|| / (||g|| + weight_decay * ||w||); LARC clips the resulting local learning rate at the global one.
"""
import torch


def sam_gradient(params, grads, rho, gradient_at):
    """The gradient at theta + rho * g / ||g|| (by `gradient_at()`), with theta restored exactly afterwards."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads))))
    shift = torch._foreach_mul(list(grads), rho / norm.clamp(min=1e-12))
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            torch._foreach_add_(params, shift)
        return gradient_at()
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, saved)


def trust_ratios(params, grads, trust, weight_decay, lr=None):
    """Per-tensor factors for LARS (lr None) or LARC (clipped so that factor * lr <= lr)."""
    factors = []
    for param, grad in zip(params, grads):
        weight_norm, grad_norm = param.detach().norm(), grad.norm()
        ratio = trust * weight_norm / (grad_norm + weight_decay * weight_norm + 1e-12)
        ratio = torch.where((weight_norm > 0) & (grad_norm > 0), ratio, torch.ones_like(ratio))
        factors.append(ratio if lr is None else torch.clamp(ratio / lr, max=1.0))
    return factors


def apply_trust_ratios_(grads, factors):
    torch._foreach_mul_(grads, factors)
