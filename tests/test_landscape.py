"""Loss landscapes: closed-form check, filter normalization, restored weights, figures, and the entry script."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, TINY, run_entry
from fullbatch.models import build_model
from fullbatch.visualization.curves import plot_curves
from fullbatch.visualization.directions import random_direction
from fullbatch.visualization.landscape import evaluate_grid
from fullbatch.visualization.plots import plot_saved

CRUNCH = os.path.join(ROOT, "crunch_loss_landscape.py")
DATA = ["data=synthetic", "data.size=256", "data.test_size=128", "data.batch_size=64", "impl.device=cpu"]


def test_linear_model_with_squared_loss_matches_the_closed_form():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1, bias=False).double()
    inputs, targets = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)
    direction = [torch.randn(1, 5, dtype=torch.float64)]
    alphas = np.linspace(-2, 2, 9)
    values = evaluate_grid(model, [direction], [(a,) for a in alphas], {"train": (inputs, targets)}, lambda x: x, 16,
                           bn_mode="running", loss_fn=torch.nn.functional.mse_loss)["train"][:, 0]
    w, d, x, y = (t.detach().numpy() for t in (model.weight, direction[0], inputs, targets))
    residual, slope = x @ w.T - y, x @ d.T
    expected = [np.mean((residual + a * slope) ** 2) for a in alphas]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_filter_normalized_directions_have_the_model_filter_norms_and_repeat_with_the_seed():
    model = build_model("resnet20", 4, 10)
    params = list(model.parameters())
    direction = random_direction(params, seed=3)
    for param, part in zip(params, direction):
        if param.dim() > 1:
            torch.testing.assert_close(part.flatten(1).norm(dim=1), param.detach().flatten(1).norm(dim=1))
        else:
            assert torch.count_nonzero(part) == 0  # BatchNorm parameters stay put by default
    again, other = random_direction(params, seed=3), random_direction(params, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(direction, again))
    assert not all(torch.equal(a, b) for a, b in zip(direction, other))
    with_bn = random_direction(params, seed=3, normalization="layer", perturb_bn=True)
    for param, part in zip(params, with_bn):
        torch.testing.assert_close(part.norm(), param.detach().norm())


@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_weights_and_batchnorm_statistics_are_unchanged_after_crunching(bn_mode):
    torch.manual_seed(0)
    model = build_model("resnet20", 4, 10)
    model(torch.randn(8, 3, 32, 32))  # non-trivial running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters()]
    images, labels = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (40,))
    values = evaluate_grid(model, [random_direction(params, 0)], [(-0.5,), (0.0,), (0.5,)],
                           {"train": (images, labels)}, lambda x: x.float() / 255, 16, bn_mode)
    assert values["train"].shape == (3, 2) and np.isfinite(values["train"]).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _train(tmp_path, name, *extra):
    run_entry([*TINY, f"name={name}", "hyp=fbclip", "hyp.steps=3", *extra], tmp_path)
    [summary] = glob.glob(str(tmp_path / "outputs" / name / "**" / "summary.json"), recursive=True)
    return os.path.dirname(summary)


def _crunch(tmp_path, *overrides, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, CRUNCH, *DATA, *overrides], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _png_ok(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size[0] > 100 and image.size[1] > 100


@pytest.mark.slow
def test_entry_script_compares_two_runs_and_replots_from_saved_data(tmp_path):
    first = _train(tmp_path, "plain")
    second = _train(tmp_path, "reg", "hyp=gradreg", "hyp.optim.lr=0.4")
    checkpoint = os.path.join(second, "checkpoints", "step-0000003.pt")
    _crunch(tmp_path, "viz=1d", "viz.resolution=5", "viz.train_examples=128",
            f"checkpoints=[{first}/model.pt,{checkpoint}]")
    [out] = glob.glob(str(tmp_path / "outputs" / "landscape" / "**" / "landscape.npz"), recursive=True)
    data = np.load(out)
    labels = ["plain", "reg hyp=gradreg hyp.optim.lr=0.4"]  # the name, and what else differs between the runs
    assert data["train_loss"].shape == (2, 5) and list(data["labels"]) == labels
    assert np.all(data["train_acc"] <= 1) and np.isfinite(data["val_loss"]).all()
    flatness = json.load(open(os.path.join(os.path.dirname(out), "flatness.json")))
    assert set(flatness) == set(labels) and all(np.isfinite(v["loss_increase"]) for v in flatness.values())
    assert _png_ok(os.path.join(os.path.dirname(out), "landscape.png"))
    replot = plot_saved(out, str(tmp_path / "again.png"))
    assert _png_ok(replot)
    curves = plot_curves([first, second], str(tmp_path / "curves.png"))
    assert _png_ok(curves)


@pytest.mark.slow
def test_2d_landscape_and_a_clear_error_for_a_missing_or_incompatible_checkpoint(tmp_path):
    run_dir = _train(tmp_path, "two")
    _crunch(tmp_path, "viz=2d", "viz.resolution=3", "viz.train_examples=64", "viz.val_examples=64",
            f"checkpoint={run_dir}/model.pt", "name=grid")
    [out] = glob.glob(str(tmp_path / "outputs" / "grid" / "**" / "landscape.npz"), recursive=True)
    assert np.load(out)["train_loss"].shape == (1, 3, 3)
    missing = _crunch(tmp_path, "checkpoint=nothing.pt", check=False)
    assert missing.returncode == 2 and missing.stderr.strip() == \
        "fullbatch: checkpoint='nothing.pt' is not allowed: no such file"
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(os.path.join(run_dir, "model.pt"), alone / "model.pt")  # no run config beside it: model=resnet18
    wrong = _crunch(tmp_path, f"checkpoint={alone / 'model.pt'}", check=False)
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "does not fit resnet18 width 64" in wrong.stderr


def test_curves_cli_marks_clipped_steps(tmp_path):
    run_dir = _train(tmp_path, "curve")
    result = subprocess.run([sys.executable, "-m", "fullbatch.visualization.curves", run_dir], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _png_ok(os.path.join(run_dir, "curves.png"))
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert any(row["clipped"] for row in rows)


@pytest.mark.parametrize("option", ["none", "1d", "2d"])
def test_every_viz_option_composes_and_validates(option):
    from conftest import compose_config
    from fullbatch.visualization.crunch import validate_viz

    cfg = compose_config([f"viz={option}", "checkpoint=x.pt"], config_name="crunch")
    validate_viz(cfg.viz)
    assert cfg.viz.name == option and cfg.viz.bn_mode == "batch" and cfg.viz.normalization == "filter"
