"""Random directions in weight space, scaled like the model (Li et al., "Visualizing the Loss Landscape of Neural
Nets", 2018), so that landscapes of different networks are comparable.

filter: each output filter (row) of a weight tensor gets the norm of the model's filter; layer: each tensor gets
the norm of the model's tensor; none: plain Gaussian. One-dimensional tensors (BatchNorm weights and biases,
biases) get a zero direction unless `perturb_bn`, in which case they are scaled per tensor.
"""
import torch

NORMALIZATIONS = ("filter", "layer", "none")


def random_direction(params, seed, normalization="filter", perturb_bn=False):
    """One direction: a list of tensors shaped like `params`, drawn on the CPU from `seed` (device-independent)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"viz.normalization={normalization!r} is not allowed: expected one of {NORMALIZATIONS}")
    generator = torch.Generator().manual_seed(seed)
    direction = []
    for param in params:
        weights = param.detach().to("cpu", torch.float64)
        noise = torch.randn(weights.shape, generator=generator, dtype=torch.float64)
        if weights.dim() <= 1:
            noise = _scaled(noise, weights) if perturb_bn else torch.zeros_like(noise)
        elif normalization == "filter":
            noise = torch.stack([_scaled(n, w) for n, w in zip(noise, weights)])
        elif normalization == "layer":
            noise = _scaled(noise, weights)
        direction.append(noise.to(param.device, param.dtype))
    return direction


def _scaled(noise, reference):
    return noise * (reference.norm() / (noise.norm() + 1e-10))
