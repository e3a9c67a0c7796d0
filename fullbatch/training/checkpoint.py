"""Checkpoints that are either complete or absent.

Each checkpoint is `step-N.pt`, written under a temporary name, flushed to disk and renamed; then a small
marker `step-N.json` (step, config hash, size and SHA-256 of the file) is written the same way. Only
checkpoints with a marker count, so a run killed mid-save leaves nothing that looks finished, and a file that
was truncated or damaged later is recognised before it is loaded. The newest `keep` checkpoints of a run (its
name and config, across the folders of its requeues) are kept.
"""
import glob
import hashlib
import json
import logging
import os
import time

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


STALE_SECONDS = 3600  # a temporary or marker-less file untouched this long was left by a killed writer


def save_checkpoint(state, folder, step, config_hash, keep, search_dir=None):
    """Write `state` as the checkpoint of `step` in `folder`; keep only the newest `keep` of this config in
    `folder` and under `search_dir` (the earlier run folders a requeued run resumed from), and remove what
    killed writers left behind there.

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
    folders = [os.path.dirname(folder)] + ([search_dir] if search_dir else [])
    newest_written = sorted(find_checkpoints(folders, config_hash, warn=False, with_times=True),
                            key=lambda found: found[2], reverse=True)  # by when, not by step: a fresh run
    for _, old, _ in newest_written[keep:]:                          # beside a longer one keeps its own
        if old != os.path.abspath(path):
            _remove(old, old[:-3] + ".json")
    remove_stale_files(folders)
    return path


def _remove(*paths):
    for stale in paths:
        try:
            os.remove(stale)
        except OSError:  # already gone (a concurrent run pruned it) or not ours to remove
            pass


def remove_stale_files(folders, now=None):
    """Delete `*.tmp-*` files and checkpoints without a marker that no writer has touched for an hour."""
    now = time.time() if now is None else now
    for folder in folders:
        pattern = os.path.join(glob.escape(folder), "**", "checkpoints", "")
        for checkpoints in glob.glob(pattern, recursive=True):
            for path in glob.glob(os.path.join(checkpoints, "*.tmp-*")) + glob.glob(os.path.join(checkpoints, "*.pt")):
                orphan = ".tmp-" in path or not os.path.exists(path[:-3] + ".json")
                try:
                    old = now - os.path.getmtime(path) > STALE_SECONDS
                except OSError:
                    continue
                if orphan and old:
                    log.info(f"Removing {path}, left by an interrupted checkpoint write")
                    _remove(path)


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


def find_checkpoints(folders, config_hash, warn=True, with_times=False):
    """(step, path) of the complete checkpoints below `folders` written for `config_hash`, newest step first
    ((step, path, marker time) with `with_times`); a damaged marker is skipped (with a warning if `warn`)."""
    found = {}
    for folder in folders:
        pattern = os.path.join(glob.escape(folder), "**", "checkpoints", "step-*.json")
        for marker_path in glob.glob(pattern, recursive=True):
            checkpoint = os.path.abspath(marker_path[:-5] + ".pt")
            marker = read_marker(checkpoint)
            if marker is None:
                if warn:
                    log.warning(f"Skipping checkpoint {checkpoint}: its marker {marker_path} is unreadable or damaged")
            elif marker["config_hash"] == config_hash:
                try:
                    found[checkpoint] = (marker["step"], os.path.getmtime(marker_path))
                except OSError:  # removed meanwhile by a concurrent run of the same config
                    continue
    ordered = sorted(found.items(), key=lambda item: item[1], reverse=True)
    return [(step, path, when) if with_times else (step, path) for path, (step, when) in ordered]


def checkpoint_candidates(search_dir, config_hash):
    """Paths of the complete checkpoints below `search_dir` written for `config_hash`, newest first."""
    return [path for _, path in find_checkpoints([search_dir], config_hash)]


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
