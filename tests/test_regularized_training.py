"""The gradient regularizer inside the training loop: per block, per sub-batch chunk, and end to end."""
import json
import os

import pytest
import torch

from conftest import TINY, compose_config, run_entry
from fullbatch.data.blocks import block_plan
from fullbatch.training.regularizer import GradRegularizer
from fullbatch.train import build_trainer
from fullbatch.training.full_batch import BlockRule, full_batch_gradient


def _float64_trainer(*overrides):
    # no warmup: the regularizer's correction scales with the lr, which warmup sets to 0 at step 0
    trainer = build_trainer(compose_config([*TINY, "hyp=gradreg", "hyp.warmup=0", "data.augmentations_train=",
                                            *overrides]))
    trainer.model.double()
    trainer.dtype = torch.float64
    return trainer


def _independent(trainer, chunks, implementation="autograd", acc_strength=0.0, pre_grads=None):
    """Regularize each chunk on its own with a fresh GradRegularizer and sum with weights len / N."""
    reg = trainer.hyp.grad_reg
    regularizer = GradRegularizer(trainer.model, trainer.optimizer, torch.nn.CrossEntropyLoss(), reg.block_strength,
                                  acc_strength, reg.eps, implementation)
    images, labels = trainer.dataset.train_images, trainer.dataset.train_labels
    total = None
    for index in chunks:
        x, y = trainer.prepare(images[index]), labels[index]
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(trainer.model(x), y), trainer.params)
        grads = regularizer(grads, x, y, pre_grads=pre_grads)
        weighted = [g * len(index) / len(labels) for g in grads]
        total = weighted if total is None else [t + w for t, w in zip(total, weighted)]
    return total


@pytest.mark.parametrize("sub_batch", [64, 32])
def test_regularized_full_batch_gradient_is_the_mean_of_regularized_chunks(sub_batch):
    trainer = _float64_trainer("hyp.grad_reg.implementation=autograd", f"hyp.sub_batch={sub_batch}")
    inputs = trainer.step_inputs()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    grads, stats = full_batch_gradient(inputs, block_plan(256, 64), trainer.rule)
    trainer.model.load_state_dict(state)
    expected = _independent(trainer, torch.split(torch.arange(256), sub_batch))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)
    assert stats["penalty_sum"].item() > 0


def test_acc_strength_uses_the_full_gradient_as_pre_grads():
    trainer = _float64_trainer("hyp.grad_reg.implementation=autograd", "hyp.grad_reg.acc_strength=0.3")
    inputs = trainer.step_inputs()
    blocks = block_plan(256, 64)
    full, _ = full_batch_gradient(inputs, blocks)
    grads, _ = full_batch_gradient(inputs, blocks, BlockRule(trainer.regularizer, sub_batch=64), pre_grads=full)
    expected = _independent(trainer, torch.split(torch.arange(256), 64), acc_strength=0.3, pre_grads=full)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)


def test_full_loss_includes_the_regularizer_penalty():
    plain = build_trainer(compose_config([*TINY, "hyp=fbclip", "hyp.warmup=0", "hyp.optim.weight_decay=0"]))
    regularized = build_trainer(compose_config([*TINY, "hyp=gradreg", "hyp.warmup=0", "hyp.optim.lr=0.4",
                                                "hyp.optim.weight_decay=0"]))
    row_plain, row_reg = plain.run_step(), regularized.run_step()
    assert row_plain["full_loss"] == pytest.approx(row_plain["train_loss"], rel=1e-12)
    assert row_reg["train_loss"] == pytest.approx(row_plain["train_loss"], rel=1e-6)  # same init, same data
    assert row_reg["full_loss"] > row_reg["train_loss"]


def test_gradreg_preset_runs_end_to_end(tmp_path):
    run_entry([*TINY, "name=reg", "hyp=gradreg", "hyp.steps=2", "data.batch_size=32"], tmp_path)
    [summary_path] = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "outputs") for f in files
                      if f == "summary.json"]
    summary = json.load(open(summary_path))
    assert summary["status"] == "finished" and summary["config"]["hyp"]["grad_reg"]["block_strength"] == 0.5
    rows = [json.loads(line) for line in open(os.path.join(os.path.dirname(summary_path), "metrics.jsonl"))]
    assert all(row["full_loss"] > row["train_loss"] for row in rows)
