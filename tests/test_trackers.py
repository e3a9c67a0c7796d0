"""logger=tensorboard and logger=wandb: every metrics row reaches the tracker at its step, a resumed run
continues the same log without duplicate steps, and a missing package is one line naming the extra."""
import glob
import json
import os

import pytest

from conftest import TINY, compose_config, run_entry
from fullbatch.errors import ConfigError
from fullbatch.train import run
from fullbatch.visualization.runs import joined_metrics, read_metrics

COMMON = [*TINY, "hyp=fbclip", "hyp.steps=6", "hyp.warmup=2", "impl.validate_every_nth_step=3",
          "impl.checkpoint.save_every_nth_step=3"]


def _stop_after_step_3(folder):
    """Leave a finished 6-step run as if it had been stopped right after its checkpoint of step 3, with the
    tracker holding steps 4 to 6 of the lost session."""
    for name in ("summary.json", "model.pt", "checkpoints/step-0000006.pt", "checkpoints/step-0000006.json"):
        os.remove(os.path.join(folder, name))


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(folder, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _numeric(rows):
    values = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                values.setdefault(key, []).append((row["step"], float(value)))
    return values


def test_tensorboard_events_match_metrics_jsonl_and_a_resumed_run_continues_them(tmp_path):
    pytest.importorskip("tensorboard")
    first = str(tmp_path / "outputs" / "tb" / "first")
    run(compose_config([*COMMON, "name=tb", "logger=tensorboard"]), output_dir=first,
        choices={"hyp": "fbclip"})
    events = os.path.join(first, "tensorboard")
    expected = _numeric(read_metrics(first))
    assert {"lr", "train_loss", "train_acc", "grad_norm", "clipped", "val_acc", "seconds"} <= set(expected)
    logged = _scalars(events)
    assert set(logged) == set(expected)
    for tag, points in expected.items():
        assert [step for step, _ in logged[tag]] == [step for step, _ in points], tag
        assert [value for _, value in logged[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag

    _stop_after_step_3(first)
    second = str(tmp_path / "outputs" / "tb" / "second")
    summary = run(compose_config([*COMMON, "name=tb", "logger=tensorboard"]), output_dir=second)
    assert summary["resumed_from"].endswith("step-0000003.pt")
    assert json.load(open(os.path.join(second, "tracker.json"))) == {"tensorboard": events}  # the same folder
    assert not os.path.exists(os.path.join(second, "tensorboard"))
    expected = _numeric(joined_metrics(second))  # steps 1-3 of the first session, 4-6 of the second
    logged = _scalars(events)
    for tag, points in expected.items():
        assert [step for step, _ in logged[tag]] == [step for step, _ in points], tag  # no step twice
        assert [value for _, value in logged[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_wandb_offline_leaves_a_run_folder_and_a_resumed_run_continues_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home" / key.lower()))  # nothing outside the test folder
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = str(tmp_path / "outputs" / "wb" / "first")
    result = run_entry([*COMMON, "name=wb", "logger=wandb", "logger.group=g", f"hydra.run.dir={first}"], tmp_path)
    run_id = json.load(open(os.path.join(first, "tracker.json")))["wandb_id"]
    offline = glob.glob(os.path.join(first, "wandb", f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and glob.glob(os.path.join(offline[0], f"run-{run_id}.wandb")), result.stderr
    _stop_after_step_3(first)
    second = str(tmp_path / "outputs" / "wb" / "second")
    run_entry([*COMMON, "name=wb", "logger=wandb", "logger.group=g", f"hydra.run.dir={second}"], tmp_path)
    assert json.load(open(os.path.join(second, "summary.json")))["resumed_from"].endswith("step-0000003.pt")
    assert json.load(open(os.path.join(second, "tracker.json"))) == {"wandb_id": run_id}  # the same W&B run
    assert len(glob.glob(os.path.join(second, "wandb", f"offline-run-*-{run_id}", f"run-{run_id}.wandb"))) == 1
    record = open(glob.glob(os.path.join(first, "wandb", f"offline-run-*-{run_id}", f"run-{run_id}.wandb"))[0],
                  "rb").read()  # W&B's own binary log: the config with the presets, and the metrics' keys
    for text in (b"presets", b"fbclip", b"grad_clip", b"train_loss", b"grad_norm", b"pre_clip_norm", b"val_acc"):
        assert text in record, text


def test_a_missing_tracker_package_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    from fullbatch.run import trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name, *args: None if name == "wandb" else real(name, *args))
    with pytest.raises(ConfigError, match=r'^logger=wandb is not allowed here: the wandb package is missing; install '
                                          r'the optional extra: pip install -e "\.\[wandb\]"$'):
        run(compose_config([*TINY, "hyp=fb1", "hyp.steps=1", "logger=wandb"]), output_dir="unused")
    assert not os.path.exists("unused")


def test_logger_choices_are_checked_while_composing(tmp_path):
    result = run_entry([*TINY, "hyp=fb1", "hyp.steps=1", "logger=mlflow"], tmp_path, check=False)
    assert result.returncode == 2 and "logger" in result.stderr and len(result.stderr.strip().splitlines()) == 1
