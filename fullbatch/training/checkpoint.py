"""Checkpoints that are either complete or absent, and clean-up that touches only a run's own files.

Each checkpoint is `step-N.pt`. It is written under a temporary name that carries the run's lineage (the id a
fresh run draws and every requeue that resumes it inherits) and flushed to disk; then a small marker
`step-N.json` (step, config hash, lineage, size and SHA-256 of the file) is written atomically, and only then is
the checkpoint renamed into place. A checkpoint counts only when both exist, so a run killed mid-save leaves
nothing that looks finished, and a file that was truncated or damaged later is recognised before it is loaded.
The newest `keep` checkpoints of a lineage are kept across the folders of its requeues. Pruning and the removal
of what killed writers left behind only ever touch files named with, or marked with, this run's lineage: a
search folder may hold other people's work.
"""
import hashlib
import json
import logging
import os
import re
import time

import torch

from fullbatch.errors import first_line
from fullbatch.files.atomic import atomic_write
from fullbatch.files.run_json import DamagedRunFile, read_json_object
from fullbatch.files.safe_loading import load_weights
from fullbatch.files.walk import find_files

log = logging.getLogger("fullbatch")


class CheckpointUnusable(RuntimeError):
    """A checkpoint file is missing, truncated or damaged."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


STALE_SECONDS = 3600  # a temporary file or a lone marker untouched this long was left by a killed writer


def save_checkpoint(state, folder, step, config_hash, keep, search_dir=None, lineage=""):
    """Write `state` as the checkpoint of `step` in `folder`; keep only the newest `keep` of this lineage and config
    in `folder`'s run folder and under `search_dir` (the earlier run folders a requeued run resumed from), and
    remove what killed writers of this lineage left behind there.

    Returns the path, or None when the save failed (full disk, unwritable folder): the error is logged, the
    earlier checkpoints stay untouched and training goes on."""
    path = os.path.join(folder, f"step-{step:07d}.pt")

    def write_marker(temporary):  # describes the complete file, and is in place before the file is
        marker = dict(step=step, config_hash=config_hash, lineage=lineage, file=os.path.basename(path),
                      bytes=os.path.getsize(temporary), sha256=_sha256(temporary))
        atomic_write(path[:-3] + ".json", lambda handle: handle.write(json.dumps(marker).encode()), tag=lineage)

    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(state, handle), tag=lineage, before_rename=write_marker)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        log.error(f"Could not write checkpoint {path} ({error}); earlier checkpoints are kept, training goes on")
        return None
    folders = [os.path.dirname(folder)] + ([search_dir] if search_dir else [])
    newest_written = sorted(find_checkpoints(folders, config_hash, warn=False, with_times=True, lineage=lineage),
                            key=lambda found: found[2], reverse=True)  # by when, not by step: a fresh run
    for _, old, _ in newest_written[keep:]:                          # beside a longer one keeps its own
        if old != os.path.realpath(path):
            _remove(old, old[:-3] + ".json")
    remove_stale_files(folders, lineage)
    return path


def _remove(*paths):
    for stale in paths:
        try:
            os.remove(stale)
        except OSError:  # already gone (a concurrent run pruned it) or not ours to remove
            pass


def remove_stale_files(folders, lineage, now=None):
    """Delete what a killed writer of this lineage left in `checkpoints/` folders and no writer has touched for an
    hour: temporary files named with the lineage, and markers of the lineage whose checkpoint never arrived.
    Nothing without the lineage in its name or its marker is touched."""
    if not lineage:
        return
    now = time.time() if now is None else now
    temporary = re.compile(r"step-\d+\.(pt|json)\.tmp-" + re.escape(lineage) + r"-\d+$")
    for folder in folders:
        for path in find_files(folder, "step-*", parent="checkpoints"):
            name = os.path.basename(path)
            if temporary.match(name):
                left_behind = True
            elif re.fullmatch(r"step-\d+\.json", name):
                marker = read_marker(path[:-5] + ".pt")
                left_behind = marker is not None and marker.get("lineage") == lineage and not os.path.exists(
                    path[:-5] + ".pt")
            else:
                left_behind = False
            try:
                old = now - os.path.getmtime(path) > STALE_SECONDS
            except OSError:
                continue
            if left_behind and old:
                log.info(f"Removing {path}, left by an interrupted checkpoint write of this run")
                _remove(path)


MARKER_FIELDS = dict(step=int, config_hash=str, file=str, bytes=int, sha256=str)


def read_marker(checkpoint_path):
    """The checkpoint's marker as a dict with every field of the right type, or None if it is missing or damaged
    (a flipped bit in a key, a truncated file, a list instead of an object: all mean "do not trust it")."""
    try:
        marker = read_json_object(checkpoint_path[:-3] + ".json", limit=1 << 16)
    except DamagedRunFile:  # a pipe or a huge file is refused, not waited on
        return None
    for key, kind in MARKER_FIELDS.items():
        if not isinstance(marker.get(key), kind) or isinstance(marker.get(key), bool):
            return None
    return marker


def find_checkpoints(folders, config_hash, warn=True, with_times=False, lineage=None):
    """(step, path) of the complete checkpoints below `folders` written for `config_hash` (and `lineage`, if
    given), newest first ((step, path, marker time) with `with_times`); a damaged marker is skipped (with a
    warning if `warn`), and so is a marker whose checkpoint is not there (yet)."""
    found = {}
    for folder in folders:
        for marker_path in find_files(folder, "step-*.json", parent="checkpoints"):
            checkpoint = os.path.realpath(marker_path[:-5] + ".pt")  # one key however the folder is reached
            marker = read_marker(checkpoint)
            if marker is None:
                if warn:
                    log.warning(f"Skipping checkpoint {checkpoint}: its marker {marker_path} is unreadable or damaged")
            elif marker["config_hash"] == config_hash and (lineage is None or marker.get("lineage") == lineage) \
                    and os.path.isfile(checkpoint):
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
        return load_weights(path, device)
    except Exception as error:  # unpickling errors have many types; weights_only refuses anything but data
        raise CheckpointUnusable(f"{path} cannot be read ({type(error).__name__}: {first_line(error, 200)})") from None
