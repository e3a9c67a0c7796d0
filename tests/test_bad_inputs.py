"""Table-driven: each bad input ends the entry script before training with exit code 2 and one line naming it."""
import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import TINY, run_entry


def _cifar_with_garbage(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    return root


def _cifar_with_bad_labels(root):
    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 11]}, handle)
    return root


# (overrides, text the single line must contain); {tmp} is replaced by the test's folder
BAD_INPUTS = [
    (["hyp.steps=-3"], "hyp.steps=-3 is not allowed"),
    (["hyp.stepz=3"], "hyp.stepz"),
    (["hyp.steps=abc"], "hyp.steps=abc"),
    (["hyp=nope"], "hyp/nope"),
    (["model=resnet19"], "model/resnet19"),
    (["model.name=resnet19"], "model.name='resnet19' is not allowed"),
    (["hyp.optim.lr=0"], "hyp.optim.lr=0"),
    (["hyp.scheduler=cosine"], "Invalid value 'cosine', expected one of [cosine-decay, cosine-4000, linear, none]"),
    (["hyp.warmup=-2"], "hyp.warmup=-2"),
    (["model.downsample=A"], "Invalid value 'A', expected one of [B, C]"),
    (["model=vgg11", "model.downsample=C"], "model.downsample='C' is not allowed: expected empty for vgg11"),
    (["hyp.grad_clip_norm=1"], "hyp.grad_clip_norm=1"),
    (["hyp.grad_reg.implementation=complex-step"], "hyp.grad_reg.implementation=complex-step: Invalid value"),
    (["hyp.grad_reg.norm=1"], "hyp.grad_reg.norm=1"),
    (["hyp.grad_reg.precision=half"], "Invalid value 'half', expected one of [full, compute]"),
    (["hyp.label_smoothing=1.5"], "hyp.label_smoothing=1.5"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.batch_size=100000"], "data.batch_size=100000 is not allowed: expected at most the training set size"),
    (["data.size=0"], "data.size=0"),
    (["data.augmentations_train=[cutout]"], "data.augmentations_train"),
    (["impl.memory=nhwc"], "Invalid value 'nhwc', expected one of [contiguous, channels_last]"),
    (["impl.device=tpu"], "impl.device='tpu' is not allowed: expected auto, cpu, cuda or cuda:N"),
    *([(["impl.device=cuda"], "impl.device='cuda'")] if not torch.cuda.is_available() else []),
    (["impl.dtype=float16"], "Invalid value 'float16', expected one of [float32, float64]"),
    (["impl.dtype=float64", "impl.mixed_precision=true"], "impl.mixed_precision=True"),
    (["impl.checkpoint.on_divergence=retry"], "Invalid value 'retry', expected one of [stop, restore]"),
    (["impl.setup.batch_shards=0"], "impl.setup.batch_shards=0"),
    (["impl/setup=nope"], "impl/setup/nope"),
    (["impl.checkpoint.resume={tmp}/missing.pt"], "no such file"),
    (["impl.checkpoint.resume={tmp}/corrupt.pt"], "cannot be read"),
    (["impl.checkpoint.resume=true"], "no usable checkpoint"),
    (["data=CIFAR10", "data.path={tmp}/empty", "data.download=false"], "CIFAR10 is not available"),
    (["data=CIFAR10", "data.path={tmp}/garbage", "data.download=false"], "cannot read"),
    (["data=CIFAR10", "data.path={tmp}/labels", "data.download=false", "data.batch_size=4"], "labels must lie in"),
    (["hydra.run.dir=/proc/fullbatch-run"], "is not writable"),
    (["name="], "name='' is not allowed: expected a run name that is not empty"),
    (["name=."], "name='.' is not allowed"),
    (["name=.."], "name='..' is not allowed"),
    (["name=a/b"], "name='a/b' is not allowed"),
    (["tables={tmp}/corrupt.pt"], "tables='{tmp}/corrupt.pt' is not allowed: it is a file, not a folder"),
    (["hyp.lr=0.1"], "Key 'lr' not in 'HypConfig'; did you mean hyp.optim.lr?"),
    (["stepz=3"], "did you mean hyp.steps?"),
    (["impl.checkpoint.resume={tmp}/tensor.pt"], "holds a Tensor, not a checkpoint"),
    (["impl.checkpoint.resume={tmp}/list.pt"], "holds a list, not a checkpoint"),
    (["tables={tmp}/tables", "template=t"], "template='t' is not allowed: expected a name whose table"),
    (["hydra.run.dir={tmp}/corrupt.pt/run"], "corrupt.pt is a file, not a folder"),
    (["data=CIFAR10", "data.path={tmp}/corrupt.pt"], "data.path='{tmp}/corrupt.pt' is not allowed: expected a folder"),
    (["data/db=LMDB", "data.db.path={tmp}/corrupt.pt"], "data.db.path='{tmp}/corrupt.pt' is not allowed"),
    (["data/db=LMDB", "data.db.path={tmp}/small_db", "data.db.map_size=50000"],
     "data.db.map_size=50000 is not allowed: the database of"),
    (["hyp/optim=gd", "hyp.optim.line_search=strong_wolfe"],
     "hyp.optim.line_search='strong_wolfe' is not allowed: expected one of (None, 'armijo') for SGD"),
]


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    (tmp_path / "empty").mkdir()
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "tables" / "t.csv").mkdir(parents=True)
    _cifar_with_garbage(tmp_path / "garbage")
    _cifar_with_bad_labels(tmp_path / "labels")
    return tmp_path


def test_each_bad_input_ends_with_exit_2_and_one_line(bad_files):
    def attempt(case):
        index, (overrides, expected) = case
        folder = bad_files / f"case{index}"
        folder.mkdir()
        overrides = [o.replace("{tmp}", str(bad_files)) for o in overrides]
        expected = expected.replace("{tmp}", str(bad_files))
        result = run_entry([*TINY, "name=bad", *overrides], folder, check=False)
        return overrides, expected, result, folder

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(attempt, enumerate(BAD_INPUTS)))
    for overrides, expected, result, folder in outcomes:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (overrides, result.returncode, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("fullbatch: "), (overrides, result.stderr[-2000:])
        assert expected in lines[0], (overrides, lines[0])
        assert not list(folder.rglob("metrics.jsonl")), overrides  # nothing trained
        assert not list(folder.rglob(".hydra")), overrides  # and no run folder left behind


@pytest.mark.parametrize("overrides, key", [
    (["hyp.optim.momentum=0"], "hyp.optim.momentum"), (["hyp.optim.dampening=0.5"], "hyp.optim.dampening"),
    (["hyp/optim=adam", "hyp.optim.betas=[1.5,0.9]"], "hyp.optim.betas"),
    (["hyp/optim=adam", "hyp.optim.betas=[0.9]"], "hyp.optim.betas"), (["hyp/optim=adam", "hyp.optim.eps=-1"], "hyp.optim.eps"),
    (["impl.device=cuda:abc"], "impl.device"), (["name=" + "n" * 300], "name"), (["template=" + "t" * 300], "template"),
    (["seed=4294967296"], "seed"), (["model.width=1000000"], "model.width"), (["data.crop_padding=100000"], "data.crop_padding"),
    (["hyp.optim.lr=inf"], "hyp.optim.lr"), (["hyp.optim.weight_decay=inf"], "hyp.optim.weight_decay"),
    (["hyp.grad_reg.block_strength=inf"], "hyp.grad_reg.block_strength"), (["hyp.norm_bias.bias=nan"], "hyp.norm_bias.bias"),
    (["data.std=[0.25,nan,0.25]"], "data.std"), (["hyp.grad_reg.acc_strength=-1"], "hyp.grad_reg.acc_strength"),
    (["hyp.optim.max_backtracks=-1"], "hyp.optim.max_backtracks"),
])
def test_values_that_would_crash_or_silently_mislead_fail_validation_naming_the_key(overrides, key):
    """In-process (fast): the entry script turns the same ConfigError into one line and exit 2, as above."""
    from conftest import compose_config
    from fullbatch.errors import ConfigError
    from fullbatch.validation import validate

    with pytest.raises(ConfigError) as error:
        validate(compose_config([*TINY, *overrides]))
    assert str(error.value).startswith(f"{key}=") and "\n" not in str(error.value)


def test_world_size_without_rank_fails_naming_the_variable(monkeypatch):
    from conftest import compose_config
    from fullbatch.errors import ConfigError
    from fullbatch.validation import validate

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="^WORLD_SIZE='2' is not allowed: expected unset, or set together with RANK"):
        validate(compose_config([*TINY, "impl/setup=distributed"]))
