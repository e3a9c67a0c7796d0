"""Block plans: how a step's examples are cut into blocks of `data.batch_size`.

Every example belongs to exactly one block; a last, smaller block is kept (not dropped), and the caller
weights each block by its size, so the weighted block mean is the exact mean over all examples.
`drop_last=True` (`data.drop_last_block`) leaves that block out instead, as the original code's DataLoader
(drop_last) does: at blocks of 128 the last 80 of 50,000 examples in the step's order never count.
"""
import torch

from fullbatch.data.augmentation import step_generator


def example_order(count, seed, step, device, shuffle):
    """The identity order, or a fresh permutation drawn from (seed, step) when `shuffle`."""
    if not shuffle:
        return None
    return torch.randperm(count, generator=step_generator(seed, step, device, stream=2), device=device)


def block_plan(count, block_size, order=None, drop_last=False):
    """List of blocks: slices of the identity order, or index tensors into `order`."""
    if drop_last:
        count -= count % block_size
    starts = range(0, count, block_size)
    if order is None:
        blocks = [slice(start, min(start + block_size, count)) for start in starts]
    else:
        blocks = [order[start:start + block_size] for start in starts]
    assert sum(block_length(block) for block in blocks) == count, "block plan must cover every example once"
    return blocks


def block_length(block):
    return block.stop - block.start if isinstance(block, slice) else len(block)
