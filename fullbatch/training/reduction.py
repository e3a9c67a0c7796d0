"""The mean gradient of a set of blocks, computed by all ranks together and identical on every rank afterwards."""
import torch

from fullbatch.data.blocks import block_length
from fullbatch.training.batchnorm_sync import RunningStatsSync
from fullbatch.training.full_batch import full_batch_gradient, split_block


def split_evenly(block, parts):
    """Cut one block (slice or index tensor) into `parts` contiguous pieces whose sizes differ by at most one."""
    length = block_length(block)
    base, extra = divmod(length, parts)
    sizes = [base + (1 if i < extra else 0) for i in range(parts)]
    if isinstance(block, slice):
        starts = [block.start + sum(sizes[:i]) for i in range(parts)]
        return [slice(start, start + size) for start, size in zip(starts, sizes)]
    return list(torch.split(block, sizes))


def mean_gradient(comm, step, blocks, *, batch_clip=None, clip_norm=2.0, regularizer=None, sub_batch=None,
                  pre_grads=None, merge=1):
    """Each rank takes its contiguous share of `blocks`; one all-reduce sums gradients, statistics and the
    BatchNorm running-statistics parts, so every rank ends with the single-process result."""
    total = sum(block_length(block) for block in blocks)
    sync = RunningStatsSync(step.model) if comm.active else None
    grads, stats = full_batch_gradient(step, comm.share(blocks), batch_clip, clip_norm, regularizer, sub_batch,
                                       pre_grads, merge, total)
    if not comm.active:
        return grads, stats
    chunked = regularizer is not None and regularizer.active
    updates = [len(split_block(block, sub_batch if chunked else None)) for block in blocks]  # BatchNorm updates
    counts = comm.split_counts(len(blocks))
    per_rank = [sum(updates[sum(counts[:r]):sum(counts[:r + 1])]) for r in range(comm.world_size)]
    parts = sync.parts(per_rank[comm.rank], sum(per_rank[comm.rank + 1:]))
    scalars = torch.stack([stats["loss_sum"], stats["correct"].double(), stats["penalty_sum"]])
    comm.all_reduce_sum_([*grads, *parts, scalars])
    sync.finish(parts, sum(updates))
    stats = dict(loss_sum=scalars[0], correct=scalars[1].round().long(), penalty_sum=scalars[2], count=total)
    return grads, stats
