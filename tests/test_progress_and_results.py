"""Progress lines, train.sh's options, and the results tables built from runs (mean +- std over seeds)."""
import csv
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY
from fullbatch.progress import Progress, duration
from fullbatch.results import group, main as results_main, markdown, mean_std, rows_from


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_counts_elapsed_and_eta_from_the_moving_average():
    clock = FakeClock()
    progress = Progress(10, done=2, smoothing=0.5, clock=clock)
    assert progress.describe() == "2/10 | elapsed 0:00 | eta ?"
    clock.now += 4.0
    assert progress.tick() == "3/10 | elapsed 0:04 | eta 0:28"  # 7 left at 4 s
    clock.now += 2.0
    assert progress.tick() == "4/10 | elapsed 0:06 | eta 0:18"  # average 0.5 * 2 + 0.5 * 4 = 3 s, 6 left
    assert duration(3 * 3600 + 62) == "3:01:02" and duration(59.6) == "1:00"


def _train_sh(*arguments):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(["bash", os.path.join(ROOT, "train.sh"), *arguments], env=env, capture_output=True,
                          text=True, timeout=600)


def test_train_sh_lists_every_run_with_the_extra_arguments_and_runs_nothing():
    result = _train_sh("--list", "dryrun=True", "data.path=/somewhere")
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 20
    assert all(line.endswith(" dryrun=True data.path=/somewhere") and "train_with_gradient_descent.py name=" in line
               for line in lines)
    only = _train_sh("--list", "--only", "fbaug_clip,noaug_sgd").stdout.splitlines()
    assert [line.split("name=")[1].split()[0] for line in only] == ["fbaug_clip", "noaug_sgd"]
    unknown = _train_sh("--only", "fb_nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("train.sh: --only fb_nope names no run; runs: ")


@pytest.mark.slow
def test_train_sh_passes_the_extra_arguments_to_the_run_it_starts(tmp_path):
    result = _train_sh("--only", "fbaug_clip", *TINY, "dryrun=True", f"tables={tmp_path}/tables",
                       f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "tables" / "dryrun" / "synthetic_resnet20.csv") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["name"], row["hyp"], row["dryrun"], row["width"]) == ("fbaug_clip", "fbclip", "True", "4")


ROWS = [  # two configurations, two seeds each; a requeued run reported twice; a failed run; a dry run
    dict(run_key="a/1", name="fb", config="hyp=fbclip", seed="0", status="finished", final_val_acc="0.80",
         best_val_acc="0.82", steps="30", seconds_per_step="2.0", dryrun="False"),
    dict(run_key="a/2", name="fb", config="hyp=fbclip", seed="1", status="finished", final_val_acc="0.84",
         best_val_acc="0.86", steps="30", seconds_per_step="4.0", dryrun="False"),
    dict(run_key="a/2", name="fb", config="hyp=fbclip", seed="1", status="finished", final_val_acc="0.84",
         best_val_acc="0.86", steps="30", seconds_per_step="4.0", dryrun="False"),
    dict(run_key="b/1", name="fb", config="hyp=fb1", seed="0", status="finished", final_val_acc="0.70",
         best_val_acc="0.70", steps="3", seconds_per_step="1.0", dryrun="False"),
    dict(run_key="b/2", name="fb", config="hyp=fb1", seed="1", status="diverged", final_val_acc="",
         best_val_acc="", steps="2", seconds_per_step="1.0", dryrun="False"),
    dict(run_key="c/1", name="fb", config="hyp=fb2", seed="0", status="finished", final_val_acc="0.1",
         best_val_acc="0.1", steps="3", seconds_per_step="1.0", dryrun="True"),
]


def test_results_group_by_configuration_with_mean_and_std_over_seeds():
    groups = group([dict(row) for row in ROWS])
    assert list(groups) == [("fb", "hyp=fbclip"), ("fb", "hyp=fb1")]  # the dry run left out
    table = markdown(groups).splitlines()
    assert table[2] == "| fb | hyp=fbclip | 2 | 82.00 ± 2.83 | 84.00 ± 2.83 | 30 | 3 |  |"
    assert table[3] == "| fb | hyp=fb1 | 1 | 70.00 | 70.00 | 3 | 1 | diverged (1) |"
    assert mean_std([]) == "" and mean_std([0.5, 0.5]) == "50.00 ± 0.00"
    assert len(group([dict(row) for row in ROWS], include_dryruns=True)) == 3


def test_results_command_reads_tables_and_run_folders(tmp_path, capsys):
    from conftest import compose_config
    from fullbatch.train import run

    for seed in (0, 1):
        cfg = compose_config([*TINY, "name=res", "hyp=fb1", "hyp.steps=2", f"seed={seed}"])
        run(cfg, output_dir=str(tmp_path / "outputs" / "res" / str(seed)), overrides=["hyp=fb1", f"seed={seed}"])
    assert results_main([str(tmp_path / "tables" / "synthetic_resnet20.csv")]) == 0
    from_table = capsys.readouterr().out
    assert results_main([str(tmp_path / "outputs" / "res")]) == 0
    from_folders = capsys.readouterr().out
    assert from_table == from_folders and "| res | hyp=fb1 | 2 | " in from_table
    assert len(rows_from([str(tmp_path / "outputs")])) == 2
    assert results_main([str(tmp_path / "missing.csv")]) == 2


def test_a_run_records_the_commit_it_started_from_not_one_made_while_it_trained(tmp_path, monkeypatch):
    from conftest import compose_config
    from fullbatch.run import outputs
    from fullbatch import train
    from fullbatch.train import run

    head = {"commit": "commit-at-start"}
    monkeypatch.setattr(outputs, "git_revision", lambda folder: head["commit"])
    original_loop = train.train_loop

    def commit_while_training(*args, **kwargs):
        head["commit"] = "commit-made-later"
        return original_loop(*args, **kwargs)

    monkeypatch.setattr(train, "train_loop", commit_while_training)
    summary = run(compose_config([*TINY, "name=rev", "hyp=fb1", "hyp.steps=1"]), output_dir=str(tmp_path / "rev"))
    assert summary["git_revision"] == "commit-at-start"


def test_the_commit_is_read_once_per_process_as_the_process_keeps_the_code_it_loaded(tmp_path):
    from fullbatch.run import outputs

    def commit(message):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m",
                        message], cwd=tmp_path, check=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    first = commit("first")
    assert outputs.git_revision(str(tmp_path)) == first
    later = commit("made while the process runs")
    assert later != first and outputs.git_revision(str(tmp_path)) == first
