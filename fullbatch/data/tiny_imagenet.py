"""Tiny ImageNet (64x64, 200 classes) from its standard folder layout, downloaded when missing.

`tiny-imagenet-200/` holds `wnids.txt` (the class ids; their order gives the labels), `train/<wnid>/images/*.JPEG`
and `val/images/*.JPEG` with `val/val_annotations.txt`. The decoded arrays are cached beside the folder as
`fullbatch-arrays.npz`, so the 110,000 JPEGs are decoded once.
"""
import os

import numpy as np
from PIL import Image

from fullbatch.errors import DatasetUnavailable
from fullbatch.files.atomic import atomic_write

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


def _decode(paths):
    return np.stack([np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1) for path in paths])


def _read_folder(folder):
    with open(os.path.join(folder, "wnids.txt")) as handle:
        wnids = [line.strip() for line in handle if line.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        images = os.path.join(folder, "train", wnid, "images")
        for name in sorted(os.listdir(images)):
            train_paths.append(os.path.join(images, name))
            train_labels.append(index[wnid])
    val_paths, val_labels = [], []
    with open(os.path.join(folder, "val", "val_annotations.txt")) as handle:
        for line in handle:
            fields = line.split("\t")
            if len(fields) >= 2:
                val_paths.append(os.path.join(folder, "val", "images", fields[0]))
                val_labels.append(index[fields[1]])
    return (_decode(train_paths), np.array(train_labels, dtype=np.int64)), \
        (_decode(val_paths), np.array(val_labels, dtype=np.int64))


def load_tiny_imagenet(root, download=True):
    """((train_images, train_labels), (val_images, val_labels)) as uint8 N x 3 x 64 x 64 and int64 arrays."""
    root = os.path.expanduser(root)
    folder = os.path.join(root, FOLDER)
    cache = os.path.join(folder, "fullbatch-arrays.npz")
    if os.path.isfile(cache):
        try:
            with np.load(cache, allow_pickle=False) as arrays:
                return (arrays["train_x"], arrays["train_y"]), (arrays["val_x"], arrays["val_y"])
        except Exception as error:  # a truncated or foreign file fails in many ways (zip, key, pickle refused)
            raise DatasetUnavailable(f"cannot read {cache} ({type(error).__name__}: {str(error)[:200]}); delete it, "
                                     "and it is rebuilt from the images") from None
    if not os.path.isfile(os.path.join(folder, "wnids.txt")):
        if not download:
            raise DatasetUnavailable(f"TinyImageNet is not available: {folder}/wnids.txt is missing and "
                                     f"data.download=false. Unpack {URL} into {root}, or set data.path")
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(URL, download_root=root, md5=MD5)
        except Exception as error:  # network or archive failure
            raise DatasetUnavailable(f"TinyImageNet is not available: the download failed ({error}). Unpack "
                                     f"{URL} into {root}, or set data.path to the folder that holds {FOLDER}/") from None
    try:
        (train_x, train_y), (val_x, val_y) = _read_folder(folder)
    except (OSError, KeyError, ValueError) as error:
        raise DatasetUnavailable(f"cannot read {folder} ({error}); it should hold wnids.txt, train/<wnid>/images/ "
                                 "and val/images/ with val/val_annotations.txt") from None
    atomic_write(cache, lambda handle: np.savez(handle, train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y))
    return (train_x, train_y), (val_x, val_y)
