"""Post-processing of a gradient given as a list of tensors: norms, clipping, noise, the norm bias.

Everything stays on the device: clipping multiplies by min(1, clip / (norm + 1e-6)) computed as a tensor,
so no value is copied to the host inside a step.
"""
import math

import torch


def gradient_norm(grads, norm_type=2.0):
    """The norm of all tensors together, as a 0-dim tensor on their device."""
    if math.isinf(norm_type):
        return torch.stack([g.detach().abs().max() for g in grads]).max()
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)


def clip_(grads, max_norm, norm_type=2.0):
    """Scale `grads` in place so their norm is at most `max_norm`; return (norm before, clipped flag)."""
    norm = gradient_norm(grads, norm_type)
    factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, factor)
    return norm, norm > max_norm


def add_noise_(grads, additive, multiplicative, generator):
    """Gaussian noise: `g += additive * xi` and `g *= 1 + multiplicative * xi`, xi drawn from `generator`."""
    for grad in grads:
        if multiplicative:
            xi = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
            grad.mul_(1.0 + multiplicative * xi)
        if additive:
            xi = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
            grad.add_(xi, alpha=additive)


def add_norm_bias_(grads, params, strength, norm_type, bias):
    """Add the gradient of `strength * (||theta||_p - bias)^2` to `grads`; return the penalty as a tensor."""
    with torch.enable_grad():
        leaves = [p.detach().requires_grad_() for p in params]
        norm = torch.linalg.vector_norm(torch.cat([p.flatten() for p in leaves]), norm_type)
        penalty = strength * (norm - bias) ** 2
        extra = torch.autograd.grad(penalty, leaves)
    torch._foreach_add_(grads, extra)
    return penalty.detach()


def post_process_(grads, params, hyp, generator):
    """Norm bias, clipping and noise on a full gradient, in that order; returns (pre-clip norm, clipped, penalty)."""
    penalty = torch.zeros((), device=grads[0].device)
    if hyp.norm_bias.strength > 0:
        penalty = add_norm_bias_(grads, params, hyp.norm_bias.strength, hyp.norm_bias.norm_type, hyp.norm_bias.bias)
    if hyp.grad_clip is not None:
        norm, clipped = clip_(grads, hyp.grad_clip, hyp.grad_clip_norm)
    else:
        norm, clipped = gradient_norm(grads, hyp.grad_clip_norm), torch.zeros((), dtype=torch.bool, device=penalty.device)
    if hyp.grad_noise.additive or hyp.grad_noise.multiplicative:
        add_noise_(grads, hyp.grad_noise.additive, hyp.grad_noise.multiplicative, generator)
    return norm, clipped, penalty
