"""Table-driven: each bad input ends the entry script before training with exit code 2 and one line naming it."""
import os
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
    (["hyp.scheduler=cosine"], "Invalid value 'cosine', expected one of [cosine-decay, cosine-4000, linear, none]"),
    (["model.downsample=A"], "Invalid value 'A', expected one of [B, C]"),
    (["hyp.grad_reg.implementation=complex-step"], "hyp.grad_reg.implementation=complex-step: Invalid value"),
    (["hyp.grad_reg.precision=half"], "Invalid value 'half', expected one of [full, compute]"),
    (["data.batch_size=100000"], "data.batch_size=100000 is not allowed: expected at most the training set size"),
    (["data.augmentations_train=[cutout]"], "data.augmentations_train"),
    (["impl.memory=nhwc"], "Invalid value 'nhwc', expected one of [contiguous, channels_last]"),
    *([(["impl.device=cuda"], "impl.device='cuda'")] if not torch.cuda.is_available() else []),
    (["impl.dtype=float16"], "Invalid value 'float16', expected one of [float32, float64]"),
    (["impl.checkpoint.on_divergence=retry"], "Invalid value 'retry', expected one of [stop, restore]"),
    (["impl/setup=nope"], "impl/setup/nope"),
    (["impl.checkpoint.resume={tmp}/missing.pt"], "no such file"),
    (["impl.checkpoint.resume={tmp}/corrupt.pt"], "cannot be read"),
    (["impl.checkpoint.resume=true"], "no usable checkpoint"),
    (["data=CIFAR10", "data.path={tmp}/empty", "data.download=false"], "CIFAR10 is not available"),
    (["data=CIFAR10", "data.path={tmp}/garbage", "data.download=false"], "cannot read"),
    (["data=CIFAR10", "data.path={tmp}/labels", "data.download=false", "data.batch_size=4", "data.size=16",
      "data.test_size=4"], "labels must lie in"),
    (["hydra.run.dir=/proc/fullbatch-run"], "is not writable"),
    (["name="], "name='' is not allowed: expected a run name that is not empty"),
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
    (["+hyp.optim.lrr=0.1"], "+hyp.optim.lrr is not allowed: hyp.optim.lrr is not a key of the config, and keys "
     "cannot be added; did you mean hyp.optim.lr?"),
    (["hydra.run.dir="], "hydra.run.dir='' is not allowed: expected a folder of its own"),
    (["hydra.run.dir=."], "hydra.run.dir='.' is not allowed: expected a folder of its own, not the working folder"),
    (["name='" + "é" * 190 + "'"], "is longer than 255 bytes"),
    (["data=CIFAR10", "data.path={tmp}/loop"], "data.path='{tmp}/loop' is not allowed: expected a folder (it is a "
     "dangling link or a link loop)"),
    (["impl.checkpoint.resume={tmp}/payload.pt"], "cannot be read (UnpicklingError"),
    (["data=CIFAR10", "data.path={tmp}/payload", "data.download=false"], "refers to posix.mkdir, which plain data"),
]

# the same, for values that only the config checks refuse: tested in-process (the entry script's path from a
# ConfigError to one line and exit 2 is the one above), since each start of the entry script costs seconds
REFUSED_BY_VALIDATION = [
    (["model.name=resnet19"], "model.name='resnet19' is not allowed"),
    (["hyp.optim.lr=0"], "hyp.optim.lr=0"),
    (["hyp.warmup=-2"], "hyp.warmup=-2"),
    (["model=vgg11", "model.downsample=C"], "model.downsample='C' is not allowed: expected empty for vgg11"),
    (["hyp.grad_clip_norm=1"], "hyp.grad_clip_norm=1"),
    (["hyp.grad_reg.norm=1"], "hyp.grad_reg.norm=1"),
    (["hyp.label_smoothing=1.5"], "hyp.label_smoothing=1.5"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.size=0"], "data.size=0"),
    (["impl.device=tpu"], "impl.device='tpu' is not allowed: expected auto, cpu, cuda or cuda:N"),
    (["impl.dtype=float64", "impl.mixed_precision=true"], "impl.mixed_precision=True"),
    (["impl.setup.batch_shards=0"], "impl.setup.batch_shards=0"),
    (["name=."], "name='.' is not allowed"),
    (["name=.."], "name='..' is not allowed"),
    (["name=a/b"], "name='a/b' is not allowed"),
]


class Payload:
    """What a forged pickle holds: reading it with a plain unpickler would create the folder `target`."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        import os

        return os.mkdir, (self.target,)


def _cifar_with_payload(root, target):
    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], "x": Payload(target)}, handle)
    return root


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    (tmp_path / "empty").mkdir()
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "tables" / "t.csv").mkdir(parents=True)
    _cifar_with_garbage(tmp_path / "garbage")
    _cifar_with_bad_labels(tmp_path / "labels")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    torch.save({"model": {}, "step": 1, "x": Payload(tmp_path / "pwned")}, tmp_path / "payload.pt")
    _cifar_with_payload(tmp_path / "payload", tmp_path / "pwned")
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
    assert not (bad_files / "pwned").exists()  # no code ran from a forged checkpoint or data file


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
    (["data.seed=-1"], "data.seed"), (["data.subset=balanced", "data.subset_seed=-1"], "data.subset_seed"),
    (["data.size=100000000"], "data.size"), (["data.test_size=100000000"], "data.test_size"),
    (["hyp.grad_clip_norm=-inf"], "hyp.grad_clip_norm"), (["hyp.steps=???"], "hyp.steps"),
    (["template=../escape"], "template"), (["template=a/b"], "template"), (["template="], "template"),
    (["name='" + "é" * 110 + "'"], "name"), (["data=CIFAR10", "data.path="], "data.path"),
    (["impl.checkpoint.search_dir="], "impl.checkpoint.search_dir"),
    (["impl.checkpoint.search_dir=/"], "impl.checkpoint.search_dir"),
    (["impl.checkpoint.search_dir='~'"], "impl.checkpoint.search_dir"),
    (["impl.checkpoint.search_dir=."], "impl.checkpoint.search_dir"),
    (["name=${oc.env:FULLBATCH_TEST_UNSET_VARIABLE}"], ""),  # named by the first key that uses it
])
def test_values_that_would_crash_or_silently_mislead_fail_validation_naming_the_key(overrides, key):
    """In-process (fast): the entry script turns the same ConfigError into one line and exit 2, as above."""
    from conftest import compose_config
    from fullbatch.errors import ConfigError
    from fullbatch.run.validation import validate

    with pytest.raises(ConfigError) as error:
        validate(compose_config([*TINY, *overrides]))
    assert str(error.value).startswith(key) and "is not allowed" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides, expected", REFUSED_BY_VALIDATION)
def test_each_value_the_config_checks_refuse_is_named_in_one_line(overrides, expected):
    from conftest import compose_config
    from fullbatch.errors import ConfigError
    from fullbatch.run.validation import validate

    with pytest.raises(ConfigError) as error:
        validate(compose_config([*TINY, "name=bad", *overrides]))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_world_size_without_rank_fails_naming_the_variable(monkeypatch):
    from conftest import compose_config
    from fullbatch.errors import ConfigError
    from fullbatch.run.validation import validate

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="^WORLD_SIZE='2' is not allowed: expected unset, or set together with RANK"):
        validate(compose_config([*TINY, "impl/setup=distributed"]))


def test_a_start_up_error_in_an_existing_run_folder_leaves_that_run_as_it_was(tmp_path):
    existing = tmp_path / "finished-run"
    (existing / ".hydra").mkdir(parents=True)
    before = {".hydra/config.yaml": b"the run's config\n", "train_with_gradient_descent.log": b"the run's log\n",
              "metrics.jsonl": b"{}\n", "summary.json": b"{}"}
    for name, content in before.items():
        (existing / name).write_bytes(content)
    result = run_entry([*TINY, f"hydra.run.dir={existing}", "hyp.steps=0"], tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "fullbatch: hyp.steps=0 is not allowed: expected an integer >= 1"]
    after = {str(path.relative_to(existing)): path.read_bytes() for path in existing.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"run_key,name\na,b,c,d\n"], ids=["binary", "extra-fields"])
def test_a_damaged_table_is_a_warning_and_the_run_keeps_its_summary_and_the_table_its_bytes(tmp_path, caplog, content):
    from conftest import compose_config
    from fullbatch.train import run

    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "t.csv").write_bytes(content)
    with caplog.at_level("WARNING", logger="fullbatch"):
        summary = run(compose_config([*TINY, "hyp=fb1", "hyp.steps=1", f"tables={tmp_path / 'tables'}", "template=t"]),
                      output_dir=str(tmp_path / "run"))
    assert summary["status"] == "finished" and (tmp_path / "run" / "summary.json").exists()
    assert (tmp_path / "tables" / "t.csv").read_bytes() == content
    [warning] = [r for r in caplog.records if "Could not write the table row" in r.getMessage()]
    assert warning.levelname == "WARNING" and "t.csv" in warning.getMessage()


def test_a_non_finite_validation_loss_is_a_divergence():
    from fullbatch.training.trainer import Trainer

    finite = dict(train_loss=2.3, pre_clip_norm=1.0)
    assert not Trainer.diverged(None, finite) and not Trainer.diverged(None, dict(finite, val_loss=2.0))
    assert Trainer.diverged(None, dict(finite, val_loss=float("nan")))
    assert Trainer.diverged(None, dict(finite, val_loss=float("inf")))


def test_forged_pickles_in_data_and_checkpoints_do_not_run(tmp_path):
    from fullbatch.data.cifar import load_cifar
    from fullbatch.errors import DatasetUnavailable
    from fullbatch.training.checkpoint import CheckpointUnusable, load_checkpoint

    _cifar_with_payload(tmp_path / "data", tmp_path / "pwned")
    with pytest.raises(DatasetUnavailable, match=r"data_batch_1: it refers to posix\.mkdir"):
        load_cifar("CIFAR10", str(tmp_path / "data"), download=False)
    torch.save({"model": {"w": torch.ones(2)}, "x": Payload(tmp_path / "pwned")}, tmp_path / "model.pt")
    with pytest.raises(CheckpointUnusable, match="cannot be read"):
        load_checkpoint(str(tmp_path / "model.pt"), "cpu")
    assert not (tmp_path / "pwned").exists()
    plain = {"model": {"w": torch.ones(2)}, "step": 3, "lineage": "abc", "cpu_rng": torch.get_rng_state()}
    torch.save(plain, tmp_path / "plain.pt")  # what the project's own checkpoints hold still loads
    assert load_checkpoint(str(tmp_path / "plain.pt"), "cpu")["step"] == 3


def test_checkpoint_searches_end_at_symlink_loops_and_skip_pipes(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    from fullbatch.training.checkpoint import save_checkpoint

    save_checkpoint({"step": 1}, str(tmp_path / "run" / "checkpoints"), 1, "h", keep=2, lineage="a")
    (tmp_path / "run" / "loop").symlink_to(tmp_path)
    (tmp_path / "run" / "checkpoints" / "up").symlink_to(tmp_path / "run")
    os.mkfifo(tmp_path / "run" / "checkpoints" / "step-0000002.json")  # a marker no writer will ever finish
    search = (f"from fullbatch.training.checkpoint import find_checkpoints; "
              f"print([step for step, _ in find_checkpoints([{str(tmp_path)!r}], 'h')])")
    result = subprocess.run([sys.executable, "-c", search], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.stdout.strip() == "[1]", result.stderr[-2000:]


def test_pruning_counts_a_checkpoint_once_however_its_folder_is_reached(tmp_path):
    from fullbatch.training.checkpoint import find_checkpoints, save_checkpoint

    real = tmp_path / "scratch"
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)  # the search folder, spelt through a link
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, str(real / "run" / "checkpoints"), step, "h", keep=1,
                        search_dir=str(tmp_path / "linked"), lineage="a")
    assert [step for step, _ in find_checkpoints([str(tmp_path / "linked")], "h")] == [3]


def test_a_folder_hydra_named_differently_is_cleaned_only_when_all_of_it_is_fresh(tmp_path):
    from fullbatch.run.folder import FolderSnapshot

    before = FolderSnapshot(str(tmp_path / "checked"))  # what the check composed; Hydra then named another one
    fresh = tmp_path / "outputs" / "12-00-01"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / ".hydra" / "config.yaml").write_text("x")
    (fresh / "train_with_gradient_descent.log").write_text("error\n")
    before.restore(str(fresh), "train_with_gradient_descent.log")
    assert not fresh.exists() and (tmp_path / "outputs").exists()
    older = tmp_path / "outputs" / "11-00-00"
    (older / ".hydra").mkdir(parents=True)
    (older / ".hydra" / "config.yaml").write_text("a run's config")
    (older / "train_with_gradient_descent.log").write_text("a run's log\n")
    (older / "metrics.jsonl").write_text("{}\n")  # not only Hydra's files: another run's folder
    before.restore(str(older), "train_with_gradient_descent.log")
    assert (older / ".hydra" / "config.yaml").read_text() == "a run's config" and (older / "metrics.jsonl").exists()
