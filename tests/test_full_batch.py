"""The full-batch gradient is the exact example mean of block gradients (float64 references)."""
import pytest
import torch

from fullbatch.data.blocks import block_length, block_plan, example_order
from fullbatch.models import build_model
from fullbatch.training.full_batch import BlockRule, StepInputs, full_batch_gradient

COUNT, BLOCK = 200, 64  # blocks of 64, 64, 64 and an uneven last block of 8


def _setup(seed=0):
    torch.manual_seed(seed)
    model = build_model("resnet20", 4, 10).double()
    images = torch.randint(0, 256, (COUNT, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (COUNT,))
    params = [p for p in model.parameters()]
    prepare = lambda x: (x.double() / 255.0 - 0.5) / 0.25  # noqa: E731
    return StepInputs(model, torch.nn.CrossEntropyLoss(), params, images, labels, prepare), model


def _reference(model, images, labels, index_blocks):
    """Independent: per block, mean loss -> backward into .grad scaled by len/N, summed by autograd."""
    model.zero_grad()
    for index in index_blocks:
        x = (images[index].double() / 255.0 - 0.5) / 0.25
        loss = torch.nn.functional.cross_entropy(model(x), labels[index], reduction="sum") / COUNT
        loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("shuffle", [False, True])
def test_full_batch_gradient_equals_blockwise_mean_in_float64(shuffle):
    inputs, model = _setup()
    order = example_order(COUNT, seed=5, step=3, device="cpu", shuffle=shuffle)
    blocks = block_plan(COUNT, BLOCK, order)
    assert [block_length(b) for b in blocks] == [64, 64, 64, 8]
    grads, stats = full_batch_gradient(inputs, blocks)
    indices = order if order is not None else torch.arange(COUNT)
    reference = _reference(model, inputs.images, inputs.labels, torch.split(indices, BLOCK))
    for grad, ref in zip(grads, reference):
        assert grad.dtype == torch.float64
        torch.testing.assert_close(grad, ref, rtol=1e-11, atol=1e-13)
    assert stats["count"] == COUNT


def test_every_example_counts_once_per_step():
    order = example_order(COUNT, seed=1, step=7, device="cpu", shuffle=True)
    blocks = block_plan(COUNT, BLOCK, order)
    seen = torch.cat(blocks)
    assert torch.equal(seen.sort().values, torch.arange(COUNT))
    plain = block_plan(COUNT, BLOCK)
    assert sum(block_length(b) for b in plain) == COUNT and plain[-1] == slice(192, 200)


def test_shuffled_order_changes_with_step_and_repeats_with_seed():
    first = example_order(COUNT, seed=1, step=0, device="cpu", shuffle=True)
    assert torch.equal(first, example_order(COUNT, seed=1, step=0, device="cpu", shuffle=True))
    assert not torch.equal(first, example_order(COUNT, seed=1, step=1, device="cpu", shuffle=True))


def test_loss_and_accuracy_statistics_are_example_means():
    inputs, model = _setup()
    _, stats = full_batch_gradient(inputs, block_plan(COUNT, BLOCK))
    model.zero_grad()
    losses, correct = [], 0
    for index in torch.split(torch.arange(COUNT), BLOCK):
        out = model(inputs.prepare(inputs.images[index]))
        losses.append(torch.nn.functional.cross_entropy(out, inputs.labels[index], reduction="sum"))
        correct += (out.argmax(1) == inputs.labels[index]).sum().item()
    assert stats["loss_sum"].item() == pytest.approx(torch.stack(losses).sum().item(), rel=1e-12)
    assert stats["correct"].item() == correct


def test_batch_clip_clips_each_block_before_averaging():
    inputs, model = _setup()
    clip = 1e-3
    grads, _ = full_batch_gradient(inputs, block_plan(COUNT, BLOCK), BlockRule(batch_clip=clip))
    expected = None
    for index in torch.split(torch.arange(COUNT), BLOCK):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs.prepare(inputs.images[index])), inputs.labels[index]).backward()
        block = [p.grad.clone() for p in model.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in block))
        scale = min(1.0, clip / (norm.item() + 1e-6)) * len(index) / COUNT
        expected = [g * scale for g in block] if expected is None else [e + g * scale for e, g in zip(expected, block)]
    for grad, ref in zip(grads, expected):
        torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shuffle, merge", [(False, 2), (False, 4), (True, 3)])
def test_merged_blocks_equal_the_block_loop_including_batchnorm_running_statistics(shuffle, merge):
    """Several blocks per forward pass with per-block BatchNorm: same gradient, loss and running statistics."""
    inputs, model = _setup()
    order = example_order(COUNT, seed=2, step=0, device="cpu", shuffle=shuffle)
    blocks = block_plan(COUNT, BLOCK, order)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    plain, plain_stats = full_batch_gradient(inputs, blocks)
    plain_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    merged, merged_stats = full_batch_gradient(inputs, blocks, BlockRule(merge=merge))
    for a, b in zip(plain, merged):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, plain_state[key], rtol=1e-11, atol=1e-13)
    assert merged_stats["loss_sum"].item() == pytest.approx(plain_stats["loss_sum"].item(), rel=1e-12)
    assert merged_stats["correct"].item() == plain_stats["correct"].item()


def test_merged_blocks_keep_channels_last():
    inputs, model = _setup()
    model.to(memory_format=torch.channels_last)
    prepare = inputs.prepare
    inputs.prepare = lambda x: prepare(x).contiguous(memory_format=torch.channels_last)
    plain, _ = full_batch_gradient(inputs, block_plan(COUNT, BLOCK))
    merged, _ = full_batch_gradient(inputs, block_plan(COUNT, BLOCK), BlockRule(merge=3))
    for a, b in zip(plain, merged):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
