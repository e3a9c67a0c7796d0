"""Checkpoints that are either complete or absent.

Each checkpoint is `step-N.pt`, written under a temporary name, flushed to disk and renamed; then a small
marker `step-N.json` (step, config hash, size and SHA-256 of the file) is written the same way. Only
checkpoints with a marker count, so a run killed mid-save leaves nothing that looks finished, and a file that
was truncated or damaged later is recognised before it is loaded. The newest `keep` checkpoints are kept.
"""
import glob
import hashlib
import json
import logging
import os

import torch

from fullbatch.files import atomic_write

log = logging.getLogger("fullbatch")


class CheckpointUnusable(RuntimeError):
    """A checkpoint file is missing, truncated or damaged."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(state, folder, step, config_hash, keep):
    """Write `state` as the checkpoint of `step` in `folder`; drop all but the newest `keep`.

    Returns the path, or None when the save failed (full disk, unwritable folder): the error is logged, the
    earlier checkpoints stay untouched and training goes on."""
    path = os.path.join(folder, f"step-{step:07d}.pt")
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(state, handle))
        marker = dict(step=step, config_hash=config_hash, file=os.path.basename(path),
                      bytes=os.path.getsize(path), sha256=_sha256(path))
        atomic_write(path[:-3] + ".json", lambda handle: handle.write(json.dumps(marker).encode()))
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        log.error(f"Could not write checkpoint {path} ({error}); earlier checkpoints are kept, training goes on")
        return None
    for old in _markers(folder)[:-keep]:
        for stale in (old, old[:-5] + ".pt"):
            if os.path.exists(stale):
                os.remove(stale)
    return path


def _markers(folder):
    return sorted(glob.glob(os.path.join(folder, "step-*.json")))


MARKER_FIELDS = dict(step=int, config_hash=str, file=str, bytes=int, sha256=str)


def read_marker(checkpoint_path):
    """The checkpoint's marker as a dict with every field of the right type, or None if it is missing or damaged
    (a flipped bit in a key, a truncated file, a list instead of an object: all mean "do not trust it")."""
    try:
        with open(checkpoint_path[:-3] + ".json") as handle:
            marker = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    for key, kind in MARKER_FIELDS.items():
        if not isinstance(marker.get(key), kind) or isinstance(marker.get(key), bool):
            return None
    return marker


def checkpoint_candidates(search_dir, config_hash):
    """Complete checkpoints below `search_dir` written for `config_hash`, newest first; a damaged marker is
    skipped with a warning."""
    found = []
    for marker_path in glob.glob(os.path.join(search_dir, "**", "checkpoints", "step-*.json"), recursive=True):
        checkpoint = marker_path[:-5] + ".pt"
        marker = read_marker(checkpoint)
        if marker is None:
            log.warning(f"Skipping checkpoint {checkpoint}: its marker {marker_path} is unreadable or damaged")
        elif marker["config_hash"] == config_hash:
            found.append((marker["step"], os.path.getmtime(marker_path), checkpoint))
    return [path for _, _, path in sorted(found, reverse=True)]


def load_checkpoint(path, device):
    """Load a checkpoint after checking it against its marker; raise CheckpointUnusable if it does not match."""
    marker = read_marker(path)
    if not os.path.isfile(path):
        raise CheckpointUnusable(f"{path} does not exist")
    if marker is not None:
        size = os.path.getsize(path)
        if size != marker["bytes"]:
            raise CheckpointUnusable(f"{path} is truncated ({size} bytes, its marker says {marker['bytes']})")
        if _sha256(path) != marker["sha256"]:
            raise CheckpointUnusable(f"{path} is damaged (its SHA-256 checksum differs from its marker's)")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # unpickling errors have many types
        raise CheckpointUnusable(f"{path} cannot be read ({type(error).__name__}: {error})") from None
