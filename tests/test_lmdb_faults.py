"""The N x CIFAR database under faults: read-only folders, damaged headers, a folder in the file's place, a
truncated file whose description was edited to match, and a map size too small. Each ends in one clear error."""
import json
import os

import lmdb
import pytest

from fullbatch.data.lmdb_database import HEADER_KEY, ensure_database, read_database, recipe
from fullbatch.data.synthetic import make_synthetic
from fullbatch.errors import ConfigError, DatasetUnavailable


def _built(folder, count=24, rounds=2):
    (images, labels), _ = make_synthetic(count, 8, 10, 0)
    build_recipe = recipe("synthetic", images, labels, rounds, ["horizontal_flip"], 4, 1)
    return ensure_database(str(folder), build_recipe, images, labels), build_recipe, images, labels


def _rewrite_header(path, raw):
    env = lmdb.open(path, subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(HEADER_KEY, raw)
    env.close()
    with open(path + ".json") as handle:  # the damage is inside the file: its size still matches
        description = json.load(handle)
    description["bytes"] = os.path.getsize(path)
    with open(path + ".json", "w") as handle:
        json.dump(description, handle)


def test_a_finished_database_is_read_without_creating_a_lock_file(tmp_path):
    path, build_recipe, images, labels = _built(tmp_path)
    os.remove(path + ".build-lock")
    os.chmod(tmp_path, 0o555)  # as root this does not stop writes; the missing lock file below is the check
    try:
        assert ensure_database(str(tmp_path), build_recipe, images, labels) == path
        stored, _ = read_database(path, build_recipe)
    finally:
        os.chmod(tmp_path, 0o755)
    assert len(stored) == 2 * 24 and not os.path.exists(path + ".build-lock")


@pytest.mark.parametrize("raw, message", [(b"{not json", "not valid JSON"), (b"[1, 2]", "does not match"),
                                          (None, "entries")])
def test_a_damaged_header_record_is_reported_as_damaged(tmp_path, raw, message):
    path, build_recipe, _, _ = _built(tmp_path)
    if raw is None:  # an absurd entry count, everything else intact
        env = lmdb.open(path, subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            header = json.loads(txn.get(HEADER_KEY))
        env.close()
        raw = json.dumps(dict(header, entries=10**15)).encode()
    _rewrite_header(path, raw)
    with pytest.raises(DatasetUnavailable, match=message):
        read_database(path, build_recipe)


def test_a_folder_where_the_database_file_belongs_is_named(tmp_path):
    (images, labels), _ = make_synthetic(24, 8, 10, 0)
    build_recipe = recipe("synthetic", images, labels, 2, ["horizontal_flip"], 4, 1)
    path, *_ = _built(tmp_path / "first")
    os.makedirs(tmp_path / "second" / os.path.basename(path))
    with pytest.raises(DatasetUnavailable, match="is a folder where the database file belongs"):
        ensure_database(str(tmp_path / "second"), build_recipe, images, labels)


def test_a_truncated_file_with_an_edited_description_is_refused_before_it_is_mapped(tmp_path):
    path, build_recipe, _, _ = _built(tmp_path)
    with open(path, "r+b") as handle:
        handle.truncate(8192)
    with open(path + ".json") as handle:
        description = json.load(handle)
    with open(path + ".json", "w") as handle:
        json.dump(dict(description, bytes=8192), handle)
    with pytest.raises(DatasetUnavailable, match="the recipe needs 48 entries"):
        read_database(path, build_recipe)  # mapping it would end the process with SIGBUS


def test_a_map_size_too_small_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.db.map_size=50000 is not allowed"):
        (images, labels), _ = make_synthetic(200, 8, 10, 0)
        build_recipe = recipe("synthetic", images, labels, 2, [], 4, 1)
        ensure_database(str(tmp_path), build_recipe, images, labels, map_size=50000)
    assert [name for name in os.listdir(tmp_path) if ".tmp-" in name] == []
