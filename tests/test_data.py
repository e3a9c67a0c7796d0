"""Data: CIFAR files in the standard layout, the synthetic set, and batched on-device augmentation."""
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from fullbatch.data import DatasetUnavailable, load_cifar, load_device_dataset
from fullbatch.data.augmentation import augment, horizontal_flip, random_crop, step_generator
from fullbatch.data.synthetic import make_synthetic


def _write_cifar10(root, per_batch=20, seed=0):
    """Write a small dataset in the python-format layout of the official release."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": rows, "labels": labels}, handle)
        written[name] = (rows, labels)
    return written


def test_cifar_files_are_read_in_channel_major_layout(tmp_path):
    written = _write_cifar10(tmp_path)
    (train_x, train_y), (test_x, test_y) = load_cifar("CIFAR10", str(tmp_path), download=False)
    assert train_x.shape == (100, 3, 32, 32) and train_x.dtype == np.uint8 and test_x.shape == (20, 3, 32, 32)
    rows, labels = written["data_batch_2"]
    assert np.array_equal(train_x[20:40].reshape(20, -1), rows) and train_y[20:40].tolist() == labels
    red_of_first_pixel = written["data_batch_1"][0][0, 0]
    assert train_x[0, 0, 0, 0] == red_of_first_pixel
    assert np.array_equal(test_y, written["test_batch"][1])


def test_missing_files_give_one_clear_error(tmp_path):
    with pytest.raises(DatasetUnavailable) as error:
        load_cifar("CIFAR10", str(tmp_path), download=False)
    message = str(error.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "data.path" in message
    assert "\n" not in message


def test_device_dataset_cuts_sizes_and_checks_labels(tmp_path):
    _write_cifar10(tmp_path)
    cfg = compose_config([f"data.path={tmp_path}", "data.size=50", "data.test_size=10", "data.download=false"])
    dataset = load_device_dataset(cfg.data, seed=0, device="cpu")
    assert dataset.train_images.shape == (50, 3, 32, 32) and dataset.test_labels.shape == (10,)
    cfg.data.classes = 2
    with pytest.raises(DatasetUnavailable, match="labels must lie in"):
        load_device_dataset(cfg.data, seed=0, device="cpu")


def test_synthetic_data_is_deterministic_from_its_seed():
    (a, la), (ta, tla) = make_synthetic(64, 16, 10, seed=3)
    (b, lb), _ = make_synthetic(64, 16, 10, seed=3)
    (c, _), _ = make_synthetic(64, 16, 10, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == (64, 3, 32, 32) and ta.shape == (16, 3, 32, 32)


def _windows(image, padding):
    padded = F.pad(image, (padding,) * 4)
    size = image.shape[-1]
    return [padded[:, r:r + size, c:c + size] for r in range(2 * padding + 1) for c in range(2 * padding + 1)]


def test_random_crop_is_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (16, 3, 32, 32), dtype=torch.uint8)
    cropped = random_crop(images, 4, torch.Generator().manual_seed(0))
    offsets_seen = set()
    for image, crop in zip(images, cropped):
        matches = [i for i, window in enumerate(_windows(image, 4)) if torch.equal(window, crop)]
        assert len(matches) == 1
        offsets_seen.add(matches[0])
    assert len(offsets_seen) > 4  # offsets differ between images


def test_flip_mirrors_about_half_of_the_images():
    images = torch.randint(0, 256, (400, 3, 32, 32), dtype=torch.uint8)
    flipped = horizontal_flip(images, torch.Generator().manual_seed(0))
    mirrored = sum(torch.equal(f, i.flip(2)) for f, i in zip(flipped, images))
    kept = sum(torch.equal(f, i) for f, i in zip(flipped, images))
    assert mirrored + kept == 400 and 150 < mirrored < 250


def test_augmentation_is_reproducible_from_the_seed_and_differs_across_steps():
    cfg = compose_config(["data=synthetic", "data.size=64", "data.test_size=8"])
    dataset = load_device_dataset(cfg.data, seed=7, device="cpu")
    step0, again, step1 = dataset.training_images(0), dataset.training_images(0), dataset.training_images(1)
    assert torch.equal(step0, again) and not torch.equal(step0, step1)
    other_seed = load_device_dataset(cfg.data, seed=8, device="cpu").training_images(0)
    assert not torch.equal(step0, other_seed)
    cfg.data.augmentations_train = ""
    plain = load_device_dataset(cfg.data, seed=7, device="cpu")
    assert plain.training_images(0) is plain.train_images


def test_augment_applies_nothing_for_an_empty_list():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert augment(images, (), 4, step_generator(0, 0, "cpu")) is images


REAL_CIFAR = os.environ.get("FULLBATCH_CIFAR_ROOT")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CIFAR, reason="set FULLBATCH_CIFAR_ROOT to a folder holding cifar-10-batches-py/")
def test_real_cifar10_small_resnet_learns_in_a_few_full_batch_steps(tmp_path):
    from fullbatch.train import run

    cfg = compose_config([f"data.path={REAL_CIFAR}", "data.download=false", "data.size=2000", "data.test_size=1000",
                          "data.batch_size=250", "model=resnet20", "model.width=8", "hyp=fb1", "hyp.steps=12",
                          "hyp.warmup=2", "hyp.scheduler=none", "impl.device=cpu", "impl.validate_every_nth_step=12"])
    summary = run(cfg, output_dir=str(tmp_path / "run"))
    rows = [__import__("json").loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    losses = [row["train_loss"] for row in rows]
    assert summary["status"] == "finished" and len(rows) == 12
    assert losses[-1] < losses[0] - 0.1, losses
    assert rows[-1]["train_acc"] > 0.2 and summary["final_val_acc"] > 0.15, (rows[-1], summary["final_val_acc"])


def test_failed_download_gives_one_clear_error(tmp_path, monkeypatch):
    from fullbatch.data import cifar

    unreachable = dict(cifar.CIFAR["CIFAR10"], url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setitem(cifar.CIFAR, "CIFAR10", unreachable)  # a real download attempt to a closed local port
    with pytest.raises(DatasetUnavailable) as error:
        load_cifar("CIFAR10", str(tmp_path), download=True)
    message = str(error.value)
    assert "the download failed" in message and str(tmp_path / "cifar-10-batches-py") in message
