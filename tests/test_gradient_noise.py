"""Per-block gradient statistics: zero noise for identical blocks, growing as blocks differ; analysis presets."""
import json
import math
import os

import pytest
import torch

from conftest import TINY, compose_config
from fullbatch.analysis.gradient_noise import block_gradient_statistics
from fullbatch.data.blocks import block_plan
from fullbatch.models import build_model
from fullbatch.train import run
from fullbatch.training.full_batch import StepInputs


def _step(images, labels):
    torch.manual_seed(0)
    model = build_model("resnet20", 4, 10).double()
    return StepInputs(model, torch.nn.CrossEntropyLoss(), list(model.parameters()), images, labels,
                      lambda x: x.double())


def test_identical_blocks_have_no_gradient_noise():
    block = torch.randn(16, 3, 32, 32)
    labels = torch.randint(0, 10, (16,))
    stats = block_gradient_statistics(_step(block.repeat(4, 1, 1, 1), labels.repeat(4)), block_plan(64, 16))
    assert stats["block_ratio"] == pytest.approx(1.0, abs=1e-10)
    assert abs(stats["noise_scale"]) < 1e-8 and stats["grad_snr"] > 1e8


def test_noise_grows_as_blocks_differ_and_matches_an_independent_computation():
    torch.manual_seed(1)
    base = torch.randn(16, 3, 32, 32)
    labels = torch.randint(0, 10, (64,))
    scales = []
    for spread in (0.1, 1.0):
        images = base.repeat(4, 1, 1, 1) + spread * torch.randn(64, 3, 32, 32)
        step = _step(images, labels)
        stats = block_gradient_statistics(step, block_plan(64, 16))
        grads = []
        for index in torch.split(torch.arange(64), 16):
            loss = torch.nn.functional.cross_entropy(step.model(images[index].double()), labels[index])
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, step.params)]))
        grads = torch.stack(grads)
        mean = grads.mean(0)
        small, full = (grads**2).sum(1).mean().item(), (mean**2).sum().item()
        assert stats["block_ratio"] == pytest.approx(small / full, rel=1e-9)
        expected = ((small - full) / (1 / 16 - 1 / 64)) / ((64 * full - 16 * small) / 48)
        assert stats["noise_scale"] == pytest.approx(expected, rel=1e-9)
        scales.append(stats["noise_scale"])
    assert 0 < scales[0] < scales[1]


@pytest.mark.parametrize("preset, rows_with_stats", [("none", []), ("limited", [2, 3]), ("final", [3]),
                                                     ("full", [2, 3])])
def test_analysis_presets_write_their_measurements_when_due(tmp_path, preset, rows_with_stats):
    cfg = compose_config([*TINY, "hyp=fb1", "hyp.steps=3", f"analysis={preset}", "analysis.check_every_nth_step=2",
                          "analysis.power_iterations=2", "analysis.trace_samples=1", "analysis.blocks=2",
                          "analysis.save_models_every_nth_step=2" if preset == "full" else "analysis.blocks=2"])
    run(cfg, output_dir=str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [row["step"] for row in rows if "block_ratio" in row] == rows_with_stats
    if preset in ("full", "final"):
        assert all(math.isfinite(row["top_eigenvalue"]) for row in rows if row["step"] in rows_with_stats)
    assert os.path.isfile(tmp_path / "models" / "step-0000002.pt") == (preset == "full")
