"""What this project shares with the original code by default: normalisation constants, the per-epoch
schedule in SGD mode, short runs of the paper's presets, and `data.drop_last_block`."""
import dataclasses
import json
import logging

import pytest
import torch

from conftest import TINY, compose_config
from fullbatch.data.blocks import block_length, block_plan
from fullbatch.train import build_trainer, run

NO_WARMUP_OVERRIDE = [o for o in TINY if not o.startswith("hyp.warmup")]


def test_normalisation_constants_are_the_originals_unrounded():
    cifar10 = compose_config(["data=CIFAR10"]).data
    assert list(cifar10.mean) == [0.4914672374725342, 0.4822617471218109, 0.4467701315879822]
    assert list(cifar10.std) == [0.24703224003314972, 0.24348513782024384, 0.26158785820007324]
    cifar100 = compose_config(["data=CIFAR100"]).data
    assert list(cifar100.mean) == [0.5071598291397095, 0.4866936206817627, 0.44120192527770996]
    assert list(cifar100.std) == [0.2673342823982239, 0.2564384639263153, 0.2761504650115967]


def test_sgd_mode_steps_the_schedule_per_epoch_and_the_first_epoch_runs_at_lr_0():
    trainer = build_trainer(compose_config([*TINY, "hyp=base_sgd", "hyp.steps=4", "hyp.warmup=2"]))
    start = [p.detach().clone() for p in trainer.params]
    rows = [trainer.run_step()]
    assert all(torch.equal(p, s) for p, s in zip(trainer.params, start))  # 4 mini-batch updates at lr 0
    momentum = trainer.optimizer.state[trainer.params[0]]["momentum_buffer"]
    assert momentum.abs().sum() > 0  # ... which still filled the momentum buffer
    rows += [trainer.run_step() for _ in range(3)]
    expected = [0.0, 0.05, 0.1, 0.1]  # t / W up to W = 2, then W + 1 = 3 at the peak as well
    assert [row["lr"] for row in rows] == pytest.approx(expected, rel=1e-15, abs=0)
    assert rows[0]["lr"] == 0.0 and not all(torch.equal(p, s) for p, s in zip(trainer.params, start))


def test_gradreg_preset_with_three_steps_trains_despite_its_400_warmup_steps(tmp_path, caplog):
    cfg = compose_config([*NO_WARMUP_OVERRIDE, "hyp=gradreg", "hyp.steps=3", "name=short"])
    assert cfg.hyp.warmup == 400
    with caplog.at_level(logging.WARNING, logger="fullbatch"):
        summary = run(cfg, output_dir=str(tmp_path / "run"))
    assert summary["status"] == "finished"
    assert any("hyp.warmup=400 >= hyp.steps=3" in r.getMessage() for r in caplog.records)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in rows] == pytest.approx([0.0, 0.8 / 400, 1.6 / 400], rel=1e-15, abs=0)
    assert all(row["train_loss"] > 0 and row["pre_clip_norm"] > 0 for row in rows)
    assert rows[-1]["full_loss"] != rows[0]["full_loss"]


def test_drop_last_block_leaves_out_the_last_partial_block_of_the_order():
    blocks = block_plan(50_000, 128, drop_last=True)
    assert len(blocks) == 390 and blocks[-1] == slice(49_792, 49_920)  # the 80 examples 49,920.. never count
    assert sum(block_length(b) for b in block_plan(50_000, 128)) == 50_000
    order = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    dropped = block_plan(300, 128, order, drop_last=True)
    assert torch.equal(torch.cat(dropped), order[:256])
    assert block_plan(256, 64, drop_last=True) == block_plan(256, 64)  # nothing to drop


@pytest.mark.parametrize("stochastic", [False, True])
def test_drop_last_block_trains_exactly_as_on_the_examples_it_keeps(stochastic):
    """256 examples in blocks of 96 with the last 64 dropped equals training on the first 192 alone."""
    common = [*TINY, "hyp=fb1", f"hyp.train_stochastic={stochastic}", "hyp.shuffle=false", "hyp.steps=3",
              "data.batch_size=96", "data.augmentations_train=", "impl.deterministic=true"]
    dropped = build_trainer(compose_config([*common, "data.drop_last_block=true"]))
    kept = build_trainer(compose_config(common))  # the same weights, data cut to the first 192 examples
    data = kept.dataset
    kept.dataset = dataclasses.replace(data, train_images=data.train_images[:192], train_labels=data.train_labels[:192])
    assert dropped.dataset.num_train == 256 and kept.dataset.num_train == 192
    for _ in range(3):
        row_dropped, row_kept = dropped.run_step(), kept.run_step()
        assert row_dropped["train_loss"] == row_kept["train_loss"]
    for a, b in zip(dropped.model.state_dict().values(), kept.model.state_dict().values()):
        assert torch.equal(a, b)
    full = build_trainer(compose_config(common))
    for _ in range(3):
        full.run_step()
    assert not torch.equal(full.params[0], dropped.params[0])  # without the option the last 64 count
