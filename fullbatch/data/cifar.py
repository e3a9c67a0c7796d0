"""CIFAR-10/100 from the standard python-format files, downloaded with torchvision's utilities if missing.

Existing files are read as they are, without checking the official md5 sums, so re-encoded or
locally prepared copies work too; only a fresh download is verified. They are pickles, so they are read with an
unpickler that rebuilds plain data and NumPy arrays only: a file that names anything else is refused unread.
"""
import os

import numpy as np

from fullbatch.errors import DatasetUnavailable, first_line
from fullbatch.files.safe_loading import load_data_pickle

CIFAR = {
    "CIFAR10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    label_key="labels", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a"),
    "CIFAR100": dict(folder="cifar-100-python", train=["train"], test=["test"], label_key="fine_labels",
                     url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85"),
}


def _missing_files(root, spec):
    folder = os.path.join(root, spec["folder"])
    return [os.path.join(folder, f) for f in spec["train"] + spec["test"] if not os.path.isfile(os.path.join(folder, f))]


def _download(root, spec, name):
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(spec["url"], download_root=root, md5=spec["md5"])
    except Exception as error:  # any network or archive failure ends in the same instruction
        raise DatasetUnavailable(_instructions(root, spec, name, f"the download failed ({error})")) from None


def _instructions(root, spec, name, reason):
    folder = os.path.join(root, spec["folder"])
    files = ", ".join(spec["train"] + spec["test"])
    return (f"{name} is not available: {reason}. Put the python-format files ({files}) into {folder} "
            f"(from {spec['url']}), or set data.path to the folder that holds {spec['folder']}/")


def _read_batches(folder, files, label_key):
    images, labels = [], []
    for file in files:
        path = os.path.join(folder, file)
        try:
            with open(path, "rb") as handle:
                entry = load_data_pickle(handle)
            rows = np.asarray(entry["data"], dtype=np.uint8)
            images.append(rows.reshape(len(rows), 3, 32, 32))
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
        except Exception as error:  # a damaged or forged file fails in many ways; all mean the same to the user
            reason = first_line(error, 200) or type(error).__name__
            raise DatasetUnavailable(f"cannot read {path}: {reason}; delete it to download again") from None
    return np.concatenate(images), np.concatenate(labels)


def load_cifar(name, root, download=True):
    """Return ((train_images, train_labels), (test_images, test_labels)) as uint8 NCHW and int64 arrays."""
    spec = CIFAR[name]
    root = os.path.expanduser(root)
    if _missing_files(root, spec):
        if not download:
            missing = ", ".join(_missing_files(root, spec))
            raise DatasetUnavailable(_instructions(root, spec, name, f"missing {missing} and data.download=false"))
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as error:  # a file in the way, a link loop, no permission
            raise DatasetUnavailable(_instructions(root, spec, name, f"{root} cannot be created ({error.strerror})"))
        _download(root, spec, name)
    folder = os.path.join(root, spec["folder"])
    return (_read_batches(folder, spec["train"], spec["label_key"]),
            _read_batches(folder, spec["test"], spec["label_key"]))
