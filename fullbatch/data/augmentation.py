"""Batched augmentation of uint8 images on their device: random crop with zero padding and horizontal flip.

The whole training set is augmented at once from a generator seeded by (seed, step), so a step's images
do not depend on the block order, the block size or the number of processes.
"""
import torch
from omegaconf import ListConfig

from fullbatch.errors import ConfigError

AUGMENTATIONS = ("random_crop", "horizontal_flip")
_STEP_STRIDE = 1_000_003  # a prime larger than any step count, so (seed, step) pairs never share a seed


def step_generator(seed, step, device, stream=0):
    """A generator for one step; `stream` separates independent uses (augmentation, order, noise)."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 7 + stream) * _STEP_STRIDE + step)
    return generator


def random_crop(images, padding, generator):
    """Crop every image at its own random offset from a zero-padded copy (torchvision's RandomCrop(32, padding))."""
    count, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, count), generator=generator, device=images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)
    index = torch.arange(count, device=images.device)[:, None, None]
    cropped = padded[index, :, rows[:, :, None], cols[:, None, :]]  # N, H, W, C
    return cropped.permute(0, 3, 1, 2).contiguous()


def horizontal_flip(images, generator):
    """Mirror each image with probability 1/2."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def augment(images, names, padding, generator):
    """Apply the named augmentations in a fixed order; `names` may be empty."""
    if "random_crop" in names and padding > 0:
        images = random_crop(images, padding, generator)
    if "horizontal_flip" in names:
        images = horizontal_flip(images, generator)
    return images


def augmentation_names(value):
    """Normalise `data.augmentations_train` (list, comma string, empty or null) to a tuple of names."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(f"data.augmentations_train={value!r} is not allowed: expected a list drawn from {AUGMENTATIONS}")
    names = tuple(str(v).strip() for v in value if str(v).strip())
    for name in names:
        if name not in AUGMENTATIONS:
            raise ConfigError(f"data.augmentations_train={name!r} is not allowed: expected a list drawn from "
                              f"{AUGMENTATIONS}")
    return names
