"""The shared helpers every layer uses: the one reader of run JSON files, the atomic writer that checkpoints use,
the error line and the exit codes, the device-name rule."""
import json
import os
import subprocess
import sys

import pytest

from fullbatch.config.limits import is_device_name
from fullbatch.errors import ConfigError, DatasetUnavailable, ExitCode, Stopped, exit_code, first_line, last_line
from fullbatch.files.atomic import atomic_write, temporary_name
from fullbatch.files.run_json import DamagedRunFile, read_json_object


@pytest.mark.parametrize("make, reason", [
    (lambda path: None, "cannot be read (No such file or directory)"),
    (lambda path: os.mkfifo(path), "is not a regular file"),  # a pipe: open() alone would wait for a writer
    (lambda path: os.symlink("/dev/zero", path), "is not a regular file"),  # would never end
    (lambda path: path.write_bytes(b"\xff\xfe\x00"), "is not text (a binary file?)"),
    (lambda path: path.write_text("{not json"), "is not valid JSON (JSONDecodeError"),
    (lambda path: path.write_text("[" * 30_000 + "]" * 30_000), "is not valid JSON (RecursionError"),
    (lambda path: path.write_text("[1, 2]"), "holds a JSON list, not an object"),
    (lambda path: path.write_text(json.dumps({"pad": "x" * 70_000})), "is larger than 65536 bytes"),
])
def test_the_run_file_reader_refuses_each_kind_of_damage_in_one_line_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "summary.json"
    make(path)
    with pytest.raises(DamagedRunFile) as damaged:
        read_json_object(str(path), limit=1 << 16)
    assert damaged.value.reason.startswith(reason) and str(damaged.value).startswith(f"{path} {reason}")
    assert isinstance(damaged.value, ValueError)  # callers that caught ValueError still do


def test_the_run_file_reader_returns_the_object(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished", "steps": 3}))
    assert read_json_object(str(tmp_path / "summary.json")) == {"status": "finished", "steps": 3}


def test_an_atomic_write_calls_before_rename_on_the_complete_file_and_leaves_nothing_when_it_fails(tmp_path):
    target = tmp_path / "step-1.pt"
    seen = []
    atomic_write(str(target), lambda handle: handle.write(b"weights"), tag="abc",
                 before_rename=lambda temporary: seen.append((temporary, open(temporary, "rb").read())))
    assert seen == [(temporary_name(str(target), "abc"), b"weights")] and target.read_bytes() == b"weights"
    assert temporary_name(str(target), "abc").endswith(f".tmp-abc-{os.getpid()}")

    def refuse(temporary):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), lambda handle: handle.write(b"newer"), tag="abc", before_rename=refuse)
    assert target.read_bytes() == b"weights" and sorted(os.listdir(tmp_path)) == ["step-1.pt"]


def test_exit_codes_and_error_lines_are_the_entry_scripts():
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4]
    assert exit_code(ConfigError("x")) == exit_code(DatasetUnavailable("x")) == 2 and exit_code(Stopped("x")) == 4
    assert exit_code(RuntimeError("x")) is None
    assert first_line("\n  first  \nsecond\n") == "first" and first_line("abcdef", 3) == "abc" and first_line("") == ""
    assert last_line("Traceback\n  ...\nValueError: bad\n\n") == "ValueError: bad"
    code = subprocess.run([sys.executable, "-c", "import sys; from fullbatch.errors import report, ExitCode; "
                           "sys.exit(report(OSError('unknown')))"], capture_output=True, text=True)
    assert code.returncode == 1 and code.stderr == "fullbatch: unknown\n"  # never 0 for an error it does not know


def test_device_names_follow_one_rule():
    assert all(map(is_device_name, ("auto", "cpu", "cuda", "cuda:0", "cuda:12")))
    assert not any(map(is_device_name, ("gpu", "cuda:", "cuda:x", "cuda:²", "cuda:-1", "CPU", "")))
