"""crunch_loss_landscape.py refuses bad input with exit code 2 and one line: settings out of range, damaged run
files beside a checkpoint, and checkpoints that are unreadable or would run code when unpickled.

The range and file checks run in-process (fast); a few cases go through the real entry script to prove the path
from a ConfigError to one line on stderr."""
import functools
import json
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, TINY, compose_config
from fullbatch.errors import ConfigError
from fullbatch.models import build_model

CRUNCH = os.path.join(ROOT, "crunch_loss_landscape.py")
DATA = ["data=synthetic", "data.size=256", "data.test_size=128", "data.batch_size=64", "impl.device=cpu"]
RUN_CONFIG = {"name": "tiny", "model": {"name": "resnet20", "width": 4, "downsample": "B"},
              "data": {"name": "synthetic", "classes": 10, "image_size": 32}}


class MakesAFolder:
    """Unpickling it calls os.mkdir: the stand-in for a payload that a malicious model.pt would run."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def _run_folder(root):
    """A run folder as Hydra leaves it, with a real (untrained) resnet20 model.pt and its .hydra/config.yaml."""
    folder = root / "run"
    (folder / ".hydra").mkdir(parents=True)
    torch.save(build_model("resnet20", 4, 10, 32, "B").state_dict(), folder / "model.pt")
    (folder / ".hydra" / "config.yaml").write_text(json.dumps(RUN_CONFIG))  # JSON is YAML
    return folder


@functools.lru_cache(maxsize=None)
def _composed(choices):
    return compose_config([*DATA, *choices], config_name="crunch")


def _crunch_config(*overrides):
    """The crunch config of these overrides. Composing costs about a second, so each choice of the viz group is
    composed once and the values are merged into a copy (the entry-script test below composes for real)."""
    choices = tuple(item for item in overrides if item.startswith("viz="))
    values = [item for item in overrides if item not in choices]
    return OmegaConf.merge(_composed(choices), OmegaConf.from_dotlist(values))  # a new config: the cached one stays


def _crunch_in_process(checkpoint, *overrides, output_dir=None):
    from fullbatch.visualization.crunch import crunch

    cfg = _crunch_config("viz=none", f"checkpoint={checkpoint}", *overrides)
    return crunch(cfg, str(output_dir or os.path.dirname(checkpoint)), overrides)


def _one_line_error(call):
    with pytest.raises(ConfigError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and " is not allowed: " in message, message
    return message


# (overrides, the start of the one line); each value is a sibling of one the adversarial user found
BAD_SETTINGS = [
    (["viz.xmax=inf"], "viz.xmax=inf is not allowed: expected a finite number"),
    (["viz.xmin=-inf"], "viz.xmin=-inf is not allowed: expected a finite number"),
    (["viz=2d", "viz.ymax=nan"], "viz.ymax=nan is not allowed: expected a finite number"),
    (["viz.xmin=1", "viz.xmax=0"], "viz.xmin/xmax=(1.0, 0.0) is not allowed: expected xmin < xmax"),
    (["viz=2d", "viz.ymin=1", "viz.ymax=1"], "viz.ymin/ymax=(1.0, 1.0) is not allowed: expected ymin < ymax"),
    (["viz.flatness_radius=inf"], "viz.flatness_radius=inf is not allowed: expected a finite number > 0"),
    (["viz.flatness_radius=nan"], "viz.flatness_radius=nan is not allowed: expected a finite number > 0"),
    (["viz.flatness_radius=0"], "viz.flatness_radius=0.0 is not allowed: expected a finite number > 0"),
    (["viz.flatness_radius=2"], "viz.flatness_radius=2.0 is not allowed: expected a number > 0 whose -radius"),
    (["viz=2d", "viz.ymin=-0.1", "viz.flatness_radius=0.5"], "viz.flatness_radius=0.5 is not allowed"),
    (["viz.resolution=1"], "viz.resolution=1 is not allowed: expected an integer in [2, 1001]"),
    (["viz.resolution=100000"], "viz.resolution=100000 is not allowed: expected an integer in [2, 1001]"),
    (["viz.train_examples=0"], "viz.train_examples=0 is not allowed: expected empty (all) or an integer >= 1"),
    (["viz.train_examples=-5"], "viz.train_examples=-5 is not allowed: expected empty (all) or an integer >= 1"),
    (["viz.val_examples=0"], "viz.val_examples=0 is not allowed"),
    (["viz.seed=-1"], "viz.seed=-1 is not allowed: expected an integer in [0, 2**32)"),
    (["viz.seed=4294967296"], "viz.seed=4294967296 is not allowed: expected an integer in [0, 2**32)"),
    (["seed=-1"], "seed=-1 is not allowed: expected an integer in [0, 2**32)"),
    (["data.seed=-1"], "data.seed=-1 is not allowed: expected an integer in [0, 2**32)"),
    (["name=.."], "name='..' is not allowed"),
    (["impl.threads=-1"], "impl.threads=-1 is not allowed"),
    (["impl.eval_batch_size=0"], "impl.eval_batch_size=0 is not allowed"),
    (["data.mean=[0.5,inf,0.5]"], "data.mean=inf is not allowed: expected a finite number"),
    (["checkpoints=[a.pt,./a.pt]"], "checkpoints=['./a.pt', 'a.pt'] is not allowed: expected each checkpoint once"),
    (["checkpoints=[a.pt,b.pt]", "labels=[x]"], "labels=['x'] is not allowed: expected one label per checkpoint"),
    (["checkpoints=[a.pt,b.pt]", "labels=[x,x,y]"], "labels=['x', 'x', 'y'] is not allowed: expected distinct names"),
]


@pytest.mark.parametrize("overrides, expected", BAD_SETTINGS, ids=[" ".join(case[0]) for case in BAD_SETTINGS])
def test_settings_out_of_range_are_refused_naming_the_key(overrides, expected):
    from fullbatch.visualization.crunch import validate_crunch

    cfg = _crunch_config("checkpoint=c.pt", *overrides)
    assert _one_line_error(lambda: validate_crunch(cfg)).startswith(expected)


def test_default_settings_of_every_viz_kind_pass():
    from fullbatch.visualization.crunch import validate_crunch

    for kind in ("none", "1d", "2d"):
        validate_crunch(_crunch_config(f"viz={kind}", "checkpoint=a.pt"))


def _write(relative, content):
    """A writer of one run file below the run folder; bytes as they are, anything else as JSON."""
    def write(folder):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return write


def _without(section, key=None):
    config = json.loads(json.dumps(RUN_CONFIG))
    holder, name = (config, section) if key is None else (config[section], key)
    del holder[name]
    return config


def _with(section, key, value):
    config = json.loads(json.dumps(RUN_CONFIG))
    config[section][key] = value
    return config


def _no_hydra_folder(folder):
    (folder / ".hydra" / "config.yaml").unlink()
    (folder / ".hydra").rmdir()


# (how to damage the run folder, text the one line must contain)
BAD_RUN_FILES = [
    ([_write(".hydra/config.yaml", b"model: {name: resnet20\n  width: [")], "config.yaml is not valid YAML at line"),
    ([_write(".hydra/config.yaml", b"\xff\xfe\x00binary")], "config.yaml cannot be read (UnicodeDecodeError)"),
    ([_write(".hydra/config.yaml", [1, 2])], "config.yaml holds a list, not a mapping with model and data"),
    ([_write(".hydra/config.yaml", b"")], "config.yaml holds nothing, not a mapping"),
    ([_write(".hydra/config.yaml", _without("model"))], "config.yaml has no model section"),
    ([_write(".hydra/config.yaml", _without("data"))], "config.yaml has no data section"),
    ([_write(".hydra/config.yaml", {**RUN_CONFIG, "model": "resnet20"})], "config.yaml has no model section"),
    ([_write(".hydra/config.yaml", _without("model", "name"))], "config.yaml has no model.name; expected one of"),
    ([_write(".hydra/config.yaml", _without("model", "width"))], "has no model.width; expected an integer in [1, 4"),
    ([_write(".hydra/config.yaml", _with("model", "width", "4"))], "has model.width='4'; expected an integer"),
    ([_write(".hydra/config.yaml", _with("model", "width", 0))], "has model.width=0; expected an integer in [1, 4096]"),
    ([_write(".hydra/config.yaml", _with("model", "name", "resnet19"))], "has model.name='resnet19'; expected one of"),
    ([_write(".hydra/config.yaml", _with("model", "downsample", "A"))], "has model.downsample='A'; expected B or C"),
    ([_write(".hydra/config.yaml", _without("data", "classes"))], "has no data.classes; expected an integer >= 2"),
    ([_write(".hydra/config.yaml", _with("data", "image_size", "big"))], "the data section of its run config"),
    ([_write(".hydra/config.yaml", _with("data", "classes", 1))], "has data.classes=1; expected an integer"),
    ([_write(".hydra/config.yaml", _with("data", "augment", True))], "the data section of its run config"),
    ([_write(".hydra/config.yaml", _with("data", "name", "MNIST"))], "the data section of its run config"),
    ([_write(".hydra/overrides.yaml", b"[unclosed")], "overrides.yaml is not valid YAML"),
    ([_write(".hydra/overrides.yaml", [1, 2])], "overrides.yaml is not a list of overrides"),
    ([_write("summary.json", b"{not json")], "summary.json is not valid JSON (JSONDecodeError"),
    ([_write("summary.json", ["a", "list"])], "summary.json holds a JSON list, not an object"),
    ([lambda folder: os.mkfifo(folder / "summary.json")], "summary.json is not a regular file"),  # no endless wait
    ([_no_hydra_folder, _write("summary.json", {"config": "text"})], "summary.json (its config) holds a str"),
    ([_no_hydra_folder, _write("summary.json", {"config": _without("model", "width")})],
     "summary.json (its config) has no model.width"),
    ([_write(".hydra/config.yaml", _without("data", "name"))], "the data section of its run config"),
]


@pytest.mark.parametrize("damage, expected", BAD_RUN_FILES, ids=[case[1][:40] for case in BAD_RUN_FILES])
def test_damaged_run_files_beside_a_checkpoint_are_refused_in_one_line(tmp_path, damage, expected):
    folder = _run_folder(tmp_path)
    for step in damage:
        step(folder)
    checkpoint = str(folder / "model.pt")
    message = _one_line_error(lambda: _crunch_in_process(checkpoint))
    assert message.startswith(f"checkpoint={checkpoint!r} is not allowed: ") and expected in message, message


def _pickled(target, protocol):
    return lambda path: path.write_bytes(pickle.dumps(MakesAFolder(target), protocol=protocol))


# (how to write model.pt, text the one line must contain)
BAD_CHECKPOINTS = [
    (lambda path, target: torch.save({"model": MakesAFolder(target)}, path), "it refers to posix.mkdir"),
    (lambda path, target: _pickled(target, 2)(path), "it refers to posix.mkdir"),
    (lambda path, target: _pickled(target, pickle.HIGHEST_PROTOCOL)(path), "it cannot be read as a PyTorch file"),
    (lambda path, target: torch.save({"x": np.zeros(3)}, path), "numpy"),  # not code, but not weights either
    (lambda path, target: path.write_bytes(b"\x00" * 100), "it cannot be read as a PyTorch file of weights"),
    (lambda path, target: path.write_bytes(b""), "it cannot be read as a PyTorch file of weights (EOFError)"),
    (lambda path, target: path.write_text("hello"), "it cannot be read as a PyTorch file of weights"),
    (lambda path, target: path.mkdir(), "it is not a file"),
    (lambda path, target: os.mkfifo(path), "it is not a file"),
    (lambda path, target: torch.save(torch.zeros(3), path), "it does not fit resnet20 width 4"),
    (lambda path, target: torch.save([1, 2], path), "it does not fit resnet20 width 4"),
    (lambda path, target: torch.save({"conv1.weight": "text"}, path), "it does not fit resnet20 width 4"),
    (lambda path, target: torch.save({key: value.fill_(float("nan")) if value.is_floating_point() else value
                                      for key, value in build_model("resnet20", 4, 10, 32, "B").state_dict().items()},
                                     path), "its weights hold NaN or infinity"),
]


@pytest.mark.parametrize("write, expected", BAD_CHECKPOINTS, ids=[case[1][:40] for case in BAD_CHECKPOINTS])
def test_unreadable_or_code_running_checkpoints_are_refused_without_running_anything(tmp_path, write, expected):
    folder = _run_folder(tmp_path)
    checkpoint, target = folder / "model.pt", tmp_path / "pwned"
    checkpoint.unlink()
    write(checkpoint, str(target))
    message = _one_line_error(lambda: _crunch_in_process(str(checkpoint)))
    assert message.startswith(f"checkpoint={str(checkpoint)!r} is not allowed: ") and expected in message, message
    assert not target.exists(), "unpickling the checkpoint ran its payload"


def test_data_other_than_the_model_was_built_for_is_refused_even_when_allowed(tmp_path):
    checkpoint = str(_run_folder(tmp_path) / "model.pt")
    message = _one_line_error(lambda: _crunch_in_process(checkpoint, "data.classes=5", "allow_other_data=true"))
    assert message.startswith("data.classes=5 is not allowed: expected 10, as the model in")


def test_a_real_model_and_training_checkpoint_still_load(tmp_path):
    """Written by this project's own training, read through the weights-only loader; the run was started
    in-process, so its config comes from summary.json. Also: more examples than there are is refused. (The
    slow tests in test_landscape.py crunch real runs started by Hydra all the way to the figure.)"""
    from fullbatch.train import run

    run(compose_config([*TINY, "name=real", "hyp=fb1", "hyp.steps=1", "hyp.warmup=0", f"tables={tmp_path / 't'}"]),
        output_dir=str(tmp_path / "real"))
    model, step = tmp_path / "real" / "model.pt", tmp_path / "real" / "checkpoints" / "step-0000001.pt"
    assert _crunch_in_process(str(model)) is None and _crunch_in_process(str(step)) is None
    message = _one_line_error(lambda: _crunch_in_process(str(step), "viz=1d", "viz.train_examples=100000"))
    assert message.startswith("viz.train_examples=100000 is not allowed: expected empty (all) or an integer in "
                              "[1, 256]")


def _npz(**arrays):
    return lambda path: np.savez(path, **arrays)


def _npy(path):
    with open(path, "wb") as handle:  # np.save would append .npy to the name
        np.save(handle, np.zeros(3))


QUANTITIES = ("train_loss", "train_acc", "val_loss", "val_acc")
GOOD = dict(alphas=np.linspace(-1, 1, 3), labels=np.array(["a"]), **{key: np.ones((1, 3)) for key in QUANTITIES})

# (how to write landscape.npz, text the one line must contain)
BAD_LANDSCAPES = [
    (lambda path: None, "it cannot be read as a .npz file (FileNotFoundError)"),
    (lambda path: path.write_bytes(b"garbage"), "it cannot be read as a .npz file"),
    (_npy, "it is not a .npz file of named arrays"),
    (_npz(**{**GOOD, "labels": np.array([{"a": 1}], dtype=object)}), "it cannot be read as a .npz file (ValueError)"),
    (_npz(**{key: value for key, value in GOOD.items() if key != "val_acc"}), "it lacks val_acc"),
    (_npz(**{**GOOD, "train_loss": np.ones((2, 3))}), "train_loss do not match its labels and coordinates (1, 3)"),
    (_npz(**{**GOOD, "alphas": np.array([0.0])}), "its coordinates (alphas, betas) are not lists of at least two"),
    (_npz(**{**GOOD, "labels": np.array("a")}), "its labels are not a list of names"),
    (lambda path: os.mkfifo(path), "it is not a regular file"),
]


def test_a_sound_landscape_file_loads(tmp_path):
    from fullbatch.visualization.plots import load_landscape

    np.savez(tmp_path / "landscape.npz", **GOOD)
    assert load_landscape(str(tmp_path / "landscape.npz"))["labels"] == ["a"]


@pytest.mark.parametrize("write, expected", BAD_LANDSCAPES, ids=[case[1][:40] for case in BAD_LANDSCAPES])
def test_replotting_a_damaged_landscape_file_ends_with_one_line(tmp_path, capsys, write, expected):
    from fullbatch.visualization.plots import main as replot

    path = tmp_path / "landscape.npz"
    write(path)
    with pytest.raises(SystemExit) as stop:
        replot([str(path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"fullbatch: landscape={str(path)!r} is not allowed: ") and expected in lines[0]


def _crunch_script(overrides, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, CRUNCH, *DATA, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_entry_script_turns_each_refusal_into_exit_2_and_one_line(tmp_path):
    """Two representative cases through the real command line, a file and a setting (each start costs seconds:
    torch and Hydra); the other refusals are the same ConfigError, tested in-process above."""
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save(MakesAFolder(str(tmp_path / "pwned")), evil / "model.pt")
    cases = [([f"checkpoint={evil / 'model.pt'}"], f"fullbatch: checkpoint='{evil / 'model.pt'}' is not allowed: "
                                                   "it refers to posix.mkdir"),
             (["viz.xmax=inf", "checkpoint=a.pt"], "fullbatch: viz.xmax=inf is not allowed: expected a finite number")]

    def attempt(numbered):
        number, (overrides, _) = numbered
        folder = tmp_path / f"case{number}"
        folder.mkdir()
        return _crunch_script(overrides, folder), folder

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(attempt, enumerate(cases)))
    for (overrides, expected), (result, folder) in zip(cases, outcomes):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert expected in lines[0], lines[0]
        assert not list(folder.rglob(".hydra")), overrides  # no run folder left behind
    assert not (tmp_path / "pwned").exists(), "unpickling the checkpoint ran its payload"
