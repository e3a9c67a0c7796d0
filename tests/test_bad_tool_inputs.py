"""The command-line tools (results, status, reproduce, benchmark, curves) on bad input: a bad argument is one line
on stderr and exit code 2 before any work; a damaged file is skipped with a warning naming it while the rest is
shown; a symlink loop ends; nothing prints a traceback. In-process where possible (fast); one subprocess per
folder-walking tool proves the real command line, with a timeout so that a hang fails instead of waiting."""
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

GOOD_TABLE = ("run_key,name,config,status,final_val_acc,best_val_acc,steps,seconds_per_step,dryrun\n"
              "a/1,fb,hyp=fb1,finished,0.5,0.6,3,1.0,False\n"
              "garbage\n")


def _summary(name="good", status="finished", seed=0):
    """A summary.json of the shape a run writes, with every entry its table row needs."""
    config = dict(seed=seed, dryrun=False, hyp=dict(train_stochastic=False, optim=dict(lr=0.1)),
                  model=dict(name="resnet20", width=4), impl=dict(dtype="float32", mixed_precision=False),
                  data=dict(batch_size=64, name="synthetic", size=256, test_size=128, augmentations_train=[]))
    return dict(name=name, config_hash="h", config=config, overrides=["hyp=fb1"], steps=2, status=status,
                final_val_acc=0.5, best_val_acc=0.6, final_train_loss=1.0, final_train_acc=0.4, wall_time=3.0,
                output_dir="/x")


def _write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(content, bytes) else "w") as handle:
        handle.write(content)
    return str(path)


def _outcome(main, argv, capsys):
    """(exit code, stdout, stderr lines) of a tool's main(argv) in this process: its return value or SystemExit."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return code, out, err.strip().splitlines()


def _one_line(code, lines, expected):
    assert code == 2, (code, lines)
    assert len(lines) == 1 and lines[0].startswith("fullbatch: "), lines
    assert expected in lines[0], lines


@pytest.fixture
def damaged(tmp_path):
    """A good table with one garbage line, files that are not tables, and run folders with damaged summaries."""
    torch.save({"weight": torch.zeros(2)}, tmp_path / "model.pt")
    files = dict(good=_write(tmp_path / "good.csv", GOOD_TABLE), model=str(tmp_path / "model.pt"),
                 binary=_write(tmp_path / "binary.csv", bytes(range(128, 256)) * 4),
                 nul=_write(tmp_path / "nul.csv", "run_key,name,status\na/1,fb,fini\x00shed\n"))
    runs = tmp_path / "runs"
    summaries = dict(broken="{broken", listed="[1, 2]", config_int=json.dumps(dict(_summary(), config=3)),
                     no_steps=json.dumps({key: value for key, value in _summary().items() if key != "steps"}))
    for name, text in summaries.items():
        files[name] = _write(runs / name / "summary.json", text)
    files["binary_summary"] = _write(runs / "binary" / "summary.json", b"\xff\xfe\x00garbage")
    return files


def test_results_skip_damaged_files_and_rows_that_are_not_runs_with_a_warning_naming_each(damaged, tmp_path, capsys):
    from fullbatch.results import main

    runs = str(tmp_path / "runs")
    code, out, lines = _outcome(main, [damaged["good"], damaged["model"], damaged["binary"], damaged["nul"], runs],
                                capsys)
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("| fb ")] == [
        "| fb | hyp=fb1 | 1 | 50.00 | 60.00 | 3 | 1 |  |"]  # the good row; the garbage line is no run
    assert all(line.startswith("fullbatch: warning: ") and line.endswith("; skipped") for line in lines), lines
    for name in ("good", "model", "binary", "nul", "broken", "listed", "config_int", "no_steps", "binary_summary"):
        assert sum(damaged[name] in line for line in lines) == 1, (name, lines)
    for name, expected in (("model", "is not a CSV table"), ("binary", "is not a CSV table"),
                           ("nul", "holds a NUL byte"), ("broken", "is not valid JSON"), ("listed", "holds a JSON list"),
                           ("config_int", "is not a run summary"), ("no_steps", "no 'steps' entry")):
        assert expected in next(line for line in lines if damaged[name] in line), name

    for name in ("model", "binary", "nul"):  # alone, nothing is left to show: one line, exit 2
        _one_line(*_outcome(main, [damaged[name]], capsys)[::2], damaged[name])
    _one_line(*_outcome(main, [runs], capsys)[::2], "(and 4 more damaged file(s) or row(s))")
    _one_line(*_outcome(main, [str(tmp_path / "missing.csv")], capsys)[::2], "missing.csv does not exist")
    _one_line(*_outcome(main, ["--bogus"], capsys)[::2], "unrecognized arguments: --bogus")
    os.mkfifo(tmp_path / "pipe.csv")  # open() would wait for a writer for ever
    _one_line(*_outcome(main, [str(tmp_path / "pipe.csv")], capsys)[::2], "expected a CSV table or a run folder")


def test_a_run_does_not_overwrite_a_damaged_table_with_its_row(damaged):
    """read_table's error is an OSError, which the run logs (train._write) instead of replacing the file."""
    from fullbatch.run.outputs import read_table, record_table_row

    before = open(damaged["nul"], "rb").read()
    with pytest.raises(OSError, match="holds a NUL byte"):
        record_table_row(damaged["nul"], dict(run_key="b/1", name="fb", status="finished"))
    assert open(damaged["nul"], "rb").read() == before
    with pytest.raises(OSError, match="is not a CSV table"):
        read_table(damaged["model"])


def test_status_counts_a_damaged_summary_as_unfinished_with_one_warning_naming_it(tmp_path, capsys):
    from fullbatch.status import main

    run = tmp_path / "outputs" / "fb" / "run"
    (run / ".hydra").mkdir(parents=True)
    for content in ("[1, 2]", '{"status": ["finished"]}', '{"status": {"a": 1}}', "{broken"):
        _write(run / "summary.json", content)
        code, out, lines = _outcome(main, [str(tmp_path / "outputs" / "fb")], capsys)
        assert (code, out) == (4, f"unfinished {run}\n"), content  # a batch script requeues it
        assert len(lines) == 1 and lines[0].startswith("fullbatch: warning: ") and str(run / "summary.json") in lines[0]
    _write(run / "summary.json", '{"status": "diverged"}')
    assert _outcome(main, [str(tmp_path / "outputs" / "fb")], capsys)[:2] == (3, f"diverged {run}\n")
    _one_line(*_outcome(main, [str(tmp_path / "missing")], capsys)[::2], "expected a folder of runs")
    _one_line(*_outcome(main, [str(run / "summary.json")], capsys)[::2], "expected a folder of runs")


def test_results_and_status_walk_a_folder_with_a_symlink_loop_once_on_the_command_line(tmp_path):
    outputs = tmp_path / "outputs" / "fb"
    _write(outputs / "run" / "summary.json", json.dumps(_summary()))
    (outputs / "run" / ".hydra").mkdir()
    os.symlink(".", outputs / "loop")  # outputs/fb/loop/loop/loop/... for ever, for a walk that follows it
    os.symlink("..", outputs / "run" / "up")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for tool, expected_code, expected_out in (("results", 0, "| good | hyp=fb1 | 1 | 50.00 | 60.00 | 2 |"),
                                              ("status", 0, f"finished {outputs / 'run'}")):
        result = subprocess.run([sys.executable, "-m", f"fullbatch.{tool}", str(outputs)], capture_output=True,
                                text=True, timeout=60, env=env)
        assert result.returncode == expected_code and result.stderr == "", (tool, result.stderr[-2000:])
        assert expected_out in result.stdout, (tool, result.stdout)


REPRODUCE_CASES = [  # (arguments after --scale smoke --root <tmp>/root, text of the one line)
    (["--device", "tpu"], "--device=tpu is not allowed: expected auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "--device=cuda:x is not allowed"),
    (["--rows", ""], "--rows='' is not allowed: '' is not a row; expected a comma list of sgd, fb"),
    (["--rows", "fb,"], "'' is not a row"),
    (["--rows", "fb_clip,bogus"], "'bogus' is not a row"),
    (["--rows", "fb,fb"], "--rows='fb,fb' is not allowed: it names a row twice"),
    (["--seeds", "0"], "--seeds=0 is not allowed: expected an integer from 1 to 100"),
    (["--seeds", "-2"], "--seeds=-2 is not allowed"),
    (["--seeds", "1000000000", "--list"], "--seeds=1000000000 is not allowed"),
    (["--seeds", "x"], "argument --seeds: invalid int value: 'x'"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs", "100000"], "--jobs=100000 is not allowed: expected an integer from 1 to 256"),
    (["--time", "0"], "--time=0 is not allowed: expected an integer >= 1"),
    (["--gpus", "-1"], "--gpus=-1 is not allowed: expected an integer >= 0"),
    (["--cpus", "0"], "--cpus=0 is not allowed: expected an integer >= 1"),
    (["--launcher", "pbs"], "argument --launcher: invalid choice: 'pbs'"),
    (["hyp.steps=3"], "hyp.steps=3 is not allowed: give only data.path=, data.db.path=, impl."),
    (["impl.bogus=1"], "Key 'bogus' not in 'ImplConfig'"),
    (["impl.threads=-1", "--list"], "impl.threads=-1 is not allowed"),
    *([(["--device", "cuda"], "--device=cuda is not allowed: no CUDA device is visible here")]
      if not torch.cuda.is_available() else []),
]


def test_reproduce_refuses_each_bad_argument_with_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from fullbatch.reproduce import __main__ as reproduce

    monkeypatch.setattr(reproduce, "run_all", lambda *args: pytest.fail("ran rows despite a bad argument"))
    monkeypatch.setattr(reproduce, "list_rows", lambda *args: pytest.fail("listed rows despite a bad argument"))
    root = tmp_path / "root"
    for arguments, expected in [*REPRODUCE_CASES, (["--root", _write(tmp_path / "file", "x")], "it is a file")]:
        code, _, lines = _outcome(reproduce.main, ["--scale", "smoke", "--root", str(root), *arguments], capsys)
        _one_line(code, lines, expected)
    _one_line(*_outcome(reproduce.main, ["--root", str(root)], capsys)[::2], "required: --scale")
    assert not root.exists()  # nothing written: no outputs/, no reports/
    from fullbatch.reproduce.job import main as job

    for argv, expected in (([], "expected one argument"), (["{broken"], "not valid JSON"),
                           ([json.dumps(dict(root=".", scale="smoke", row="fb", seed=-1, extra=[]))], "seed >= 0")):
        _one_line(*_outcome(job, argv, capsys)[::2], expected)


BENCHMARK_CASES = [  # (arguments, text of the one line)
    (["--presets", "bogus"], "--presets='bogus' is not allowed: 'bogus' is unknown; expected a comma list of fbclip"),
    (["--presets", ""], "--presets='' is not allowed"),
    (["--settings", "bogus"], "--settings='bogus' is not allowed: 'bogus' is unknown; expected a comma list of fp32"),
    (["--steps", "0"], "--steps=0 is not allowed: expected an integer >= 1"),
    (["--images", "0"], "--images=0 is not allowed: expected an integer from 1 to 100000"),
    (["--images", "10000000000"], "--images=10000000000 is not allowed"),
    (["--test-images", "0"], "--test-images=0 is not allowed"),
    (["--width", "0"], "--width=0 is not allowed: expected an integer from 1 to 4096"),
    (["--warmup", "-1"], "--warmup=-1 is not allowed: expected an integer >= 0"),
    (["--model", "bogus"], "--model=bogus is not allowed: expected one of"),
    (["--device", "tpu"], "--device=tpu is not allowed: expected auto, cpu, cuda or cuda:N"),
    (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
    (["--json", "{tmp}/missing/rows.json"], "--json={tmp}/missing/rows.json is not allowed: its folder"),
    (["--json", "{tmp}"], "is a folder; expected a file name"),
    (["--images", "10", "--presets", "fbclip", "--settings", "fp32"],
     "--images=10 is not allowed: the preset's blocks have 128 images"),
    (["--presets", "gradreg", "--settings", "bf16-cl-merge4"], "it leaves no row to measure"),
    *([(["--device", "cuda", "--presets", "fbclip", "--settings", "fp32"], "--device=cuda is not allowed")]
      if not torch.cuda.is_available() else []),
]


def test_benchmark_refuses_each_bad_argument_with_one_line_before_measuring(tmp_path, capsys, monkeypatch):
    from fullbatch import benchmark

    monkeypatch.setattr(benchmark, "measure", lambda *args: pytest.fail("measured despite a bad argument"))
    for arguments, expected in BENCHMARK_CASES:
        arguments = [item.replace("{tmp}", str(tmp_path)) for item in arguments]
        code, _, lines = _outcome(benchmark.main, arguments, capsys)
        _one_line(code, lines, expected.replace("{tmp}", str(tmp_path)))


def test_curves_and_reports_warn_naming_a_damaged_file_and_draw_the_rest(tmp_path, capsys, caplog, monkeypatch):
    from fullbatch.reproduce.report import collect
    from fullbatch.reproduce.runner import run_folder
    from fullbatch.reproduce.scales import ROWS, SCALES, row_overrides
    from fullbatch.visualization import curves
    from fullbatch.visualization.runs import read_metrics

    run = tmp_path / "run"
    rows = [dict(step=1, train_loss=1.0, train_acc=0.1), dict(step=3, train_loss=0.5, train_acc=0.2, clipped=True)]
    _write(run / "metrics.jsonl", (json.dumps(rows[0]) + '\n{"step": 2, "train_lo\n').encode() + b"\xff\x00\n" +
           (json.dumps(rows[1]) + "\n").encode())
    _write(run / "summary.json", '{"name": ["not", "a", "name"], "resumed_from": 5}')
    caplog.set_level(logging.WARNING, logger="fullbatch")
    assert read_metrics(str(run)) == rows
    [warning] = [record.getMessage() for record in caplog.records]
    assert str(run / "metrics.jsonl") in warning and "skipped 2 damaged line(s) (line 2 first)" in warning
    drawn = []
    monkeypatch.setattr(curves, "save_figure", lambda figure, out: drawn.append(figure) or out)
    assert _outcome(curves.main, [str(run), "--out", str(tmp_path / "c.png")], capsys)[0] == 0 and drawn
    assert [line.get_label() for line in drawn[0].axes[0].get_lines()][0] == "run: train"  # the folder's name
    _one_line(*_outcome(curves.main, [str(tmp_path / "missing")], capsys)[::2], "expected a run folder")
    _one_line(*_outcome(curves.main, [str(run), "--out", str(tmp_path / "no" / "c.png")], capsys)[::2],
              "its folder")

    scale, row = SCALES["smoke"], ROWS["fb_clip"]  # a summary of the scale's design but without its config
    folder = run_folder(str(tmp_path), scale, row, 0)
    _write(os.path.join(folder, "summary.json"), json.dumps(dict(status="finished", overrides=row_overrides(scale, row, 0))))
    caplog.clear()
    assert collect(str(tmp_path), scale, [row]) == {}
    assert any(os.path.join(folder, "summary.json") in record.getMessage() for record in caplog.records)
