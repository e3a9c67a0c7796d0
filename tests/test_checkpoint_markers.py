"""A damaged checkpoint marker means "skip this checkpoint and say so", never a crash on every requeue; a run
whose checkpoints are all damaged says loudly that it starts again, and resume=true refuses."""
import json
import logging

import pytest
import torch

from fullbatch.errors import ConfigError
from fullbatch.run.resume import restore
from fullbatch.training.checkpoint import CheckpointUnusable, checkpoint_candidates, load_checkpoint, save_checkpoint


def _save_two(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    for step in (1, 2):
        save_checkpoint({"weights": torch.full((100,), float(step)), "step": step}, str(folder), step, "h", keep=2)
    return folder


@pytest.mark.parametrize("damage", [
    lambda m: m.replace('"step"', '"rtep"'),  # a flipped bit in a key
    lambda m: json.dumps(list(json.loads(m).items())),  # a list instead of an object
    lambda m: m.replace('"step": 2', '"step": "2"'),  # a string step
    lambda m: json.dumps({k: v for k, v in json.loads(m).items() if k != "bytes"}),  # a missing field
    lambda m: m[: len(m) // 2],  # truncated JSON
])
def test_a_damaged_newest_marker_is_skipped_with_a_warning(tmp_path, caplog, damage):
    folder = _save_two(tmp_path)
    marker = folder / "step-0000002.json"
    marker.write_text(damage(marker.read_text()))
    with caplog.at_level(logging.WARNING, logger="fullbatch"):
        candidates = checkpoint_candidates(str(tmp_path), "h")
    assert [c.rsplit("/", 1)[1] for c in candidates] == ["step-0000001.pt"]
    assert load_checkpoint(candidates[0], "cpu")["step"] == 1
    assert "step-0000002.json is unreadable or damaged" in caplog.text


def test_a_checksum_mismatch_is_called_a_checksum_mismatch(tmp_path):
    folder = _save_two(tmp_path)
    checkpoint = folder / "step-0000002.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit flipped
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(CheckpointUnusable, match="SHA-256 checksum differs"):
        load_checkpoint(str(checkpoint), "cpu")


class _Trainer:
    device = "cpu"

    def __init__(self):
        self.loaded = None

    def load_state_dict(self, state):
        self.loaded = state


class _Cfg:
    def __init__(self, resume, search_dir):
        self.resume, self.search_dir = resume, search_dir


def _damage_every_checkpoint(folder):
    for checkpoint in folder.glob("step-*.pt"):
        checkpoint.write_bytes(checkpoint.read_bytes()[:50])


def test_when_every_checkpoint_is_damaged_auto_warns_loudly_and_true_refuses(tmp_path, caplog):
    _damage_every_checkpoint(_save_two(tmp_path))
    trainer = _Trainer()
    with caplog.at_level(logging.WARNING, logger="fullbatch"):
        assert restore(trainer, _Cfg("auto", str(tmp_path)), "h") is None
    assert trainer.loaded is None and "is damaged (2 tried); STARTING AGAIN FROM STEP 0" in caplog.text
    with pytest.raises(ConfigError, match="resume=true is not allowed here: no usable checkpoint"):
        restore(trainer, _Cfg("true", str(tmp_path)), "h")
