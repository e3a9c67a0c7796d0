"""Every preset composes; bad values fail at start-up with one line naming the key."""
import glob
import os

import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, TINY, compose_config, run_entry
from fullbatch.run.validation import ConfigError, validate


def _options(group):
    names = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(CONFIG_DIR, group, "*.yaml")))
    return [n for n in names if not n.startswith("_")]


@pytest.mark.parametrize("group", ["data", "data/db", "model", "hyp", "hyp/optim", "hyp/optim_modification", "impl",
                                   "impl/setup", "analysis"])
def test_every_option_of_every_group_composes_and_validates(group):
    options = _options(group)
    assert options, f"no options in {group}"
    for option in options:
        full_batch = ["hyp=fb1"] if group.startswith("hyp/") else []  # these options need full-batch mode
        cfg = compose_config([*full_batch, f"{group}={option}"])
        validate(cfg)
        OmegaConf.to_container(cfg, resolve=True)


def test_presets_state_the_paper_recipes():
    recipes = {  # preset: (stochastic, steps, lr, warmup, scheduler, clip, block_strength)
        "base_sgd": (True, 300, 0.1, 5, "cosine-decay", None, 0.0),
        "fb1": (False, 300, 0.1, 5, "cosine-decay", None, 0.0),
        "fb2": (False, 3000, 0.4, 400, "cosine-4000", None, 0.0),
        "fbclip": (False, 3000, 0.4, 400, "cosine-4000", 0.25, 0.0),
        "gradreg": (False, 3000, 0.8, 400, "cosine-4000", 0.25, 0.5),
    }
    for preset, expected in recipes.items():
        hyp = compose_config([f"hyp={preset}"]).hyp
        found = (hyp.train_stochastic, hyp.steps, hyp.optim.lr, hyp.warmup, hyp.scheduler, hyp.grad_clip,
                 hyp.grad_reg.block_strength)
        assert found == expected, preset
        assert (hyp.optim.name, hyp.optim.momentum, hyp.optim.nesterov, hyp.optim.weight_decay) == ("SGD", 0.9, True, 5e-4)
    assert compose_config(["hyp=base_sgd"]).hyp.shuffle is True
    assert compose_config([]).data.batch_size == 128


def test_overrides_used_by_train_sh_compose():
    cfg = compose_config(["hyp=gradreg", "data.batch_size=32", "hyp.shuffle=True", "data.augmentations_train=",
                          "hyp.grad_clip_norm=inf", "hyp.scheduler=linear", "hyp.grad_noise.additive=0.01",
                          "hyp.grad_noise.multiplicative=0.1", "hyp.evaluate_ema=True", "hyp.test_time_flips=True",
                          "hyp.stop_at_full_training_accuracy=3", "hyp.batch_clip=1.0", "hyp.label_smoothing=0.1",
                          "data.size=1000", "dryrun=True", "name=x", "seed=3", "hyp/optim=adam"])
    validate(cfg)
    assert cfg.data.augmentations_train == "" and cfg.hyp.grad_clip_norm == float("inf")
    assert cfg.hyp.optim.name == "AdamW"


@pytest.mark.parametrize("override, key", [
    ("hyp.steps=-3", "hyp.steps"), ("hyp.optim.lr=0", "hyp.optim.lr"), ("hyp.grad_clip_norm=1", "hyp.grad_clip_norm"),
    ("model.name=resnet19", "model.name"), ("data.augmentations_train=[random_crop,cutout]", "data.augmentations_train"),
    ("hyp.warmup=-1", "hyp.warmup"), ("data.batch_size=0", "data.batch_size"), ("model.downsample=null", "model.downsample"),
])
def test_bad_values_raise_config_error_naming_the_key(override, key):
    cfg = compose_config([override])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(key) and "\n" not in str(error.value)


@pytest.mark.parametrize("override, allowed", [
    ("hyp.scheduler=cosine", "cosine-decay, cosine-4000, linear, none"), ("impl.memory=nhwc", "contiguous, channels_last"),
    ("model.downsample=D", "B, C"), ("hyp.grad_reg.implementation=complex-step", "forward-differences, central-differences"),
    ("data.name=MNIST", "CIFAR10, CIFAR100, TinyImageNet, synthetic"), ("impl.dtype=float16", "float32, float64"),
])
def test_unknown_choices_fail_while_composing_with_the_allowed_values(override, allowed):
    with pytest.raises(HydraException) as error:
        compose_config([override])
    assert override in str(error.value) and allowed in str(error.value.__cause__)


def test_each_choice_is_named_once_and_dispatched_for_every_member():
    from fullbatch.config.choices import Dataset, MemoryFormat, Optimizer, RegularizerMethod, RegularizerPrecision, Scheduler
    from fullbatch.data.device_dataset import LOADERS
    from fullbatch.run.runtime import MEMORY_FORMATS
    from fullbatch.training.regularizer import PRECISIONS, GradRegularizer
    from fullbatch.training.schedules import COSINE_HORIZONS, OPTIMIZERS, lr_factor

    assert set(OPTIMIZERS) == set(Optimizer) and set(LOADERS) == set(Dataset) and set(MEMORY_FORMATS) == set(MemoryFormat)
    assert GradRegularizer.IMPLEMENTATIONS == set(RegularizerMethod) and set(PRECISIONS) == set(RegularizerPrecision)
    assert set(COSINE_HORIZONS) < set(Scheduler)
    factors = {scheduler: lr_factor(20, scheduler, 40, 5) for scheduler in Scheduler}  # each has its own shape
    assert len(set(factors.values())) == len(Scheduler)


def test_bad_value_ends_the_entry_script_with_one_line(tmp_path):
    result = run_entry([*TINY, "hyp.steps=-3"], tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "fullbatch: hyp.steps=-3 is not allowed: expected an integer >= 1"]
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.jsonl"))


@pytest.mark.parametrize("override, key", [("hyp.stepz=3", "hyp.stepz"), ("hyp.steps=abc", "hyp.steps")])
def test_misspelt_key_or_wrong_type_fails_in_composition_with_one_line(tmp_path, override, key):
    result = run_entry([*TINY, override], tmp_path, check=False)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("fullbatch: ") and key in line


def test_train_sh_runs_every_row_of_the_paper_with_and_without_augmentation_and_n_x_cifar():
    import shlex

    lines = [line.split("#")[0] for line in open(os.path.join(os.path.dirname(CONFIG_DIR), "train.sh"))
             if line.startswith("train ")]
    runs = set()
    for line in lines:
        cfg = compose_config(shlex.split(line)[1:])
        validate(cfg)
        hyp, data = cfg.hyp, cfg.data
        rounds = data.db.rounds if data.db.name == "LMDB" else 0
        runs.add((hyp.train_stochastic, hyp.steps, hyp.optim.lr, hyp.grad_clip, hyp.grad_reg.block_strength,
                  data.batch_size, hyp.shuffle, bool(data.augmentations_train), rounds))
    rows = {  # Table 1 of the paper: (stochastic, steps, lr, clip, block strength, block, shuffle)
        "Baseline SGD": (True, 300, 0.1, None, 0.0, 128, True), "Baseline FB": (False, 300, 0.1, None, 0.0, 128, False),
        "FB train longer": (False, 3000, 0.4, None, 0.0, 128, False),
        "FB clipped": (False, 3000, 0.4, 0.25, 0.0, 128, False),
        "FB regularized": (False, 3000, 0.8, 0.25, 0.5, 128, False),
        "FB strong reg.": (False, 3000, 0.8, 0.25, 0.5, 32, False),
        "FB in practice": (False, 3000, 0.8, 0.25, 0.5, 32, True),
    }
    for name, row in rows.items():
        assert (*row, True, 0) in runs, f"{name} with augmentation"
        if name != "FB in practice":
            assert (*row, False, 0) in runs, f"{name} without augmentation"
            assert (*row, False, 10) in runs, f"{name} on 10 x CIFAR"


@pytest.mark.parametrize("override", ["impl.mixed_precision=true", "impl.dtype=float64", "impl.memory=channels_last",
                                      "impl.merge_blocks=2", "impl.compile=true", "impl.compile_mode=reduce-overhead",
                                      "impl.deterministic=true", "impl.benchmark=false", "impl.device=cpu",
                                      "impl.setup.batch_shards=2"])
def test_resume_identity_holds_every_impl_key_that_changes_the_numbers(override):
    """A sweep over such a key must not resume another job's checkpoint (bf16 and float64 train differently)."""
    from fullbatch.run.runtime import config_hash

    assert config_hash(compose_config([override])) != config_hash(compose_config([]))


@pytest.mark.parametrize("override", ["impl.threads=3", "impl.validate_every_nth_step=7", "impl.eval_batch_size=10",
                                      "impl.checkpoint.save_every_nth_step=5", "impl.checkpoint.keep=4",
                                      "data.path=/elsewhere", "data.download=false", "impl.setup.timeout_seconds=60"])
def test_resume_identity_ignores_what_cannot_change_the_numbers(override):
    from fullbatch.run.runtime import config_hash

    assert config_hash(compose_config([override])) == config_hash(compose_config([]))
