"""The training and validation sets as uint8 tensors on the training device.

Keeping CIFAR on the device as uint8 (150 MB for 50,000 images) removes the DataLoader from the step:
a block is a slice of a tensor, augmentation is a few batched tensor ops, and normalisation happens
per block in the compute dtype.
"""
from dataclasses import dataclass

import torch

from fullbatch.config.choices import Database, Dataset
from fullbatch.data.augmentation import augment, augmentation_names, step_generator
from fullbatch.data.cifar import load_cifar
from fullbatch.data.lmdb_database import database_path, ensure_database, read_database, recipe
from fullbatch.data.subsets import take_subset
from fullbatch.data.synthetic import make_synthetic
from fullbatch.data.tiny_imagenet import load_tiny_imagenet
from fullbatch.errors import DatasetUnavailable


@dataclass
class DeviceDataset:
    train_images: torch.Tensor  # N, 3, 32, 32 uint8
    train_labels: torch.Tensor  # N int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: torch.Tensor  # 1, 3, 1, 1 float32
    std: torch.Tensor
    augmentations: tuple
    padding: int
    seed: int
    rounds: int = 1  # N x CIFAR: the training tensors hold `rounds` augmented copies, round after round
    semi_stochastic: bool = False  # step s trains on round s mod rounds only

    @property
    def num_train(self):
        """Examples in one step's training set."""
        return len(self.train_labels) // self.rounds if self.semi_stochastic else len(self.train_labels)

    def training_set(self, step):
        """This step's (images, labels): its round in semi-stochastic mode, freshly augmented from (seed, step)."""
        images, labels = self.train_images, self.train_labels
        if self.semi_stochastic:
            start = (step % self.rounds) * self.num_train
            images, labels = images[start:start + self.num_train], labels[start:start + self.num_train]
        if self.augmentations:
            generator = step_generator(self.seed, step, images.device, stream=1)
            images = augment(images, self.augmentations, self.padding, generator)
        return images, labels

    def training_images(self, step):
        return self.training_set(step)[0]

    def normalize(self, images, memory_format=torch.contiguous_format):
        """uint8 images (on the device, or in host memory) to normalised float32 on the device."""
        images = images.to(self.mean.device, non_blocking=True).to(dtype=torch.float32)
        images = images.div_(255.0).sub_(self.mean).div_(self.std)
        return images.contiguous(memory_format=memory_format)


LOADERS = {  # data.name -> data_cfg -> ((train images, labels), (test images, labels)) as uint8 / int64 arrays
    Dataset.CIFAR10: lambda cfg: load_cifar("CIFAR10", cfg.path, cfg.download),
    Dataset.CIFAR100: lambda cfg: load_cifar("CIFAR100", cfg.path, cfg.download),
    Dataset.TinyImageNet: lambda cfg: load_tiny_imagenet(cfg.path, cfg.download),
    Dataset.synthetic: lambda cfg: make_synthetic(cfg.size or 1024, cfg.test_size or 512, cfg.classes, cfg.seed),
}


def _load_arrays(data_cfg):
    return LOADERS[data_cfg.name](data_cfg)


def _check_arrays(name, images, labels, classes, size=32):
    if images.ndim != 4 or images.shape[1:] != (3, size, size) or len(images) != len(labels):
        raise DatasetUnavailable(f"{name}: expected N x 3 x {size} x {size} images and N labels, got {images.shape} "
                                 f"and {labels.shape}; replace the files")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DatasetUnavailable(f"{name}: labels must lie in [0, {classes}) for data.classes={classes}, found "
                                 f"{labels.min()}..{labels.max()}")


def _n_times_dataset(data_cfg, images, labels, comm):
    """The LMDB N x dataset built from these source arrays (built by one process, read by all)."""
    db = data_cfg.db
    build_recipe = recipe(data_cfg.name, images, labels, db.rounds, db.augmentations, db.crop_padding, db.seed)
    if comm is None or comm.is_main:
        path = ensure_database(db.path, build_recipe, images, labels, db.map_size)
    if comm is not None:
        comm.barrier()
        path = database_path(db.path, build_recipe)
    return read_database(path, build_recipe)


def _keep_on_host(db, images, device):
    """Whether training images stay in host memory: asked for, or (auto) more than half the free GPU memory."""
    choice = str(db.in_memory).lower()
    if choice in ("true", "false"):
        return choice == "false"
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return images.nbytes > free / 2


def load_device_dataset(data_cfg, seed, device, semi_stochastic=False, comm=None):
    """Read the configured dataset, cut it to `data.size`/`data.test_size` (see `data.subset`), and move it to
    `device`."""
    device = torch.device(device)
    (train_x, train_y), (test_x, test_y) = _load_arrays(data_cfg)
    subset, subset_seed, classes = data_cfg.subset, data_cfg.subset_seed, data_cfg.classes
    train_x, train_y = take_subset(train_x, train_y, data_cfg.size, subset, classes, subset_seed, "data.size")
    test_x, test_y = take_subset(test_x, test_y, data_cfg.test_size, subset, classes, subset_seed + 1,
                                 "data.test_size")
    _check_arrays(f"{data_cfg.name} training set", train_x, train_y, data_cfg.classes, data_cfg.image_size)
    _check_arrays(f"{data_cfg.name} validation set", test_x, test_y, data_cfg.classes, data_cfg.image_size)
    rounds = 1
    if data_cfg.db.name == Database.LMDB:
        train_x, train_y = _n_times_dataset(data_cfg, train_x, train_y, comm)
        rounds = data_cfg.db.rounds

    def to_device(array):
        return torch.as_tensor(array).to(device)

    host = _keep_on_host(data_cfg.db, train_x, device)
    if host:  # pinned host memory, copied to the device block by block
        train_images = torch.as_tensor(train_x)
        train_images = train_images.pin_memory() if device.type == "cuda" else train_images
    else:
        train_images = to_device(train_x)
    return DeviceDataset(
        train_images=train_images, train_labels=to_device(train_y), rounds=rounds, semi_stochastic=semi_stochastic,
        test_images=to_device(test_x), test_labels=to_device(test_y),
        mean=torch.tensor(list(data_cfg.mean), device=device).view(1, 3, 1, 1),
        std=torch.tensor(list(data_cfg.std), device=device).view(1, 3, 1, 1),
        augmentations=augmentation_names(data_cfg.augmentations_train),
        padding=data_cfg.crop_padding, seed=seed)
