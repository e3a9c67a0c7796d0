"""Sharpness analysis: closed-form eigenvalue and trace on a quadratic, and the option inside training."""
import json
import math

import pytest
import torch

from conftest import TINY, compose_config
from fullbatch.analysis.sharpness import full_batch_hvp, hutchinson_trace, top_eigenvalue
from fullbatch.data.blocks import block_plan
from fullbatch.train import run
from fullbatch.training.full_batch import StepInputs


def _quadratic():
    """Linear regression with squared loss: the Hessian of the mean loss is 2 X^T X / N, known exactly."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 1, bias=False).double()
    inputs = torch.randn(60, 6, dtype=torch.float64) * torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    targets = torch.randn(60, 1, dtype=torch.float64)
    step = StepInputs(model, torch.nn.MSELoss(), [model.weight], inputs, targets, lambda x: x)
    hessian = 2 * inputs.T @ inputs / len(inputs)
    return step, hessian


def test_power_iteration_and_hutchinson_match_the_closed_form_on_a_quadratic():
    step, hessian = _quadratic()
    blocks = block_plan(60, 16)  # uneven blocks: the size-weighted mean must still be exact
    hvp = lambda v: full_batch_hvp(step, blocks, v)  # noqa: E731
    vector = [torch.randn(1, 6, dtype=torch.float64)]
    torch.testing.assert_close(hvp(vector)[0], (hessian @ vector[0].T).T)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert top_eigenvalue(hvp, step.params, iterations=200) == pytest.approx(eigenvalues[-1].item(), rel=1e-6)
    assert hutchinson_trace(hvp, step.params, samples=400) == pytest.approx(torch.trace(hessian).item(), rel=0.1)


def test_sharpness_is_written_to_the_metrics_and_off_costs_nothing(tmp_path):
    cfg = compose_config([*TINY, "hyp=fb1", "hyp.steps=2", "analysis=sharpness", "analysis.check_every_nth_step=1",
                          "analysis.power_iterations=3", "analysis.trace_samples=1", "analysis.blocks=1"])
    run(cfg, output_dir=str(tmp_path / "on"))
    rows = [json.loads(line) for line in open(tmp_path / "on" / "metrics.jsonl")]
    assert rows[0]["lr"] == 0 and float(rows[0]["two_over_lr"]) == math.inf  # warmup: step 0 runs at lr 0
    assert all(math.isfinite(row["top_eigenvalue"]) and "hessian_trace" in row for row in rows)
    assert rows[1]["two_over_lr"] == 2 / rows[1]["lr"]
    run(compose_config([*TINY, "hyp=fb1", "hyp.steps=2"]), output_dir=str(tmp_path / "off"))
    rows = [json.loads(line) for line in open(tmp_path / "off" / "metrics.jsonl")]
    assert not any("top_eigenvalue" in row for row in rows)


def test_curves_add_a_sharpness_panel_when_it_was_measured(tmp_path):
    from PIL import Image

    from fullbatch.visualization.curves import plot_curves

    run(compose_config([*TINY, "hyp=fb1", "hyp.steps=2", "analysis=sharpness", "analysis.check_every_nth_step=1",
                        "analysis.power_iterations=2", "analysis.blocks=1"]), output_dir=str(tmp_path / "on"))
    run(compose_config([*TINY, "hyp=fb1", "hyp.steps=2"]), output_dir=str(tmp_path / "off"))
    with_panel = Image.open(plot_curves([str(tmp_path / "on")], str(tmp_path / "on.png")))
    without = Image.open(plot_curves([str(tmp_path / "off")], str(tmp_path / "off.png")))
    assert with_panel.size[0] > 1.4 * without.size[0]  # a third panel beside loss and accuracy
