"""Long runs: preemption by SIGTERM, damaged checkpoints, failed saves, divergence, concurrent tables, determinism."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENTRY, ROOT, TINY, compose_config, run_entry
from fullbatch.run.outputs import read_table, record_table_row
from fullbatch.train import run
from fullbatch.training.checkpoint import checkpoint_candidates, load_checkpoint, save_checkpoint


def _run_dirs(root, name):
    return sorted(os.path.dirname(p) for p in glob.glob(str(root / "outputs" / name / "**" / "summary.json"),
                                                        recursive=True))


def _summary(run_dir):
    return json.load(open(os.path.join(run_dir, "summary.json")))


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_same_command_continues_to_the_same_weights(tmp_path):
    common = [*TINY, "hyp=fbclip", "hyp.steps=8", "hyp.shuffle=True", "impl.checkpoint.save_every_nth_step=0"]
    run_entry([*common, "name=whole"], tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, ENTRY, *common, "name=cut"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    metrics = None
    while time.time() < deadline:
        found = glob.glob(str(tmp_path / "outputs" / "cut" / "**" / "metrics.jsonl"), recursive=True)
        if found and len(open(found[0]).read().splitlines()) >= 2:
            metrics = found[0]
            break
        time.sleep(0.05)
    assert metrics, "the run did not start"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 4, stderr[-2000:]
    [cut_dir] = _run_dirs(tmp_path, "cut")
    summary = _summary(cut_dir)
    assert summary["status"] == "preempted" and 2 <= summary["steps"] < 8
    assert os.path.isfile(os.path.join(cut_dir, "checkpoints", f"step-{summary['steps']:07d}.pt"))
    assert not os.path.exists(os.path.join(cut_dir, "model.pt"))
    run_entry([*common, "name=cut"], tmp_path)  # the same command again: resume=auto continues
    finished = [d for d in _run_dirs(tmp_path, "cut") if _summary(d)["status"] == "finished"]
    assert len(finished) == 1 and _summary(finished[0])["resumed_from"].startswith(cut_dir)
    [whole_dir] = _run_dirs(tmp_path, "whole")
    expected, found = torch.load(os.path.join(whole_dir, "model.pt")), torch.load(os.path.join(finished[0], "model.pt"))
    for key in expected:
        assert torch.equal(expected[key], found[key]), key


def _tiny_state(value):
    return {"weights": torch.full((1000,), float(value)), "step": value}


def test_crash_between_write_and_rename_leaves_the_previous_checkpoint_usable(tmp_path):
    folder = str(tmp_path / "checkpoints")
    save_checkpoint(_tiny_state(1), folder, 1, "h", keep=2)
    # what a writer killed mid-save leaves behind: a temporary file; a marker whose file was never renamed into
    # place (the order since lineages); a finished file without its marker (the order before)
    (tmp_path / "checkpoints" / "step-0000002.pt.tmp-12345").write_bytes(b"partial")
    lone = save_checkpoint(_tiny_state(4), folder, 4, "h", keep=3)
    os.rename(lone, lone + ".tmp-12345")
    torch.save(_tiny_state(2), str(tmp_path / "checkpoints" / "step-0000003.pt"))
    [newest] = checkpoint_candidates(str(tmp_path), "h")
    assert newest.endswith("step-0000001.pt") and load_checkpoint(newest, "cpu")["step"] == 1


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    runs = tmp_path / "runs"  # the search folder: a folder of its own, not the working folder
    cfg = compose_config([*TINY, "name=fall", "hyp=fb1", "hyp.steps=3", "impl.checkpoint.save_every_nth_step=1",
                          f"impl.checkpoint.search_dir={runs}"])
    run(cfg, output_dir=str(runs / "first"))
    newest = runs / "first" / "checkpoints" / "step-0000003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with caplog.at_level("WARNING", logger="fullbatch"):
        summary = run(cfg, output_dir=str(runs / "second"))
    assert summary["resumed_from"].endswith("step-0000002.pt") and summary["steps"] == 3
    assert any("is truncated (1000 bytes, its marker says" in record.message for record in caplog.records)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    save_checkpoint(_tiny_state(1), str(folder), 1, "h", keep=2)
    (folder / f"step-0000002.pt.tmp-{os.getpid()}").mkdir()  # the temporary name cannot be opened as a file
    with caplog.at_level("ERROR", logger="fullbatch"):
        assert save_checkpoint(_tiny_state(2), str(folder), 2, "h", keep=2) is None
    assert "Could not write checkpoint" in caplog.text
    [newest] = checkpoint_candidates(str(tmp_path), "h")
    assert load_checkpoint(newest, "cpu")["step"] == 1 and not (folder / "step-0000002.pt").exists()


def test_forced_nan_ends_diverged_with_a_readable_log(tmp_path):
    result = run_entry([*TINY, "name=nan", "hyp=fb1", "hyp.steps=6", "hyp.warmup=0", "hyp.optim.lr=1e25"],
                       tmp_path, check=False)
    assert result.returncode == 3
    [run_dir] = _run_dirs(tmp_path, "nan")
    summary = _summary(run_dir)
    assert summary["status"] == "diverged" and summary["last_finite_step"]["step"] == summary["steps"] - 1
    log_text = open(os.path.join(run_dir, "train_with_gradient_descent.log")).read()
    assert f"Step {summary['steps']}: non-finite loss or gradient" in log_text and "last finite step: step" in log_text


def test_divergence_restore_goes_back_and_halves_the_learning_rate(tmp_path):
    cfg = compose_config([*TINY, "name=restore", "hyp=fb1", "hyp.steps=6", "hyp.warmup=0", "hyp.scheduler=none",
                          "hyp.optim.lr=1e25", "impl.checkpoint.save_every_nth_step=1",
                          "impl.checkpoint.on_divergence=restore", "impl.checkpoint.max_restores=2"])
    summary = run(cfg, output_dir=str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert summary["status"] == "diverged" and summary["lr_restores"] == 2
    lrs = [row["lr"] for row in rows]
    assert lrs[0] == 1e25 and 0.5e25 in lrs and 0.25e25 in lrs


def test_four_processes_append_to_one_table_at_once(tmp_path):
    table = tmp_path / "tables" / "t.csv"
    script = ("import sys, time; from fullbatch.run.outputs import record_table_row\n"
              "start = float(sys.argv[2])\n"
              "while time.time() < start: pass\n"
              "record_table_row(sys.argv[1], {'run_key': sys.argv[3], 'job': sys.argv[3], 'text': 'x' * 20000})\n")
    start = time.time() + 3.0
    jobs = [subprocess.Popen([sys.executable, "-c", script, str(table), str(start), str(i)], cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=ROOT)) for i in range(4)]
    assert all(job.wait(timeout=120) == 0 for job in jobs)
    import csv

    rows = list(csv.DictReader(open(table)))
    assert sorted(row["job"] for row in rows) == ["0", "1", "2", "3"]
    assert all(row["text"] == "x" * 20000 for row in rows)


def test_deterministic_mode_gives_bit_identical_runs(tmp_path):
    common = [*TINY, "hyp=fbclip", "hyp.steps=3", "hyp.shuffle=True", "impl.deterministic=true",
              "hyp.grad_noise.additive=1e-3"]
    run_entry([*common, "name=a"], tmp_path)
    run_entry([*common, "name=b"], tmp_path)
    [a], [b] = _run_dirs(tmp_path, "a"), _run_dirs(tmp_path, "b")
    first, second = torch.load(os.path.join(a, "model.pt")), torch.load(os.path.join(b, "model.pt"))
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_table_rows_replace_their_own_run_and_keep_every_column(tmp_path):
    path = str(tmp_path / "x.csv")
    record_table_row(path, {"run_key": "a", "acc": 1})
    record_table_row(path, {"run_key": "b", "acc": 2})
    record_table_row(path, {"run_key": "a", "acc": 3, "extra": "new"})  # a re-report of run a
    rows, columns = read_table(path)
    assert columns == ["run_key", "acc", "extra"]
    assert [(row["run_key"], row["acc"], row["extra"]) for row in rows] == [("b", "2", ""), ("a", "3", "new")]
    assert open(path).read().splitlines()[0] == "run_key,acc,extra"


@pytest.mark.parametrize("value", ["auto", "true"])
def test_resume_auto_and_true_continue_a_finished_run_without_training(tmp_path, value):
    runs = tmp_path / "runs"  # the search folder: a folder of its own, not the working folder
    cfg = compose_config([*TINY, "name=again", "hyp=fb1", "hyp.steps=2", f"impl.checkpoint.search_dir={runs}"])
    run(cfg, output_dir=str(runs / "first"))
    cfg.impl.checkpoint.resume = value
    summary = run(cfg, output_dir=str(runs / "second"))
    assert summary["resumed_from"].endswith("step-0000002.pt") and summary["steps"] == 2
    assert not (runs / "second" / "metrics.jsonl").read_text()
    first = json.load(open(runs / "first" / "summary.json"))
    assert summary["final_val_acc"] == first["final_val_acc"]  # reported again, from the restored weights


def test_a_save_that_torch_fails_with_a_runtime_error_keeps_the_previous_checkpoint(tmp_path, caplog, monkeypatch):
    """On a full disk torch.save raises RuntimeError ('unexpected pos'), not OSError."""
    folder = tmp_path / "checkpoints"
    save_checkpoint(_tiny_state(1), str(folder), 1, "h", keep=2)

    def full_disk(obj, handle):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with caplog.at_level("ERROR", logger="fullbatch"):
        assert save_checkpoint(_tiny_state(2), str(folder), 2, "h", keep=2) is None
    assert "Could not write checkpoint" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["step-0000001.json", "step-0000001.pt"]  # no leftovers


def test_a_metrics_row_that_cannot_be_written_is_logged_and_training_goes_on(tmp_path, caplog):
    from fullbatch.run.outputs import MetricsLog

    metrics = MetricsLog(str(tmp_path / "metrics.jsonl"))
    metrics.write(dict(step=1, train_loss=1.0))

    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    metrics.handle.close()
    metrics.handle = FullDisk()
    with caplog.at_level("ERROR", logger="fullbatch"):
        metrics.write(dict(step=2, train_loss=0.5))
    assert "Could not write the metrics of step 2" in caplog.text and "No space left" in caplog.text
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def test_a_final_model_that_cannot_be_written_still_leaves_summary_and_table_row(tmp_path, caplog, monkeypatch):
    import fullbatch.train

    def full_disk(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fullbatch.train, "atomic_save", full_disk)
    cfg = compose_config([*TINY, "name=full", "hyp=fb1", "hyp.steps=2", f"tables={tmp_path / 'tables'}"])
    with caplog.at_level("ERROR", logger="fullbatch"):
        summary = run(cfg, output_dir=str(tmp_path / "run"))
    assert summary["status"] == "finished" and "Could not write model.pt" in caplog.text
    assert not (tmp_path / "run" / "model.pt").exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2
    assert (tmp_path / "tables" / "synthetic_resnet20.csv").read_text().count("\n") == 2  # header and one row
    assert list((tmp_path / "run" / "checkpoints").glob("step-0000002.pt"))  # the trained state is kept
