"""Tiny ImageNet from its standard folder layout (real JPEG files written here), trained end to end."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config
from fullbatch.data import DatasetUnavailable
from fullbatch.data.tiny_imagenet import load_tiny_imagenet
from fullbatch.train import run

WNIDS = ["n01443537", "n01629819", "n01641577"]


def _write_folder(root, per_class=4, val_per_class=2):
    folder = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    annotations = []
    for label, wnid in enumerate(WNIDS):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((64, 64, 3), 40 + 80 * label, dtype=np.uint8) + rng.integers(0, 20, (64, 64, 3), np.uint8)
            Image.fromarray(pixels).save(images / f"{wnid}_{i}.JPEG", quality=95)
        for i in range(val_per_class):
            name = f"val_{label}_{i}.JPEG"
            Image.fromarray(np.full((64, 64, 3), 40 + 80 * label, dtype=np.uint8)).save(folder / "val" / "images" / name)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


def test_the_folder_layout_is_read_with_labels_in_wnid_order_and_cached(tmp_path):
    root = _write_folder(tmp_path)
    (train_x, train_y), (val_x, val_y) = load_tiny_imagenet(str(root), download=False)
    assert train_x.shape == (12, 3, 64, 64) and train_x.dtype == np.uint8 and val_x.shape == (6, 3, 64, 64)
    assert train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and val_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert abs(int(train_x[4].mean()) - 130) < 15  # the second class's images are the brighter ones
    assert (root / "tiny-imagenet-200" / "fullbatch-arrays.npz").is_file()
    (cached_x, _), _ = load_tiny_imagenet(str(root), download=False)
    assert np.array_equal(cached_x, train_x)


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(DatasetUnavailable, match="wnids.txt is missing and data.download=false"):
        load_tiny_imagenet(str(tmp_path), download=False)


def test_full_batch_training_runs_on_64_pixel_images(tmp_path):
    root = _write_folder(tmp_path / "data")
    cfg = compose_config(["data=TinyImageNet", f"data.path={root}", "data.download=false", "data.classes=3",
                          "data.batch_size=4", "model=resnet20", "model.width=4", "hyp=fbclip", "hyp.steps=2",
                          "hyp.warmup=1", "impl.device=cpu"])
    summary = run(cfg, output_dir=str(tmp_path / "run"))
    assert summary["status"] == "finished"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in rows] == [0.0, 0.4] and all(0 < row["train_loss"] < 10 for row in rows)
    model = torch.load(tmp_path / "run" / "model.pt")
    assert model["fc.weight"].shape == (3, 16)  # 3 classes from the folder's wnids.txt; ResNet-20 width 4 ends at 16
    validation_images = 3 * 2  # two validation images per class in the folder written above
    assert round(summary["final_val_acc"] * validation_images, 9) == int(summary["final_val_acc"] * validation_images)
