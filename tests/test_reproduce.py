"""fullbatch.reproduce: the scale factors of every scale, the balanced subsets, and the whole pipeline at the
smoke scale (runs, the resume of an interrupted row, the report's table and figures)."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import compose_config
from fullbatch.data.subsets import balanced_indices, take_subset
from fullbatch.errors import ConfigError
from fullbatch.reproduce.__main__ import main as reproduce
from fullbatch.reproduce.report import comparisons, ladder
from fullbatch.reproduce.runner import run_folder
from fullbatch.reproduce.scales import ROWS, SCALES, row_overrides


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_scale_keeps_the_papers_ratios_and_constants(scale):
    scale = SCALES[scale]
    runs = {row.name: compose_config(row_overrides(scale, row, 0)) for row in scale.rows()}
    full = {name: compose_config(list(ROWS[name].overrides)) for name in runs}
    assert runs["fb_longer"].hyp.steps == 10 * runs["fb"].hyp.steps  # FB train longer: 10 x Baseline FB
    assert runs["sgd"].hyp.steps == runs["fb"].hyp.steps and runs["sgd"].hyp.train_stochastic  # epochs = steps
    for name, cfg in runs.items():
        preset = full[name]
        assert cfg.hyp.optim.lr == preset.hyp.optim.lr and cfg.hyp.grad_clip == preset.hyp.grad_clip, name
        assert cfg.hyp.grad_reg.block_strength == preset.hyp.grad_reg.block_strength, name
        assert cfg.data.batch_size == preset.data.batch_size and cfg.hyp.scheduler == preset.hyp.scheduler, name
        assert cfg.hyp.steps == round(preset.hyp.steps * scale.factor), name
        assert cfg.model.name == "resnet18" and cfg.model.width == scale.width, name
        if str(cfg.hyp.scheduler) == "cosine-4000" and scale.factor != 1:
            assert cfg.hyp.cosine_horizon == round(4000 * scale.factor), name
    assert (runs["fb_practice"].hyp.shuffle, runs["fb_strong"].hyp.shuffle) == (True, False)
    assert not runs["fb_clip_noaug"].data.augmentations_train and runs["fb_clip"].data.augmentations_train
    assert ("fb_reg_10x" in runs) == (scale.name == "paper")


def test_paper_scale_is_the_papers_settings():
    cfg = compose_config(row_overrides(SCALES["paper"], ROWS["fb_strong"], 0))
    assert (cfg.hyp.steps, cfg.hyp.warmup, cfg.hyp.cosine_horizon, cfg.data.size, cfg.model.width) == (
        3000, 400, None, None, 64)


def test_balanced_subsets_are_balanced_seeded_and_shuffled():
    labels = np.repeat(np.arange(10), 100)  # sorted by class, as some CIFAR copies are
    first = balanced_indices(labels, 1000 - 7, 10, seed=3)
    counts = np.bincount(labels[first], minlength=10)
    assert counts.sum() == 993 and counts.max() - counts.min() == 1 and len(set(first)) == 993
    assert np.array_equal(first, balanced_indices(labels, 993, 10, seed=3))
    assert not np.array_equal(first, balanced_indices(labels, 993, 10, seed=4))
    assert len(set(labels[first[:20]])) > 3  # random order: the first block holds many classes
    images = np.arange(1000)
    assert np.array_equal(take_subset(images, labels, 5, "first", 10, 0, "data.size")[1], labels[:5])
    with pytest.raises(ConfigError, match="data.size=950 is not allowed with data.subset=balanced: class 0 has only 50 examples"):
        balanced_indices(labels[50:], 1000 - 50, 10, seed=0, key="data.size")


def test_a_balanced_subset_of_a_class_sorted_cifar_copy_trains_on_every_class(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:  # every file sorted by class
            pickle.dump({"data": np.zeros((100, 3072), np.uint8), "labels": sorted(list(range(10)) * 10)}, handle)
    from fullbatch.data import load_device_dataset

    cfg = compose_config(["data=CIFAR10", f"data.path={tmp_path}", "data.size=50", "data.test_size=20",
                          "data.subset=balanced", "data.download=false"])
    dataset = load_device_dataset(cfg.data, 3, "cpu")
    assert dataset.seed == 3  # the run's seed drives augmentation; data.subset_seed only picks the examples
    assert np.bincount(dataset.train_labels.numpy(), minlength=10).tolist() == [5] * 10
    assert np.bincount(dataset.test_labels.numpy(), minlength=10).tolist() == [2] * 10


def test_the_smoke_scale_runs_resumes_an_interrupted_row_and_reports(tmp_path, capsys):
    assert reproduce(["--scale", "smoke", "--root", str(tmp_path), "--device", "cpu"]) == 0
    scale = SCALES["smoke"]
    interrupted = run_folder(str(tmp_path), scale, ROWS["fb_clip"], 0)
    for name in ("summary.json", "model.pt", "checkpoints/step-0000010.pt", "checkpoints/step-0000010.json"):
        os.remove(os.path.join(interrupted, name))  # as if stopped after the checkpoint of step 5
    with open(os.path.join(interrupted, "metrics.jsonl")) as handle:
        kept = handle.readlines()[:5]
    with open(os.path.join(interrupted, "metrics.jsonl"), "w") as handle:
        handle.writelines(kept)
    untouched = os.path.getmtime(os.path.join(run_folder(str(tmp_path), scale, ROWS["fb_reg"], 0), "summary.json"))
    assert reproduce(["--scale", "smoke", "--root", str(tmp_path), "--device", "cpu", "--no-landscapes"]) == 0
    summary = json.load(open(os.path.join(interrupted, "summary.json")))
    assert summary["status"] == "finished" and summary["resumed_from"].endswith("step-0000005.pt")
    steps = [json.loads(line)["step"] for line in open(os.path.join(interrupted, "metrics.jsonl"))]
    assert steps == list(range(1, 11))  # one curve: 1-5 before, 6-10 after the resume
    assert os.path.getmtime(os.path.join(run_folder(str(tmp_path), scale, ROWS["fb_reg"], 0), "summary.json")) == \
        untouched  # a row that had ended is not run again
    report = tmp_path / "reports" / "smoke"
    for figure in ("accuracy", "curves", "landscape"):
        assert (report / f"{figure}.png").stat().st_size > 1000 and (report / f"{figure}.pdf").exists(), figure
    text = (report / "README.md").read_text()
    labels = [row.label for row in scale.rows()]
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert [line.split(" | ")[0][2:] for line in table] == labels and len(labels) == 13
    assert "Ranked by mean final validation accuracy:" in text and "paper's finding" in text
    with open(report / "results.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert [run["row"] for run in runs] == [row.name for row in scale.rows()]
    assert all(run["status"] == "finished" and 0 <= float(run["final_val_acc"]) <= 1 for run in runs)
    capsys.readouterr()
    assert reproduce(["--scale", "paper", "--list", "--no-measure", "--rows", "fb_strong,fb_reg_10x"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("python train_with_gradient_descent.py") == 2 and "GPU-hours" in listing
    assert "data.db.rounds=10" in listing


def test_rows_are_compared_with_sgd_and_with_the_row_before_against_the_seed_spread():
    rows = SCALES["micro"].rows()
    accuracies = {"sgd": (0.20, 0.40), "fb": (0.20, 0.22), "fb_longer": (0.37, 0.39), "fb_clip": (0.40, 0.42),
                  "fb_reg": (0.41,), "sgd_noaug": (0.30, 0.32), "fb_noaug": (0.10, 0.12)}
    results = {name: [{"final_val_acc": value} for value in values] for name, values in accuracies.items()}
    against_sgd = {row.name: (label, round(diff, 6), apart) for row, label, diff, apart in comparisons(rows, results)}
    assert against_sgd == {"fb": ("Baseline SGD", -9.0, False),  # 20-22 overlaps SGD's 20-40
                           "fb_longer": ("Baseline SGD", 8.0, False), "fb_clip": ("Baseline SGD", 11.0, False),
                           "fb_reg": ("Baseline SGD", 11.0, None),  # one seed: no spread
                           "fb_noaug": ("Baseline SGD (no augmentation)", -20.0, True)}
    steps = {row.name: (label, round(diff, 6), apart) for row, label, diff, apart in ladder(rows, results)}
    assert steps == {"fb_longer": ("Baseline FB", 17.0, True), "fb_clip": ("FB train longer", 3.0, True),
                     "fb_reg": ("FB clipped", 0.0, None)}  # Baseline FB is compared with SGD above, not here
