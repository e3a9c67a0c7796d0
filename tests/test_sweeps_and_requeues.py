"""Sweeps and requeues as a cluster runs them: unique run folders, sweeps that go on past a failed job, one
table row per run, divergence restores that step back, checkpoints kept per run across requeues."""
import glob
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENTRY, ROOT, TINY, compose_config, run_entry
from fullbatch.config.schema import run_stamp
from fullbatch.run.outputs import read_table
from fullbatch.train import run
from fullbatch.training.checkpoint import STALE_SECONDS, find_checkpoints, load_checkpoint, save_checkpoint


def _summaries(root, name):
    paths = glob.glob(str(root / "outputs" / name / "**" / "summary.json"), recursive=True)
    return sorted((json.load(open(path)) for path in paths), key=lambda summary: summary["output_dir"])


@pytest.mark.parametrize("env, ending", [({"SLURM_JOB_ID": "4242"}, "-job4242"), ({}, "-pid{pid}")],
                         ids=["slurm", "elsewhere"])
def test_run_folders_carry_the_job_id_or_the_process_id(monkeypatch, env, ending):
    for key in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run_stamp().endswith(ending.format(pid=os.getpid()))


def test_torchrun_ranks_share_a_folder_even_with_the_default_run_id(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert run_stamp() == f"torchrun-none-agent{os.getppid()}"  # the launcher's process: the same for each rank
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    assert run_stamp() == "torchrun-none-job99"


def test_two_runs_of_one_command_started_together_never_share_files(tmp_path):
    command = [sys.executable, ENTRY, *TINY, "name=twin", "hyp=fb1", "hyp.steps=3", "impl.checkpoint.resume=false"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    jobs = [subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [job.wait(timeout=300) for job in jobs] == [0, 0], [job.stderr.read()[-2000:] for job in jobs]
    summaries = _summaries(tmp_path, "twin")
    assert len({summary["output_dir"] for summary in summaries}) == 2
    for summary in summaries:
        rows = open(os.path.join(summary["output_dir"], "metrics.jsonl")).read().splitlines()
        assert [json.loads(row)["step"] for row in rows] == [1, 2, 3]
        assert os.path.isfile(os.path.join(summary["output_dir"], "checkpoints", "step-0000003.pt"))


def test_a_sweep_goes_on_past_failed_jobs_and_lists_them_at_the_end(tmp_path):
    result = run_entry(["-m", *TINY, "name=sweep", "hyp=fb1", "hyp.steps=2", "hyp.warmup=0",
                        "hyp.optim.lr=1e30,-1,0.1"], tmp_path, check=False)
    assert result.returncode == 3, result.stderr[-3000:]  # the first failed job's code: diverged
    failures = [line for line in result.stderr.splitlines() if line.startswith("fullbatch: job ")]
    assert len(failures) == 2 and "job 0" in failures[0] and " diverged in " in failures[0]
    assert "job 1" in failures[1] and "config_error: hyp.optim.lr=-1.0 is not allowed" in failures[1]
    assert "Traceback" not in result.stderr
    assert [summary["status"] for summary in _summaries(tmp_path, "sweep")] == ["diverged", "config_error",
                                                                               "finished"]
    rows, _ = read_table(str(tmp_path / "tables" / "synthetic_resnet20.csv"))
    assert sorted(row["status"] for row in rows) == ["config_error", "diverged", "finished"]
    from fullbatch.run.runtime import config_hash

    failed = compose_config([*TINY, "name=sweep", "hyp=fb1", "hyp.steps=2", "hyp.warmup=0", "hyp.optim.lr=-1"])
    [row] = [row for row in rows if row["status"] == "config_error"]
    assert row["run_key"] == f"sweep/{config_hash(failed)}"  # a fixed rerun of that job replaces this row


def test_reporting_a_finished_run_again_keeps_its_measured_values_in_its_table_row(tmp_path):
    cfg = compose_config([*TINY, "name=again", "hyp=fb1", "hyp.steps=2"])
    first = run(cfg, output_dir=str(tmp_path / "outputs" / "again" / "first"))
    again = run(cfg, output_dir=str(tmp_path / "outputs" / "again" / "second"))  # a requeue of the finished command
    other = compose_config([*TINY, "name=again", "hyp=fb1", "hyp.steps=2", "seed=1"])
    run(other, output_dir=str(tmp_path / "outputs" / "again" / "third"))
    rows, _ = read_table(str(tmp_path / "tables" / "synthetic_resnet20.csv"))
    assert [(row["seed"], os.path.basename(row["output_dir"])) for row in rows] == [("0", "first"),
                                                                                   ("1", "third")]
    for key in ("final_train_loss", "final_train_acc", "seconds_per_step", "final_val_acc"):
        assert first[key] is not None and float(rows[0][key]) == pytest.approx(first[key], rel=1e-12), key
    assert float(rows[0]["wall_time"]) == round(first["wall_time"], 1)
    assert again["reported_in"].endswith("second") and again["seconds_per_step"] == first["seconds_per_step"]
    assert sorted(os.listdir(tmp_path / "tables")) == [".locks", "synthetic_resnet20.csv"]  # no lock files in sight


def _scaled(state, factor):
    model = {key: value * factor if value.is_floating_point() else value for key, value in state["model"].items()}
    return dict(state, model=model)


def test_restore_steps_back_past_a_blown_up_checkpoint_and_into_the_folder_it_resumed_from(tmp_path, caplog):
    runs = tmp_path / "runs"  # the search folder: a folder of its own, not the working folder
    overrides = [*TINY, "name=blowup", "hyp=fb1", "hyp.steps=6", "hyp.warmup=0", "hyp.scheduler=none",
                 "impl.checkpoint.save_every_nth_step=1", "impl.checkpoint.keep=10",
                 "impl.checkpoint.on_divergence=restore", f"impl.checkpoint.search_dir={runs}"]
    first = runs / "first"
    cfg = compose_config(overrides)
    run(cfg, output_dir=str(first))
    identity = json.load(open(first / "summary.json"))["config_hash"]
    os.remove(first / "checkpoints" / "step-0000006.pt")  # as if preempted after step 5, whose weights had
    os.remove(first / "checkpoints" / "step-0000006.json")  # already blown up (but were finite)
    state = load_checkpoint(str(first / "checkpoints" / "step-0000005.pt"), "cpu")
    save_checkpoint(_scaled(state, 1e30), str(first / "checkpoints"), 5, identity, keep=10)
    caplog.set_level("INFO", logger="fullbatch")
    summary = run(cfg, output_dir=str(runs / "requeued"))
    assert summary["resumed_from"].endswith("first/checkpoints/step-0000005.pt")
    assert summary["status"] == "finished" and summary["lr_restores"] == 2
    restored = [line.split("Restoring ")[1] for line in caplog.text.splitlines() if "Restoring " in line]
    assert restored == [str(first / "checkpoints" / f"step-{step:07d}.pt") for step in (5, 4)]
    rows = [json.loads(line) for line in open(runs / "requeued" / "metrics.jsonl")]
    assert [row["step"] for row in rows] == [6, 6, 5, 6] and rows[-1]["lr"] == pytest.approx(0.25 * rows[0]["lr"])
    assert "lr of the next step" in caplog.text


def test_each_restore_goes_further_back_until_a_checkpoint_is_good(tmp_path, caplog):
    runs = tmp_path / "runs"  # the search folder: a folder of its own, not the working folder
    overrides = [*TINY, "name=twice", "hyp=fb1", "hyp.steps=5", "hyp.warmup=0", "hyp.scheduler=none",
                 "impl.checkpoint.save_every_nth_step=1", "impl.checkpoint.keep=10",
                 "impl.checkpoint.on_divergence=restore", "impl.checkpoint.max_restores=3",
                 f"impl.checkpoint.search_dir={runs}", "impl.checkpoint.resume=false"]
    run(compose_config(overrides), output_dir=str(runs / "first"))
    identity = json.load(open(runs / "first" / "summary.json"))["config_hash"]
    folder = runs / "first" / "checkpoints"
    for step in (3, 4):  # both newest checkpoints blown up: the second restore must not reload step 4
        state = load_checkpoint(str(folder / f"step-{step:07d}.pt"), "cpu")
        save_checkpoint(_scaled(state, 1e30), str(folder), step, identity, keep=10)
    for step in (5,):
        os.remove(folder / f"step-{step:07d}.pt")
        os.remove(folder / f"step-{step:07d}.json")
    caplog.set_level("INFO", logger="fullbatch")
    summary = run(compose_config([*overrides[:-1], "impl.checkpoint.resume=auto"]), output_dir=str(runs / "b"))
    assert summary["status"] == "finished" and summary["lr_restores"] == 3
    restored = [line.split("Restoring ")[1] for line in caplog.text.splitlines() if "Restoring " in line]
    assert [os.path.basename(path) for path in restored] == [f"step-{step:07d}.pt" for step in (4, 3, 2)]


def _checkpoint(folder, step, identity, keep=2, search_dir=None, lineage="run-a"):
    return save_checkpoint(dict(step=step, model={"w": torch.full((2,), float(step))}), str(folder), step, identity,
                           keep, search_dir, lineage)


def test_keep_holds_per_run_across_the_folders_of_its_requeues(tmp_path):
    for requeue in range(5):  # each requeue writes into a new run folder
        folder = tmp_path / f"requeue{requeue}" / "checkpoints"
        _checkpoint(folder, 2 * requeue + 1, "run", search_dir=str(tmp_path))
        _checkpoint(folder, 2 * requeue + 2, "run", search_dir=str(tmp_path))
    _checkpoint(tmp_path / "other" / "checkpoints", 1, "other-config", search_dir=str(tmp_path))
    assert [step for step, _ in find_checkpoints([str(tmp_path)], "run")] == [10, 9]
    assert [step for step, _ in find_checkpoints([str(tmp_path)], "other-config")] == [1]
    assert len(glob.glob(str(tmp_path / "**" / "*.pt"), recursive=True)) == 3


def test_pruning_never_touches_another_run_of_the_same_config_or_foreign_files(tmp_path):
    for step in (900, 1000):  # an earlier run of the same config that got further
        _checkpoint(tmp_path / "longer" / "checkpoints", step, "run", search_dir=str(tmp_path), lineage="run-b")
    foreign = tmp_path / "project" / "checkpoints"
    foreign.mkdir(parents=True)
    (foreign / "important.pt").write_bytes(b"x")
    (foreign / "step-0000001.pt").write_bytes(b"x")  # no marker: not ours to judge
    long_ago = time.time() - STALE_SECONDS - 60
    for path in foreign.iterdir():
        os.utime(path, (long_ago, long_ago))
    for step in (100, 200, 300):
        _checkpoint(tmp_path / "fresh" / "checkpoints", step, "run", keep=1, search_dir=str(tmp_path))
    assert sorted(step for step, _ in find_checkpoints([str(tmp_path)], "run")) == [300, 900, 1000]
    assert sorted(path.name for path in foreign.iterdir()) == ["important.pt", "step-0000001.pt"]


def test_files_left_by_killed_writers_are_removed_once_stale(tmp_path):
    folder = tmp_path / "old" / "checkpoints"
    folder.mkdir(parents=True)
    leftovers = [folder / "step-0000003.pt.tmp-run-a-123", folder / "step-0000003.json.tmp-run-a-123"]
    lone_marker = _checkpoint(folder, 4, "run")[:-3] + ".json"  # killed after its marker, before the rename
    os.rename(lone_marker[:-5] + ".pt", folder / "step-0000004.pt.tmp-run-a-77")
    leftovers += [folder / "step-0000004.json", folder / "step-0000004.pt.tmp-run-a-77"]
    others = [folder / "step-0000005.pt.tmp-run-b-123", folder / "step-0000006.pt.tmp-123", folder / "step-0000007.pt"]
    fresh = folder / "step-0000008.pt.tmp-run-a-456"  # a write in progress, maybe by a concurrent requeue
    for path in [*leftovers[:2], *others, fresh]:
        path.write_bytes(b"x" * 10)
    long_ago = time.time() - STALE_SECONDS - 60
    for path in leftovers + others:
        os.utime(path, (long_ago, long_ago))
    _checkpoint(tmp_path / "new" / "checkpoints", 9, "run", search_dir=str(tmp_path))
    assert not any(path.exists() for path in leftovers) and fresh.exists() and all(path.exists() for path in others)


def test_the_training_loop_prunes_across_the_folders_of_a_requeue_and_only_there(tmp_path):
    runs = tmp_path / "runs"  # the search folder: a folder of its own, not the working folder
    overrides = [*TINY, "name=prune", "hyp=fb1", "hyp.steps=3", "impl.checkpoint.save_every_nth_step=1",
                 f"impl.checkpoint.search_dir={runs}"]
    run(compose_config([*overrides, "impl.checkpoint.resume=false"]), output_dir=str(runs / "other"))
    run(compose_config([*overrides, "impl.checkpoint.resume=false"]), output_dir=str(runs / "a"))
    for run_dir in ("other", "a"):  # as if both were stopped after step 2: a's were written last
        for name in ("step-0000003.pt", "step-0000003.json"):
            os.remove(runs / run_dir / "checkpoints" / name)
    summary = run(compose_config(overrides), output_dir=str(runs / "b"))  # a's requeue
    assert summary["resumed_from"] == str(runs / "a" / "checkpoints" / "step-0000002.pt")
    markers = glob.glob(str(runs / "**" / "checkpoints" / "*.json"), recursive=True)
    assert sorted(os.path.relpath(marker, runs) for marker in markers) == [  # the other run keeps its own
        os.path.join("a", "checkpoints", "step-0000002.json"), os.path.join("b", "checkpoints", "step-0000003.json"),
        os.path.join("other", "checkpoints", "step-0000002.json")]


def test_a_start_up_error_removes_only_what_this_process_wrote(tmp_path):
    from fullbatch.run.folder import FolderSnapshot

    fresh = tmp_path / "outputs" / "bad" / "2026-12-01" / "10-00-00-pid1"
    (tmp_path / "outputs" / "bad" / "older-run").mkdir(parents=True)
    before = FolderSnapshot(str(fresh))
    (fresh / ".hydra").mkdir(parents=True)  # what Hydra writes
    (fresh / ".hydra" / "config.yaml").write_text("new")
    (fresh / "train_with_gradient_descent.log").write_text("x")
    before.restore(str(fresh), "train_with_gradient_descent.log")
    assert not (tmp_path / "outputs" / "bad" / "2026-12-01").exists() and (tmp_path / "outputs" / "bad").exists()
    existing = tmp_path / "finished-run"
    (existing / ".hydra").mkdir(parents=True)
    (existing / ".hydra" / "config.yaml").write_text("the run's config")
    (existing / "train_with_gradient_descent.log").write_text("the run's log\n")
    (existing / "metrics.jsonl").write_text("{}\n")
    before = FolderSnapshot(str(existing))
    (existing / ".hydra" / "config.yaml").write_text("overwritten")
    (existing / ".hydra" / "overrides.yaml").write_text("added")
    with open(existing / "train_with_gradient_descent.log", "a") as handle:
        handle.write("an error\n")
    before.restore(str(existing), "train_with_gradient_descent.log")
    assert (existing / ".hydra" / "config.yaml").read_text() == "the run's config"
    assert not (existing / ".hydra" / "overrides.yaml").exists()
    assert (existing / "train_with_gradient_descent.log").read_text() == "the run's log\n"
    assert (existing / "metrics.jsonl").read_text() == "{}\n"


def test_a_signal_while_the_outputs_are_written_ends_the_job_after_them(tmp_path, monkeypatch):
    import signal

    from fullbatch.run import outputs
    from fullbatch.run.interruption import Stopped

    original = outputs.record_table_row

    def row_then_signal(*args):
        original(*args)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(outputs, "record_table_row", row_then_signal)
    with pytest.raises(Stopped, match="SIGTERM while the run wrote its outputs"):
        run(compose_config([*TINY, "name=late", "hyp=fb1", "hyp.steps=1"]), output_dir=str(tmp_path / "late"))
    assert json.load(open(tmp_path / "late" / "summary.json"))["status"] == "finished"
    assert len(read_table(str(tmp_path / "tables" / "synthetic_resnet20.csv"))[0]) == 1
