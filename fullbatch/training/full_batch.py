"""The exact full-batch gradient: the size-weighted mean of block gradients over every training example.

A block is the unit of BatchNorm statistics (one train-mode forward per block), of the gradient regularizer
and of per-block clipping. Gradients accumulate in fp32 (or the parameters' dtype, if wider) whatever the
autocast precision, with weight len(block) / N, so the result is the mean over all N examples.
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from fullbatch.data.blocks import block_length
from fullbatch.models.ghost_batchnorm import block_groups
from fullbatch.training.gradients import clip_


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


def full_batch_gradient(step, blocks, batch_clip=None, clip_norm=2.0, regularizer=None, sub_batch=None,
                        pre_grads=None, merge=1, total=None):
    """Return (grads, stats): grads[i] is the exact example-mean gradient of step.params[i].

    stats holds device tensors: summed loss, correct predictions, summed regularizer penalty, example count.
    `merge > 1` sends up to that many equal blocks through one forward pass with per-block BatchNorm
    statistics; it applies only when no per-block gradient is needed (no regularizer, no batch clip).
    `total` is the number of examples the mean is over, when `blocks` is only this rank's share of them.
    """
    own = sum(block_length(block) for block in blocks)
    mean = GradientMean(step.params, own if total is None else total)
    use_regularizer = regularizer is not None and regularizer.active
    if merge > 1 and not use_regularizer and batch_clip is None:
        for indexer, groups in merge_blocks(blocks, merge):
            with block_groups(step.model, groups):
                _, labels, outputs, loss = step.forward_loss(indexer)
            mean.add(torch.autograd.grad(loss, step.params), block_length(indexer), loss, outputs, labels)
        return mean.result(own)
    for block in blocks:
        for chunk in split_block(block, sub_batch if use_regularizer else None):
            size = block_length(chunk)
            inputs, labels, outputs, loss = step.forward_loss(chunk)
            grads = torch.autograd.grad(loss, step.params)
            if use_regularizer:
                regularizer(grads, inputs, labels, pre_grads=pre_grads)
                mean.penalty_sum += regularizer.last_penalty.double() * size
            if batch_clip is not None:
                clip_(list(grads), batch_clip, clip_norm)
            mean.add(grads, size, loss, outputs, labels)
    return mean.result(own)
