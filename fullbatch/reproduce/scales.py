"""The rows of the paper's Table 1 and the scales they can be run at.

A reduced scale is a scale model: a comparison between two rows means something only when each row is in the
regime it is in at paper scale, where every row except Baseline FB fits its training set. A scale is fixed
before any validation result is seen: the data (size, balanced subset), the model width, the seeds, and the
factors that multiply each row's steps, warmup and cosine horizon: one for the short rows (Baseline SGD's
epochs, and Baseline FB, which gets SGD's budget in steps), one for the long full-batch rows, and optionally
another for the long rows without augmentation (they fit sooner). lr, clipping, regularizer strength, block
size, schedule shape, mode and augmentation are the presets' own at every scale. See docs/reproduce.md.
"""
import functools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import List, Optional, Tuple

from omegaconf import OmegaConf

from fullbatch.config.paths import compose_config

NO_AUGMENTATION = "data.augmentations_train="


@dataclass(frozen=True)
class Row:
    name: str
    label: str  # the row's name in the paper's Table 1
    overrides: Tuple[str, ...]
    augmented: bool = True
    optional: bool = False  # run only where the scale asks for it (N x CIFAR: paper scale)

    @property
    def short(self):
        """Baseline SGD and Baseline FB: 300 epochs or steps in the paper, against 3000 for the long rows."""
        return self.name.split("_")[0] in ("sgd", "fb") and self.name in ("sgd", "fb", "sgd_noaug", "fb_noaug")

    @property
    def must_fit(self):
        """Every row but Baseline FB fits its training set at paper scale; Baseline FB shows what plain full
        batch reaches in SGD's budget, so it may stay unfitted."""
        return self.name not in ("fb", "fb_noaug")


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
    factor: Fraction  # multiplies the long rows' steps, warmup and cosine horizon (and every row's by default)
    data: Tuple[str, ...]
    width: int
    seeds: int
    checkpoint_every: int
    validations: int  # validation passes per run (evenly spaced, and always the last step)
    landscape: Tuple[str, ...]  # crunch overrides for the report's 1-D landscapes
    optional_rows: bool = False
    model_note: str = ""
    extra: Tuple[str, ...] = field(default_factory=tuple)
    short_factor: Optional[Fraction] = None  # Baseline SGD's epochs and Baseline FB's steps (default: factor)
    noaug_factor: Optional[Fraction] = None  # the long rows without augmentation (default: factor)
    pipeline_check: bool = False  # its report checks the code and draws no verdicts
    seeds_of: Tuple[Tuple[str, int], ...] = ()  # rows with fewer seeds than `seeds`

    def rows(self) -> List[Row]:
        return [row for row in ROWS.values() if self.optional_rows or not row.optional]

    def seeds_for(self, row, override=None):
        """How many seeds `row` runs: `--seeds` if given (0 means none, not the default), else the scale's own
        count for it."""
        return dict(self.seeds_of).get(row.name, self.seeds) if override is None else override

    def jobs(self, rows, override=None):
        """[(row, seed)] in table order."""
        return [(row, seed) for row in rows for seed in range(self.seeds_for(row, override))]

    def factor_of(self, row):
        if row.short:
            return self.short_factor or self.factor
        return (self.noaug_factor or self.factor) if not row.augmented else self.factor


SCALES = {
    "smoke": Scale("smoke", "a pipeline check, not a result: 128 synthetic images, ResNet-18 at width 2, 1 to 10 "
                   "steps, 1 seed (the baseline rows take one step at lr 0 and never move); about 3 minutes of a "
                   "2-core CPU", Fraction(1, 300), ("data=synthetic", "data.size=128", "data.test_size=64"),
                   width=2, seeds=1, checkpoint_every=5, validations=2,
                   landscape=("viz.resolution=3", "viz.train_examples=64", "viz.val_examples=64"),
                   pipeline_check=True),
    "micro": Scale("micro", "a balanced 500-image subset of CIFAR-10's training set, the full 10,000-image test "
                   "set, ResNet-18 at width 8; Baseline SGD 100 epochs and Baseline FB 100 steps, the long "
                   "full-batch rows 300 steps (150 without augmentation); 3 seeds for Baseline SGD, Baseline FB, "
                   "FB clipped, FB regularized and FB strong reg., 2 for the others: at most 3 hours of a 2-core "
                   "CPU with --jobs 2", Fraction(1, 10), ("data=CIFAR10", "data.size=500", "data.subset=balanced"),
                   width=8, seeds=3, checkpoint_every=25, validations=2,
                   landscape=("viz.resolution=11", "viz.train_examples=500", "viz.val_examples=2000"),
                   short_factor=Fraction(1, 3), noaug_factor=Fraction(1, 20),
                   seeds_of=(("fb_longer", 2), ("fb_practice", 2), ("sgd_noaug", 2), ("fb_noaug", 2),
                             ("fb_longer_noaug", 2), ("fb_clip_noaug", 2), ("fb_reg_noaug", 2),
                             ("fb_strong_noaug", 2))),
    "small": Scale("small", "a balanced 1,000-image subset of CIFAR-10's training set, the full 10,000-image test "
                   "set, ResNet-18 at width 8; Baseline SGD 100 epochs and Baseline FB 100 steps, the long "
                   "full-batch rows 600 steps (300 without augmentation); 8 seeds for Baseline SGD and Baseline FB, "
                   "6 for FB clipped and FB regularized, 3 for the other rows with augmentation and 2 without, "
                   "sized to resolve 2-point differences: about 6.4 hours of a 2-core CPU with --jobs 2 (projected "
                   "from pilots)",
                   Fraction(1, 5), ("data=CIFAR10", "data.size=1000", "data.subset=balanced"),
                   width=8, seeds=2, checkpoint_every=50, validations=4,
                   landscape=("viz.resolution=11", "viz.train_examples=1000", "viz.val_examples=2000"),
                   short_factor=Fraction(1, 3), noaug_factor=Fraction(1, 10),
                   seeds_of=(("sgd", 8), ("fb", 8), ("fb_clip", 6), ("fb_reg", 6), ("fb_longer", 3),
                             ("fb_strong", 3), ("fb_practice", 3))),
    "mini": Scale("mini", "a balanced 5,000-image subset of CIFAR-10, the full test set, ResNet-18 at full width; "
                  "Baseline SGD 100 epochs and Baseline FB 100 steps, the long full-batch rows 500 steps (300 "
                  "without augmentation), 1 seed: about 80 minutes of one H100 (projected, not yet run)",
                  Fraction(1, 6), ("data=CIFAR10", "data.size=5000", "data.subset=balanced"), width=64, seeds=1,
                  checkpoint_every=50, validations=10,
                  landscape=("viz.resolution=21", "viz.train_examples=5000", "viz.val_examples=10000"),
                  short_factor=Fraction(1, 3), noaug_factor=Fraction(1, 10)),
    "paper": Scale("paper", "the paper's settings: all 50,000 CIFAR-10 training images, ResNet-18, every step",
                   Fraction(1), ("data=CIFAR10",), width=64, seeds=1, checkpoint_every=100, validations=30,
                   landscape=("viz.resolution=21", "viz.train_examples=10000", "viz.val_examples=10000"),
                   optional_rows=True),
}


def scaled(value, factor, at_least=0):
    """An integer count times the scale factor, rounded; `at_least` keeps e.g. a warmup from vanishing."""
    return max(at_least, round(value * factor))


@functools.lru_cache(maxsize=None)
def _preset(overrides):
    """A row's composed preset, once per process: composing is slow, and `--list` asks for every row often."""
    cfg = compose_config(list(overrides)).hyp
    OmegaConf.set_readonly(cfg, True)
    return cfg


def row_overrides(scale, row, seed):
    """The training overrides of one row and seed at one scale (without where its outputs go)."""
    preset = _preset(row.overrides)
    overrides = [*scale.data, *row.overrides, "model=resnet18", f"model.width={scale.width}", f"seed={seed}"]
    factor = scale.factor_of(row)
    if factor != 1:
        steps = scaled(preset.steps, factor, 1)
        overrides += [f"hyp.steps={steps}", f"hyp.warmup={scaled(preset.warmup, factor, 1)}"]
        if str(preset.scheduler) == "cosine-4000":
            overrides.append(f"hyp.cosine_horizon={scaled(4000, factor, 1)}")
    else:
        steps = preset.steps
    overrides.append(f"impl.validate_every_nth_step={max(1, steps // scale.validations)}")
    overrides.append(f"impl.checkpoint.save_every_nth_step={scale.checkpoint_every}")
    return [*overrides, *scale.extra]
