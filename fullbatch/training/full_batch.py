"""The exact full-batch gradient: the size-weighted mean of block gradients over every training example.

A block is the unit of BatchNorm statistics (one train-mode forward per block), of the gradient regularizer
and of per-block clipping. Gradients accumulate in fp32 (or the parameters' dtype, if wider) whatever the
autocast precision, with weight len(block) / N, so the result is the mean over all N examples.
`BlockRule` is what happens to a block's gradient before it joins the mean (regularizer, clipping) and
whether blocks may share a forward pass; `mean_gradient` is the same mean computed by all ranks together.
"""
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch

from fullbatch.data.blocks import block_length
from fullbatch.models.ghost_batchnorm import block_groups
from fullbatch.training.batchnorm_sync import RunningStatsSync
from fullbatch.training.gradients import clip_
from fullbatch.training.regularizer import GradRegularizer


@dataclass
class StepInputs:
    """What a step reads: the model, its loss, the (augmented) uint8 images and how to prepare them."""
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    params: list
    images: torch.Tensor
    labels: torch.Tensor
    prepare: callable  # uint8 images -> model inputs (dtype, normalisation, memory format)
    autocast: object = None  # a context-manager factory, or None for full precision

    def forward_loss(self, block):
        host_block = block if isinstance(block, slice) or block.device == self.images.device else block.cpu()
        inputs, labels = self.prepare(self.images[host_block]), self.labels[block]
        with (self.autocast() if self.autocast else nullcontext()):
            outputs = self.model(inputs)
            loss = self.loss_fn(outputs, labels)
        return inputs, labels, outputs, loss


@dataclass(frozen=True)
class BlockRule:
    """The per-block rule of a step, built once from the config: the regularizer acts on chunks of at most
    `sub_batch` examples, then each block's gradient is clipped to `batch_clip` (norm `clip_norm`); with neither,
    up to `merge` equal blocks share one forward pass (BatchNorm statistics still per block)."""
    regularizer: Optional[GradRegularizer] = None
    sub_batch: Optional[int] = None
    batch_clip: Optional[float] = None
    clip_norm: float = 2.0
    merge: int = 1

    @classmethod
    def from_config(cls, hyp, impl, regularizer):
        return cls(regularizer, hyp.sub_batch, hyp.batch_clip, hyp.grad_clip_norm, impl.merge_blocks)

    @property
    def regularized(self):
        return self.regularizer is not None and self.regularizer.active

    @property
    def merges(self):
        return self.merge > 1 and not self.regularized and self.batch_clip is None

    def chunks(self, block):
        """The pieces the regularizer sees: chunks of `sub_batch` when it is active, else the whole block."""
        return split_block(block, self.sub_batch if self.regularized else None)

    def without_per_block_terms(self):
        """The plain mean (no regularizer, no batch clip): what `acc_strength` uses as `pre_grads`."""
        return BlockRule(merge=self.merge)


PLAIN = BlockRule()


def split_block(block, size):
    """Cut a block into chunks of at most `size` examples (for the regularizer's `hyp.sub_batch`)."""
    if size is None or block_length(block) <= size:
        return [block]
    if isinstance(block, slice):
        return [slice(start, min(start + size, block.stop)) for start in range(block.start, block.stop, size)]
    return list(torch.split(block, size))


def merge_blocks(blocks, merge):
    """Group runs of up to `merge` consecutive equal-sized blocks into one indexer; yield (indexer, blocks in it)."""
    group = []
    for block in blocks:
        if group and (len(group) == merge or block_length(block) != block_length(group[0])):
            yield _join(group), len(group)
            group = []
        group.append(block)
    if group:
        yield _join(group), len(group)


def _join(group):
    if len(group) == 1:
        return group[0]
    if isinstance(group[0], slice):
        return slice(group[0].start, group[-1].stop)
    return torch.cat(group)


def accumulation_dtype(param):
    return torch.promote_types(param.dtype, torch.float32)


class GradientMean:
    """Accumulates size-weighted gradients and statistics of the pieces of one step, on the device."""

    def __init__(self, params, total):
        self.total, self.counted = total, 0
        self.grads = [torch.zeros_like(p, dtype=accumulation_dtype(p)) for p in params]
        device = self.grads[0].device
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.penalty_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)

    def add(self, grads, size, loss, outputs, labels):
        torch._foreach_add_(self.grads, [g.to(a.dtype) for g, a in zip(grads, self.grads)], alpha=size / self.total)
        self.loss_sum += loss.detach().double() * size
        self.correct += (outputs.detach().argmax(dim=1) == labels).sum()
        self.counted += size

    def result(self, expected_count):
        """The accumulated mean; asserts that every example of this rank's blocks was counted exactly once."""
        assert self.counted == expected_count, f"step counted {self.counted} examples, expected {expected_count}"
        return self.grads, dict(loss_sum=self.loss_sum, correct=self.correct, penalty_sum=self.penalty_sum,
                                count=self.total)


def full_batch_gradient(step, blocks, rule=PLAIN, pre_grads=None, total=None):
    """Return (grads, stats): grads[i] is the exact example-mean gradient of step.params[i] under `rule`.

    stats holds device tensors: summed loss, correct predictions, summed regularizer penalty, example count.
    `total` is the number of examples the mean is over, when `blocks` is only this rank's share of them.
    """
    own = sum(block_length(block) for block in blocks)
    mean = GradientMean(step.params, own if total is None else total)
    if rule.merges:
        for indexer, groups in merge_blocks(blocks, rule.merge):
            with block_groups(step.model, groups):
                _, labels, outputs, loss = step.forward_loss(indexer)
            mean.add(torch.autograd.grad(loss, step.params), block_length(indexer), loss, outputs, labels)
        return mean.result(own)
    for block in blocks:
        for chunk in rule.chunks(block):
            size = block_length(chunk)
            inputs, labels, outputs, loss = step.forward_loss(chunk)
            grads = torch.autograd.grad(loss, step.params)
            if rule.regularized:
                rule.regularizer(grads, inputs, labels, pre_grads=pre_grads)
                mean.penalty_sum += rule.regularizer.last_penalty.double() * size
            if rule.batch_clip is not None:
                clip_(list(grads), rule.batch_clip, rule.clip_norm)
            mean.add(grads, size, loss, outputs, labels)
    return mean.result(own)


def split_evenly(block, parts):
    """Cut one block (slice or index tensor) into `parts` contiguous pieces whose sizes differ by at most one."""
    length = block_length(block)
    base, extra = divmod(length, parts)
    sizes = [base + (1 if i < extra else 0) for i in range(parts)]
    if isinstance(block, slice):
        starts = [block.start + sum(sizes[:i]) for i in range(parts)]
        return [slice(start, start + size) for start, size in zip(starts, sizes)]
    return list(torch.split(block, sizes))


def mean_gradient(comm, step, blocks, rule=PLAIN, pre_grads=None):
    """Each rank takes its contiguous share of `blocks`; one all-reduce sums gradients, statistics and the
    BatchNorm running-statistics parts, so every rank ends with the single-process result."""
    total = sum(block_length(block) for block in blocks)
    sync = RunningStatsSync(step.model) if comm.active else None
    grads, stats = full_batch_gradient(step, comm.share(blocks), rule, pre_grads, total)
    if not comm.active:
        return grads, stats
    updates = [len(rule.chunks(block)) for block in blocks]  # BatchNorm updates per block
    counts = comm.split_counts(len(blocks))
    per_rank = [sum(updates[sum(counts[:r]):sum(counts[:r + 1])]) for r in range(comm.world_size)]
    parts = sync.parts(per_rank[comm.rank], sum(per_rank[comm.rank + 1:]))
    scalars = torch.stack([stats["loss_sum"], stats["correct"].double(), stats["penalty_sum"]])
    comm.all_reduce_sum_([*grads, *parts, scalars])
    sync.finish(parts, sum(updates))
    stats = dict(loss_sum=scalars[0], correct=scalars[1].round().long(), penalty_sum=scalars[2], count=total)
    return grads, stats
