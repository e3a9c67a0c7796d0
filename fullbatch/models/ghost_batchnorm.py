"""BatchNorm that can normalise several blocks in one forward pass, each with its own statistics.

Full-batch training defines BatchNorm statistics per block of `data.batch_size` examples. Sending k equal
blocks through one forward pass (bigger, faster kernels) must not change that: with `groups = k`, the
k * B examples are normalised per block, and the running statistics receive the k per-block updates in block
order, exactly as k separate forward passes would apply them.
"""
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class BlockBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d plus `groups`: in training, normalise each of `groups` equal slices of the batch alone."""

    groups = 1

    def forward(self, x):
        if self.groups == 1 or not self.training:
            return super().forward(x)
        k, channels = self.groups, x.shape[1]
        per_block = x.shape[0] // k
        assert per_block * k == x.shape[0], "merged blocks must have equal sizes"
        # (k*B, C, H, W) -> (B, k*C, H, W): block i's channels become a channel group of their own
        grouped = x.view(k, per_block, channels, *x.shape[2:]).transpose(0, 1).reshape(per_block, k * channels, *x.shape[2:])
        stats_dtype = self.running_mean.dtype if self.running_mean is not None else torch.float32
        block_means = torch.zeros(k * channels, device=x.device, dtype=stats_dtype)
        block_vars = torch.ones(k * channels, device=x.device, dtype=stats_dtype)
        weight = self.weight.repeat(k) if self.weight is not None else None
        bias = self.bias.repeat(k) if self.bias is not None else None
        # momentum 1 makes the "running" buffers hold exactly this pass's per-block mean and unbiased variance
        out = F.batch_norm(grouped, block_means, block_vars, weight, bias, True, 1.0, self.eps)
        if self.track_running_stats:
            self._update_running_stats(block_means.view(k, channels), block_vars.view(k, channels))
        out = out.view(per_block, k, channels, *x.shape[2:]).transpose(0, 1).reshape(x.shape)
        return out.contiguous(memory_format=torch.channels_last) if _is_channels_last(x) else out

    @torch.no_grad()
    def _update_running_stats(self, means, variances):
        for mean, var in zip(means, variances):
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(var.to(self.running_var.dtype), alpha=momentum)


def _is_channels_last(x):
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@contextmanager
def block_groups(model, groups):
    """Within the context, every BlockBatchNorm2d of `model` normalises `groups` blocks separately."""
    norms = [m for m in model.modules() if isinstance(m, BlockBatchNorm2d)]
    for norm in norms:
        norm.groups = groups
    try:
        yield
    finally:
        for norm in norms:
            norm.groups = 1


def supports_block_groups(model):
    """True when every BatchNorm of the model can normalise merged blocks separately."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return all(isinstance(m, BlockBatchNorm2d) for m in norms)
