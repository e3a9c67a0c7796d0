"""Which examples a smaller run uses: the first N (`data.subset=first`, the default), or a class-balanced,
seeded random choice (`balanced`), which is what small-scale experiments need: CIFAR copies sorted by class
would otherwise give a few classes only. The balanced choice is returned in random order, so fixed block orders
do not see one class per block."""
import numpy as np

from fullbatch.errors import ConfigError


def balanced_indices(labels, size, classes, seed, key="data.size"):
    """`size` indices with (as nearly as possible) equal counts per class, chosen by `seed`, in random order."""
    labels = np.asarray(labels)
    generator = np.random.default_rng(seed)
    counts = np.full(classes, size // classes)
    counts[generator.permutation(classes)[: size % classes]] += 1  # the remainder goes to randomly drawn classes
    chosen = []
    for label, count in enumerate(counts):
        available = np.flatnonzero(labels == label)
        if len(available) < count:
            raise ConfigError(f"{key}={size} is not allowed with data.subset=balanced: class {label} has only "
                              f"{len(available)} examples (needs {count})")
        chosen.append(generator.permutation(available)[:count])
    return generator.permutation(np.concatenate(chosen))


def take_subset(images, labels, size, mode, classes, seed, key):
    """The examples a run uses: all (size empty), the first `size`, or a balanced seeded choice."""
    if size is None:
        return images, labels
    if size > len(labels):
        raise ConfigError(f"{key}={size} is not allowed: expected at most {len(labels)}, the examples the set has "
                          "(empty: all)")
    if str(mode) == "first":
        return images[:size], labels[:size]
    keep = balanced_indices(labels, size, classes, seed, key)
    return images[keep], labels[keep]
