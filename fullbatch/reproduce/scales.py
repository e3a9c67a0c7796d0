"""The rows of the paper's Table 1 and the scales they can be run at.

A scale is fixed before any result is seen: the data (size, balanced subset), the model width, the number of
seeds and one factor that multiplies every row's steps, warmup and cosine horizon, so that the ratios of the
paper stay (FB train longer = 10 x Baseline FB steps; SGD epochs = Baseline FB steps). lr, clipping, regularizer
strength, block size and schedule shape are the presets' own at every scale.
"""
from dataclasses import dataclass, field
from fractions import Fraction
from typing import List, Tuple

from fullbatch.paths import compose_config

NO_AUGMENTATION = "data.augmentations_train="


@dataclass(frozen=True)
class Row:
    name: str
    label: str  # the row's name in the paper's Table 1
    overrides: Tuple[str, ...]
    augmented: bool = True
    optional: bool = False  # run only where the scale asks for it (N x CIFAR: paper scale)


def _rows():
    table = [("sgd", "Baseline SGD", ("hyp=base_sgd",)), ("fb", "Baseline FB", ("hyp=fb1",)),
             ("fb_longer", "FB train longer", ("hyp=fb2",)), ("fb_clip", "FB clipped", ("hyp=fbclip",)),
             ("fb_reg", "FB regularized", ("hyp=gradreg",)),
             ("fb_strong", "FB strong reg.", ("hyp=gradreg", "data.batch_size=32")),
             ("fb_practice", "FB in practice", ("hyp=gradreg", "data.batch_size=32", "hyp.shuffle=True"))]
    rows = [Row(name, label, overrides) for name, label, overrides in table]
    rows += [Row(f"{name}_noaug", f"{label} (no augmentation)", (*overrides, NO_AUGMENTATION), augmented=False)
             for name, label, overrides in table if name != "fb_practice"]  # the paper has no such row
    rows.append(Row("fb_reg_10x", "FB regularized, 10 x CIFAR (no augmentation)",
                    ("hyp=gradreg", "data/db=LMDB", "data.db.rounds=10", NO_AUGMENTATION), augmented=False,
                    optional=True))
    return {row.name: row for row in rows}


ROWS = _rows()


@dataclass(frozen=True)
class Scale:
    name: str
    description: str
    factor: Fraction  # multiplies steps, warmup and the cosine horizon
    data: Tuple[str, ...]
    width: int
    seeds: int
    checkpoint_every: int
    validations: int  # validation passes per run (evenly spaced, and always the last step)
    landscape: Tuple[str, ...]  # crunch overrides for the report's 1-D landscapes
    optional_rows: bool = False
    model_note: str = ""
    extra: Tuple[str, ...] = field(default_factory=tuple)

    def rows(self) -> List[Row]:
        return [row for row in ROWS.values() if self.optional_rows or not row.optional]


SCALES = {
    "smoke": Scale("smoke", "synthetic data, seconds: checks the whole pipeline (the tests use it)",
                   Fraction(1, 300), ("data=synthetic", "data.size=128", "data.test_size=64"), width=2, seeds=1,
                   checkpoint_every=5, validations=2,
                   landscape=("viz.resolution=3", "viz.train_examples=64", "viz.val_examples=64")),
    "micro": Scale("micro", "a balanced 1,000-image subset of CIFAR-10's training set, the full 10,000-image test "
                   "set, ResNet-18 at width 8, 1/30 of the steps, 2 seeds: at most 3 hours of a 2-core CPU",
                   Fraction(1, 30), ("data=CIFAR10", "data.size=1000", "data.subset=balanced"), width=8, seeds=2,
                   checkpoint_every=20, validations=2,
                   landscape=("viz.resolution=11", "viz.train_examples=1000", "viz.val_examples=2000")),
    "mini": Scale("mini", "a balanced 5,000-image subset of CIFAR-10, the full test set, ResNet-18 at full width, "
                  "1/20 of the steps, 1 seed: designed for at most 30 minutes of one GPU",
                  Fraction(1, 20), ("data=CIFAR10", "data.size=5000", "data.subset=balanced"), width=64, seeds=1,
                  checkpoint_every=50, validations=10,
                  landscape=("viz.resolution=21", "viz.train_examples=5000", "viz.val_examples=10000")),
    "paper": Scale("paper", "the paper's settings: all 50,000 CIFAR-10 training images, ResNet-18, every step",
                   Fraction(1), ("data=CIFAR10",), width=64, seeds=1, checkpoint_every=100, validations=30,
                   landscape=("viz.resolution=21", "viz.train_examples=10000", "viz.val_examples=10000"),
                   optional_rows=True),
}


def scaled(value, factor, at_least=0):
    """An integer count times the scale factor, rounded; `at_least` keeps e.g. a warmup from vanishing."""
    return max(at_least, round(value * factor))


def row_overrides(scale, row, seed):
    """The training overrides of one row and seed at one scale (without where its outputs go)."""
    preset = compose_config([*row.overrides]).hyp
    overrides = [*scale.data, *row.overrides, "model=resnet18", f"model.width={scale.width}", f"seed={seed}"]
    if scale.factor != 1:
        steps = scaled(preset.steps, scale.factor, 1)
        overrides += [f"hyp.steps={steps}", f"hyp.warmup={scaled(preset.warmup, scale.factor, 1)}"]
        if str(preset.scheduler) == "cosine-4000":
            overrides.append(f"hyp.cosine_horizon={scaled(4000, scale.factor, 1)}")
    else:
        steps = preset.steps
    overrides.append(f"impl.validate_every_nth_step={max(1, steps // scale.validations)}")
    overrides.append(f"impl.checkpoint.save_every_nth_step={scale.checkpoint_every}")
    return [*overrides, *scale.extra]
