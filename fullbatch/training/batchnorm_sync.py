"""BatchNorm running statistics across ranks, exactly as one process would have updated them.

One process applies r <- (1 - m) r + m s_i for its blocks i = 1..n in order, which gives
r_n = (1 - m)^n r_0 + sum_i m (1 - m)^(n - i) s_i. When ranks take contiguous runs of blocks, each rank's
own run yields its part of that sum; scaled by (1 - m)^(updates on later ranks) the parts add up across ranks
to the single-process value. The parts travel in the same all-reduce as the gradients.
"""
import torch
from torch import nn


def running_norms(model):
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.momentum is not None]


class RunningStatsSync:
    """Snapshot before a rank's updates; `parts` after them; `finish` after the all-reduce of the parts."""

    def __init__(self, model):
        self.norms = running_norms(model)
        self.start = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                      for m in self.norms]

    def parts(self, updates_here, updates_after):
        """This rank's contributions, already scaled for the updates that later ranks apply."""
        parts = []
        for norm, (mean0, var0, _) in zip(self.norms, self.start):
            keep = 1.0 - norm.momentum
            for current, initial in ((norm.running_mean, mean0), (norm.running_var, var0)):
                parts.append((current - keep**updates_here * initial) * keep**updates_after)
        return parts

    def finish(self, reduced_parts, updates_total):
        """Write the single-process result into every BatchNorm layer of this rank."""
        pieces = iter(reduced_parts)
        with torch.no_grad():
            for norm, (mean0, var0, tracked0) in zip(self.norms, self.start):
                keep = 1.0 - norm.momentum
                norm.running_mean.copy_(keep**updates_total * mean0 + next(pieces))
                norm.running_var.copy_(keep**updates_total * var0 + next(pieces))
                norm.num_batches_tracked.copy_(tracked0 + updates_total)
