"""N x CIFAR in a real LMDB file: content, reuse, safe and single builds, damage detection, training on it."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, TINY, compose_config, run_entry
from fullbatch.data import DatasetUnavailable, load_device_dataset
from fullbatch.data.blocks import block_plan, example_order
from fullbatch.data.lmdb_database import database_path, ensure_database, read_database, recipe, round_images
from fullbatch.data.synthetic import make_synthetic
from fullbatch.training.full_batch import StepInputs, full_batch_gradient

AUGMENTATIONS = ["random_crop", "horizontal_flip"]


def _source(count=40, seed=0):
    (images, labels), _ = make_synthetic(count, 8, 10, seed)
    return images, labels


def _recipe(images, labels, rounds=3, seed=5):
    return recipe("synthetic", images, labels, rounds, AUGMENTATIONS, 4, seed)


def _is_crop_or_flip_of(stored, source):
    padded = F.pad(torch.as_tensor(source), (4,) * 4)
    for view in (padded, padded.flip(2)):
        for r in range(9):
            for c in range(9):
                if torch.equal(view[:, r:r + 32, c:c + 32], torch.as_tensor(stored)):
                    return True
    return False


def test_build_and_read_back_every_round_of_every_image(tmp_path):
    images, labels = _source()
    build_recipe = _recipe(images, labels)
    path = ensure_database(str(tmp_path), build_recipe, images, labels)
    stored, stored_labels = read_database(path, build_recipe)
    assert stored.shape == (3 * 40, 3, 32, 32) and stored.dtype == np.uint8
    assert np.array_equal(stored_labels, np.tile(labels, 3))
    for round_index in range(3):
        expected = round_images(images, AUGMENTATIONS, 4, 5, round_index)
        assert np.array_equal(stored[round_index * 40:(round_index + 1) * 40], expected)
    assert not np.array_equal(stored[:40], stored[40:80])  # rounds differ
    for index in (0, 17, 39):  # each stored image is a padded crop, maybe mirrored, of its source image
        assert _is_crop_or_flip_of(stored[80 + index], images[index])


def test_second_request_reuses_the_file_and_a_changed_recipe_builds_a_new_one(tmp_path, caplog):
    images, labels = _source()
    first = ensure_database(str(tmp_path), _recipe(images, labels), images, labels)
    built_at = os.path.getmtime(first)
    time.sleep(0.05)
    with caplog.at_level(logging.INFO, logger="fullbatch"):
        again = ensure_database(str(tmp_path), _recipe(images, labels), images, labels)
    assert again == first and os.path.getmtime(first) == built_at and "Building" not in caplog.text
    more_rounds = ensure_database(str(tmp_path), _recipe(images, labels, rounds=4), images, labels)
    other_seed = ensure_database(str(tmp_path), _recipe(images, labels, seed=6), images, labels)
    assert len({first, more_rounds, other_seed}) == 3 and all(os.path.isfile(p) for p in (more_rounds, other_seed))


BUILD_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from fullbatch.data.lmdb_database import ensure_database, recipe
from fullbatch.data.synthetic import make_synthetic
(images, labels), _ = make_synthetic(int(sys.argv[2]), 8, 10, 0)
print(ensure_database(sys.argv[1], recipe("synthetic", images, labels, int(sys.argv[3]),
                                          ["random_crop", "horizontal_flip"], 4, 5), images, labels), flush=True)
"""


def _builder(folder, count, rounds):
    return subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(folder), str(count), str(rounds)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_build_killed_midway_leaves_nothing_finished_and_the_next_run_builds(tmp_path):
    images, labels = _source(2000)
    build_recipe = _recipe(images, labels, rounds=40)
    path = database_path(str(tmp_path), build_recipe)
    builder = _builder(tmp_path, 2000, 40)
    deadline = time.time() + 60
    while time.time() < deadline and not any(".tmp-" in name for name in os.listdir(tmp_path)):
        time.sleep(0.01)
    time.sleep(0.3)
    builder.send_signal(signal.SIGKILL)
    builder.wait(timeout=30)
    assert any(".tmp-" in name for name in os.listdir(tmp_path)), "the build finished before it was killed"
    assert not os.path.exists(path)
    with pytest.raises(FileNotFoundError):
        open(path)
    assert ensure_database(str(tmp_path), build_recipe, images, labels) == path
    stored, _ = read_database(path, build_recipe)
    assert len(stored) == 40 * 2000
    assert not any(".tmp-" in name for name in os.listdir(tmp_path))  # the killed build's leftovers are gone


def test_two_concurrent_builders_produce_one_database(tmp_path):
    builders = [_builder(tmp_path, 500, 6) for _ in range(2)]
    outputs = [builder.communicate(timeout=300) for builder in builders]
    assert all(builder.returncode == 0 for builder in builders), outputs
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(paths) == 1
    assert sum("Building" in out for out, _ in outputs) == 1  # the other waited, then read
    assert [name for name in os.listdir(tmp_path) if name.endswith(".lmdb")] == [os.path.basename(paths.pop())]


def test_a_truncated_database_gives_a_clear_error(tmp_path):
    images, labels = _source()
    build_recipe = _recipe(images, labels)
    path = ensure_database(str(tmp_path), build_recipe, images, labels)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with pytest.raises(DatasetUnavailable) as error:
        read_database(path, build_recipe)
    assert path in str(error.value) and "delete it and run again to rebuild it" in str(error.value)


def test_a_truncated_database_stops_the_entry_script_with_one_line(tmp_path):
    common = [*TINY, "data/db=LMDB", "data.db.rounds=2", f"data.db.path={tmp_path / 'db'}", "data.augmentations_train=",
              "hyp=fb1", "hyp.steps=2"]
    run_entry([*common, "name=first"], tmp_path)
    [path] = [os.path.join(tmp_path / "db", n) for n in os.listdir(tmp_path / "db") if n.endswith(".lmdb")]
    with open(path, "r+b") as handle:
        handle.truncate(4096)
    result = run_entry([*common, "name=second"], tmp_path, check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "is damaged" in result.stderr and path in result.stderr


def test_semi_stochastic_steps_cycle_through_the_rounds(tmp_path):
    cfg = compose_config(["data=synthetic", "data.size=32", "data.test_size=8", "data/db=LMDB", "data.db.rounds=3",
                          f"data.db.path={tmp_path}", "data.augmentations_train="])
    dataset = load_device_dataset(cfg.data, seed=0, device="cpu", semi_stochastic=True)
    assert dataset.num_train == 32 and len(dataset.train_labels) == 96
    for step in range(5):
        images, labels = dataset.training_set(step)
        start = (step % 3) * 32
        assert torch.equal(images, dataset.train_images[start:start + 32]) and len(labels) == 32
    full = load_device_dataset(cfg.data, seed=0, device="cpu")
    assert full.num_train == 96 and torch.equal(full.training_set(7)[0], full.train_images)


def test_host_resident_images_give_the_same_gradient(tmp_path):
    overrides = ["data=synthetic", "data.size=64", "data.test_size=8", "data/db=LMDB", "data.db.rounds=2",
                 f"data.db.path={tmp_path}", "data.augmentations_train="]
    on_device = load_device_dataset(compose_config(overrides).data, 0, "cpu")
    on_host = load_device_dataset(compose_config([*overrides, "data.db.in_memory=false"]).data, 0, "cpu")
    torch.manual_seed(0)
    from fullbatch.models import build_model

    model = build_model("resnet20", 4, 10).double()
    order = example_order(128, seed=0, step=0, device="cpu", shuffle=True)
    results = []
    for dataset in (on_device, on_host):
        images, labels = dataset.training_set(0)
        step = StepInputs(model, torch.nn.CrossEntropyLoss(), list(model.parameters()), images, labels,
                          lambda x, d=dataset: d.normalize(x).double())
        results.append(full_batch_gradient(step, block_plan(128, 32, order))[0])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("preset", [["hyp=gradreg"], ["hyp=base_sgd", "hyp.train_semi_stochastic=True"]])
def test_presets_train_end_to_end_on_the_database(tmp_path, preset):
    overrides = [*TINY, "name=nx", "data/db=LMDB", "data.db.rounds=3", f"data.db.path={tmp_path / 'db'}",
                 "data.augmentations_train=", "hyp.steps=2", *preset]
    run_entry(overrides, tmp_path)
    [summary] = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "outputs") for f in files
                 if f == "summary.json"]
    summary = json.load(open(summary))
    assert summary["status"] == "finished" and summary["config"]["data"]["db"]["rounds"] == 3
    rows = [json.loads(line) for line in open(os.path.join(summary["output_dir"], "metrics.jsonl"))]
    assert len(rows) == 2 and all(0 < row["train_loss"] < 10 for row in rows)
    from fullbatch.train import build_trainer

    trainer = build_trainer(compose_config(overrides))  # reads the database the run built
    semi = "hyp.train_semi_stochastic=True" in preset
    assert trainer.dataset.num_train == (256 if semi else 3 * 256)  # one round per step, or all three
    first, second = trainer.dataset.training_set(0)[0], trainer.dataset.training_set(1)[0]
    assert torch.equal(first, second) != semi  # semi-stochastic: step 1 trains on the next round
