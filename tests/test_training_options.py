"""Each configured training option does what it says, checked through the real Trainer on tiny data."""
import math

import pytest
import torch

from conftest import TINY, compose_config
from fullbatch.data.blocks import block_plan
from fullbatch.train import build_trainer, run
from fullbatch.training.evaluation import evaluate
from fullbatch.training.full_batch import full_batch_gradient


def _trainer(*overrides):
    return build_trainer(compose_config([*TINY, *overrides]))


def test_full_batch_step_applies_the_clipped_exact_gradient_with_sgd():
    trainer = _trainer("hyp=fbclip", "hyp.steps=3", "hyp.optim.momentum=0", "hyp.optim.nesterov=false",
                       "hyp.optim.weight_decay=0", "data.augmentations_train=")
    before = [p.detach().clone() for p in trainer.params]
    lr = trainer.optimizer.param_groups[0]["lr"]
    grads, _ = full_batch_gradient(trainer.step_inputs(), block_plan(256, 64))
    buffers = [b.clone() for b in trainer.model.buffers()]
    norm = math.sqrt(sum((g.double() ** 2).sum().item() for g in grads))
    for b, saved in zip(trainer.model.buffers(), buffers):  # undo the reference pass's running statistics
        b.copy_(saved)
    row = trainer.run_step()
    factor = min(1.0, 0.25 / (norm + 1e-6))
    assert row["pre_clip_norm"] == pytest.approx(norm, rel=1e-5) and row["clipped"] == (norm > 0.25)
    for p, b, g in zip(trainer.params, before, grads):
        torch.testing.assert_close(p.detach(), b - lr * factor * g, rtol=1e-5, atol=1e-7)


def test_ema_evaluates_the_exponential_average_of_the_weights():
    trainer = _trainer("hyp=fb1", "hyp.steps=3", "hyp.warmup=0", "hyp.evaluate_ema=true", "hyp.eval_ema_momentum=0.9")
    trainer.run_step()
    first = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.run_step()
    second = [p.detach().clone() for p in trainer.model.parameters()]
    for averaged, a, b in zip(trainer.ema.module.parameters(), first, second):
        torch.testing.assert_close(averaged.detach(), 0.9 * a + 0.1 * b)
    loss, acc = trainer.validate()["val_loss"], trainer.validate()["val_acc"]
    expected = evaluate(trainer.ema.module, trainer.dataset.test_images, trainer.dataset.test_labels, trainer.prepare,
                        trainer.cfg.impl.eval_batch_size)
    assert loss.item() == expected[0].item() and acc.item() == expected[1].item()


def test_test_time_flips_average_the_probabilities_of_both_views():
    trainer = _trainer("hyp=fb1", "hyp.test_time_flips=true")
    model, images, labels = trainer.model, trainer.dataset.test_images[:32], trainer.dataset.test_labels[:32]
    loss, acc = evaluate(model, images, labels, trainer.prepare, 10, flips=True)
    model.eval()
    with torch.no_grad():
        x = trainer.prepare(images)
        probs = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    assert loss.item() == pytest.approx(torch.nn.functional.nll_loss(probs.log(), labels).item(), rel=1e-5)
    assert acc.item() == (probs.argmax(1) == labels).double().mean().item()


def test_label_smoothing_enters_the_training_loss():
    trainer = _trainer("hyp=fb1", "hyp.label_smoothing=0.2")
    inputs = trainer.step_inputs()
    _, stats = full_batch_gradient(inputs, block_plan(256, 64))
    expected = sum(torch.nn.functional.cross_entropy(trainer.model(inputs.prepare(inputs.images[i:i + 64])),
                                                     inputs.labels[i:i + 64], label_smoothing=0.2, reduction="sum")
                   for i in range(0, 256, 64))
    assert stats["loss_sum"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_stochastic_step_clips_each_mini_batch_and_counts_them():
    trainer = _trainer("hyp=base_sgd", "hyp.grad_clip=1e-3", "data.batch_size=32")
    row = trainer.run_step()
    assert row["clipped"] == 1.0 and row["pre_clip_norm"] > 1e-3
    assert trainer.optimizer.state[trainer.params[0]]["momentum_buffer"] is not None


def test_mixed_precision_on_cpu_keeps_fp32_gradients_and_matches_fp32_loosely():
    fp32, bf16 = _trainer("hyp=fb1"), _trainer("hyp=fb1", "impl.mixed_precision=true")
    a, b = fp32.run_step(), bf16.run_step()
    assert all(p.grad.dtype == torch.float32 for p in bf16.params)
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)


def test_channels_last_gives_the_same_gradient_up_to_reordering():
    """In float64, where reordering errors stay far below the tolerance (a width-4 net amplifies fp32 ones)."""
    plain, nhwc = _trainer("hyp=fb1"), _trainer("hyp=fb1", "impl.memory=channels_last")
    for trainer in (plain, nhwc):
        trainer.model.double()
        trainer.dtype = torch.float64
    a = full_batch_gradient(plain.step_inputs(), block_plan(256, 64))[0]
    b = full_batch_gradient(nhwc.step_inputs(), block_plan(256, 64))[0]
    assert nhwc.params[0].is_contiguous(memory_format=torch.channels_last)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_stop_at_full_training_accuracy_counts_consecutive_steps():
    trainer = _trainer("hyp=fb1", "hyp.stop_at_full_training_accuracy=2")
    decisions = [trainer.should_stop_early({"train_acc": acc}) for acc in (1.0, 0.99, 1.0, 1.0)]
    assert decisions == [False, False, False, True]


def test_dryrun_takes_two_steps_on_four_blocks(tmp_path):
    cfg = compose_config([*TINY, "hyp=fb1", "hyp.steps=50", "dryrun=true", "data.batch_size=16"])
    summary = run(cfg, output_dir=str(tmp_path))
    assert summary["steps"] == 2 and summary["status"] == "finished"
    assert build_trainer(cfg).dataset.num_train == 4 * 16


def test_compiled_model_gives_the_eager_gradient():
    """impl.compile=true: the compiled forward/backward equals eager execution (float64, so reordering is tiny)."""
    eager, compiled = _trainer("hyp=fb1"), _trainer("hyp=fb1", "impl.compile=true")
    for trainer in (eager, compiled):
        trainer.model.double()
        trainer.dtype = torch.float64
    assert compiled.forward_model is not compiled.model
    a = full_batch_gradient(eager.step_inputs(), block_plan(256, 64))[0]
    b = full_batch_gradient(compiled.step_inputs(), block_plan(256, 64))[0]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)
