"""N x CIFAR: N rounds of the augmented training set, written once to an LMDB file and then used as fixed data.

Entry `rrr-iiiiiii` holds round r's augmentation of training image i (a little-endian uint16 label, then the
3 x 32 x 32 uint8 image); the header record, written last, holds what built the file (dataset, size, rounds,
augmentations, seed), the entry count and a SHA-256 over all entries. `<file>.json` repeats the header with the
file size, which is checked before the file is opened (LMDB maps the file; a truncated one would crash a reader). The file name carries a hash of that
recipe, so a different request builds a new file beside an existing one instead of reusing a wrong one.

Building is safe: one builder at a time (a lock file; other processes wait, then read), written under a
temporary name and renamed only when complete, so an interrupted build leaves nothing that looks finished.
"""
import glob
import hashlib
import json
import logging
import os
import shutil
import time

import lmdb
import numpy as np
import torch

from fullbatch.data.augmentation import augment, step_generator
from fullbatch.errors import ConfigError, DatasetUnavailable
from fullbatch.files.atomic import atomic_write, locked_file, temporary_name
from fullbatch.files.run_json import read_json_object
from fullbatch.progress import Progress

log = logging.getLogger("fullbatch")
HEADER_KEY = b"~header"  # sorts after every entry key
RECORD_BYTES = 2 + 3 * 32 * 32
FORMAT_VERSION = 1


def recipe(dataset, images, labels, rounds, augmentations, padding, seed):
    """Everything that determines the database's content, including a fingerprint of the source images."""
    fingerprint = hashlib.sha256(np.ascontiguousarray(images).tobytes() + np.asarray(labels, np.int64).tobytes())
    return dict(dataset=dataset, size=len(labels), rounds=rounds, augmentations=list(augmentations), padding=padding,
                seed=seed, source_sha256=fingerprint.hexdigest(), version=FORMAT_VERSION)


def database_path(folder, build_recipe):
    digest = hashlib.sha256(json.dumps(build_recipe, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{build_recipe['dataset']}-n{build_recipe['size']}-x{build_recipe['rounds']}-{digest}.lmdb"
    return os.path.join(os.path.expanduser(folder), name)


def round_images(images, augmentations, padding, seed, round_index):
    """Round `round_index` of the fixed augmented set: drawn from a generator seeded by (seed, round)."""
    generator = step_generator(seed, round_index, "cpu", stream=4)
    return augment(torch.as_tensor(images), tuple(augmentations), padding, generator).numpy()


def _write(path, images, labels, build_recipe, map_size):
    count = len(labels) * build_recipe["rounds"]
    needed = int(count * (RECORD_BYTES + 64) * 1.5) + (64 << 20)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if count * RECORD_BYTES > free:  # found now, not after hours of building
        raise ConfigError(f"data.db.rounds={build_recipe['rounds']} is not allowed: the database of {count} images "
                          f"needs about {count * RECORD_BYTES / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB "
                          f"free in {os.path.dirname(os.path.abspath(path))}")
    map_size = map_size or needed
    digest = hashlib.sha256()
    try:
        env = lmdb.open(path, subdir=False, map_size=map_size, lock=False, sync=False, metasync=False)
    except lmdb.Error as error:  # e.g. a map larger than the address space the system grants
        raise ConfigError(f"data.db.map_size={map_size} is not allowed: LMDB cannot open a map of that size "
                          f"({error})") from None
    progress = Progress(build_recipe["rounds"])
    try:
        label_bytes = np.asarray(labels, dtype="<u2").reshape(-1, 1).view(np.uint8)
        for round_index in range(build_recipe["rounds"]):
            augmented = round_images(images, build_recipe["augmentations"], build_recipe["padding"],
                                     build_recipe["seed"], round_index)
            records = np.concatenate([label_bytes, augmented.reshape(len(labels), -1)], axis=1)
            with env.begin(write=True) as txn:
                for index, record in enumerate(records):
                    value = record.tobytes()
                    digest.update(value)
                    txn.put(f"{round_index:03d}-{index:07d}".encode(), value)
            log.info(f"Built round {progress.tick()}")
        header = dict(build_recipe, entries=count, sha256=digest.hexdigest())
        with env.begin(write=True) as txn:
            txn.put(HEADER_KEY, json.dumps(header).encode())
        env.sync(True)
    except lmdb.MapFullError:
        raise ConfigError(f"data.db.map_size={map_size} is not allowed: the database of {count} images needs about "
                          f"{needed} bytes; leave it empty to size it automatically") from None
    finally:
        env.close()
    return header


def _write_description(path, description):
    """`<file>.json`: the header in readable form plus the file size, checked before the file is mapped."""
    atomic_write(path + ".json", lambda handle: json.dump(description, handle, indent=2), mode="w")


def ensure_database(folder, build_recipe, images, labels, map_size=None):
    """Return the path of the database for `build_recipe`, building it first if no finished file exists."""
    path = database_path(folder, build_recipe)
    if os.path.isdir(path):
        raise DatasetUnavailable(f"{path} is a folder where the database file belongs; move it away or set "
                                 "data.db.path to another folder")
    if os.path.isfile(path):  # finished files only ever appear by rename: no lock needed (read-only folders)
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with locked_file(path + ".build-lock"):
        if os.path.isfile(path):
            return path
        for stale in glob.glob(glob.escape(path) + ".tmp-*"):  # left by a builder that was killed
            os.remove(stale)
        temporary = temporary_name(path)
        started = time.time()
        log.info(f"Building {path} ({build_recipe['rounds']} x {len(labels)} images)")
        try:
            header = _write(temporary, images, labels, build_recipe, map_size)
            _write_description(path, dict(header, bytes=os.path.getsize(temporary)))
            os.replace(temporary, path)
        finally:
            for leftover in (temporary, temporary + "-lock"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        log.info(f"Built {path} in {time.time() - started:.1f} s ({os.path.getsize(path) / 2**20:.0f} MiB)")
    return path


def _damaged(path, reason):
    return DatasetUnavailable(f"{path} is damaged ({reason}); delete it and run again to rebuild it")


def _check_size(path, build_recipe):
    """A truncated file must be caught before LMDB maps it: reading past its end kills the process (SIGBUS).
    Its description must give the size of the file and the entry count of the recipe, and the file must be
    large enough to hold that many records."""
    try:
        description = read_json_object(path + ".json")
        expected, entries = int(description["bytes"]), int(description["entries"])
    except (ValueError, KeyError, TypeError):  # DamagedRunFile, a missing file included, is a ValueError
        raise _damaged(path, f"its description {path}.json is missing or unreadable") from None
    if not os.path.isfile(path) or os.path.getsize(path) != expected:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        raise _damaged(path, f"{size} bytes instead of {expected}")
    wanted = build_recipe["size"] * build_recipe["rounds"]
    if entries != wanted or expected < wanted * RECORD_BYTES:
        raise _damaged(path, f"its description says {entries} entries in {expected} bytes; the recipe needs "
                             f"{wanted} entries of {RECORD_BYTES} bytes")


def read_database(path, build_recipe):
    """All entries as (images N*rounds x 3 x 32 x 32 uint8, labels), after checking size, count and checksum."""
    _check_size(path, build_recipe)
    try:
        env = lmdb.open(path, subdir=False, readonly=True, lock=False, readahead=False)
    except lmdb.Error as error:
        raise _damaged(path, error) from None
    try:
        with env.begin() as txn:
            raw_header = txn.get(HEADER_KEY)
            if raw_header is None:
                raise _damaged(path, "no header record")
            try:
                header = json.loads(raw_header)
            except ValueError:
                raise _damaged(path, "its header record is not valid JSON") from None
            if not isinstance(header, dict) or {k: header.get(k) for k in build_recipe} != build_recipe:
                raise _damaged(path, "its header does not match the requested recipe")
            if header.get("entries") != build_recipe["size"] * build_recipe["rounds"]:
                raise _damaged(path, f"its header says {header.get('entries')!r} entries")
            records = np.empty((header["entries"], RECORD_BYTES), dtype=np.uint8)
            digest, count = hashlib.sha256(), 0
            for key, value in txn.cursor():
                if key == HEADER_KEY:
                    continue
                if count >= len(records) or len(value) != RECORD_BYTES:
                    raise _damaged(path, "unexpected entries")
                digest.update(value)
                records[count] = np.frombuffer(value, dtype=np.uint8)
                count += 1
    except lmdb.Error as error:
        raise _damaged(path, error) from None
    finally:
        env.close()
    if count != header["entries"] or digest.hexdigest() != header.get("sha256"):
        raise _damaged(path, f"{count} of {header['entries']} entries, checksum "
                             f"{'matches' if digest.hexdigest() == header.get('sha256') else 'differs'}")
    labels = records[:, :2].copy().view("<u2").reshape(-1).astype(np.int64)
    return records[:, 2:].reshape(-1, 3, 32, 32), labels
