"""Figures a researcher can read: runs labelled by what differs, resumed runs joined, markers on sparse series,
accuracy panels, PDFs beside PNGs, landscape titles and flatness; and the landscape tool reads the run's data."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT, TINY, run_entry
from fullbatch.visualization.curves import plot_curves
from fullbatch.visualization.plots import plot_saved
from fullbatch.visualization.runs import distinguishing_labels, joined_metrics, newest_of_chains

CRUNCH = os.path.join(ROOT, "crunch_loss_landscape.py")


def _fake_run(folder, name, overrides, steps, resumed_from=None, clipped=()):
    os.makedirs(os.path.join(folder, ".hydra"))
    with open(os.path.join(folder, ".hydra", "overrides.yaml"), "w") as handle:
        yaml.safe_dump([f"name={name}", *overrides, "data.path=/x"], handle)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as handle:
        for step in steps:
            row = dict(step=step, train_loss=1.0 / step, train_acc=0.1 * step, clipped=step in clipped)
            if step == steps[-1]:
                row.update(val_loss=2.0, val_acc=0.3)
            handle.write(json.dumps(row) + "\n")
    with open(os.path.join(folder, "summary.json"), "w") as handle:
        json.dump(dict(name=name, resumed_from=resumed_from), handle)
    return folder


def test_runs_are_labelled_by_what_differs_between_them(tmp_path):
    runs = [_fake_run(str(tmp_path / f"{i}"), "sweep", [hyp, f"seed={seed}", "model.width=4"], [1, 2])
            for i, (hyp, seed) in enumerate([("hyp=fb1", 0), ("hyp=fbclip", 0), ("hyp=fbclip", 1)])]
    assert distinguishing_labels(runs) == ["hyp=fb1 seed=0", "hyp=fbclip seed=0", "hyp=fbclip seed=1"]
    same = [_fake_run(str(tmp_path / "same" / f"{i}"), "again", ["hyp=fb1"], [1]) for i in range(2)]
    assert distinguishing_labels(same) == ["again (0)", "again (1)"]  # counted like the job folders
    named = [_fake_run(str(tmp_path / n), n, ["hyp=fb1"], [1]) for n in ("fb_a", "fb_b")]
    assert distinguishing_labels(named) == ["fb_a", "fb_b"]


def test_a_resumed_run_is_one_curve_and_its_earlier_folder_is_not_drawn_twice(tmp_path):
    first = _fake_run(str(tmp_path / "first"), "r", ["hyp=fb1"], [1, 2, 3, 4])
    second = _fake_run(str(tmp_path / "second"), "r", ["hyp=fb1"], [4, 5, 6],
                       resumed_from=os.path.join(first, "checkpoints", "step-0000003.pt"))
    assert [row["step"] for row in joined_metrics(second)] == [1, 2, 3, 4, 5, 6]
    assert newest_of_chains([first, second]) == [second]
    out = plot_curves([first, second], str(tmp_path / "curves.png"), title="r")
    assert os.path.getsize(out) > 1000 and os.path.getsize(tmp_path / "curves.pdf") > 1000


def test_curve_figure_has_loss_and_accuracy_panels_markers_and_black_clipped_steps(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    run = _fake_run(str(tmp_path / "one"), "c", ["hyp=fbclip"], [1, 2, 3], clipped=(2,))
    saved = []
    monkeypatch.setattr("fullbatch.visualization.curves.save_figure", lambda figure, out: saved.append(figure) or out)
    plot_curves([run], str(tmp_path / "c.png"))
    loss_axis, acc_axis = saved[0].axes
    assert (loss_axis.get_title(), acc_axis.get_title()) == ("loss", "accuracy")
    validation = [line for line in loss_axis.get_lines() if line.get_label() == "c: validation"][0]
    assert validation.get_marker() == "o" and len(validation.get_xdata()) == 1  # a single point is visible
    [clipped] = loss_axis.collections
    assert clipped.get_label() == "c: clipped step" and tuple(clipped.get_facecolor()[0][:3]) == (0.0, 0.0, 0.0)
    assert [line.get_label() for line in acc_axis.get_lines()] == ["c: train", "c: validation"]
    plt.close(saved[0])


def _landscape(tmp_path, two_d=False):
    alphas = np.linspace(-1, 1, 5)
    loss = np.stack([2 + alphas**2, 2 + 3 * alphas**2])
    data = dict(alphas=alphas, labels=np.array(["hyp=fb1", "hyp=fbclip"]), train_loss=loss, val_loss=loss + 0.1,
                train_acc=np.full((2, 5), 0.5), val_acc=np.full((2, 5), 0.4),
                config=yaml.safe_dump(dict(data=dict(name="CIFAR10"), viz=dict(flatness_radius=0.5,
                                                                               normalization="filter"))))
    if two_d:
        grid = 2 + alphas[:, None] ** 2 + alphas[None, :] ** 2
        data.update(betas=alphas, train_loss=np.stack([grid, 2 * grid]), val_loss=np.stack([grid, 2 * grid]),
                    train_acc=np.full((2, 5, 5), 0.5), val_acc=np.full((2, 5, 5), 0.4))
    np.savez(tmp_path / "landscape.npz", **data)
    return str(tmp_path / "landscape.npz")


@pytest.mark.parametrize("two_d", [False, True])
def test_landscape_figures_name_the_data_show_flatness_and_are_also_pdf(tmp_path, monkeypatch, two_d):
    import matplotlib.pyplot as plt

    saved = []
    monkeypatch.setattr("fullbatch.visualization.plots.save_figure", lambda figure, out: saved.append(figure) or out)
    plot_saved(_landscape(tmp_path, two_d))
    figure = saved[0]
    assert "on CIFAR10" in figure._suptitle.get_text()
    if two_d:
        titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
        assert titles == ["hyp=fb1\n+0.25 at distance 0.5", "hyp=fbclip\n+0.5 at distance 0.5"]
        assert len(figure.axes) == 4  # two panels and their colorbars
    else:
        labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
        assert labels[0] == "hyp=fb1 (train; +0.25 at 0.5)" and labels[2] == "hyp=fbclip (train; +0.75 at 0.5)"
        ticks = [text.get_text() for text in figure.axes[0].yaxis.get_minorticklabels() if text.get_text()]
        assert all("10^" not in tick and "times" not in tick for tick in ticks)
    plt.close(figure)
    monkeypatch.undo()
    plot_saved(_landscape(tmp_path, two_d))
    assert (tmp_path / "landscape.png").exists() and (tmp_path / "landscape.pdf").exists()


@pytest.mark.slow
def test_the_landscape_tool_reads_the_runs_data_and_refuses_other_data(tmp_path):
    run_entry([*TINY, "name=syn", "hyp=fb1", "hyp.steps=2"], tmp_path)
    [summary] = glob.glob(str(tmp_path / "outputs" / "syn" / "**" / "summary.json"), recursive=True)
    model = os.path.join(os.path.dirname(summary), "model.pt")
    env = dict(os.environ, PYTHONPATH=ROOT)
    common = [sys.executable, CRUNCH, f"checkpoint={model}", "viz.resolution=3", "viz.train_examples=64",
              "viz.val_examples=64", "impl.device=cpu"]
    plain = subprocess.run(common, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]  # no data= given: the run's synthetic data, no download
    assert "Crunching 1 model(s) x 3 points on synthetic" in plain.stdout + plain.stderr
    assert "model 1/1 (syn) point (1.0,): 3/3 | elapsed" in plain.stdout + plain.stderr
    other = subprocess.run([*common, "data=CIFAR10"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert other.returncode == 2 and other.stderr.strip().splitlines() == [
        f"fullbatch: data.name='CIFAR10' is not allowed for {model}: its run was trained with data.name='synthetic'; "
        "leave data out to use the run's own, or set allow_other_data=true"]
