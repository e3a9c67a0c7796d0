"""The entry script end to end in a subprocess: outputs, a -m sweep, resume, divergence."""
import csv
import glob
import json
import os

import pytest
import torch

from conftest import TINY, run_entry


def _run_dirs(root, name):
    return sorted(os.path.dirname(p) for p in glob.glob(str(root / "outputs" / name / "**" / "summary.json"),
                                                        recursive=True))


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as handle:
        return json.load(handle)


def test_full_batch_run_writes_every_output(tmp_path):
    result = run_entry([*TINY, "name=fb", "hyp=fbclip", "hyp.steps=3", "impl.validate_every_nth_step=2"], tmp_path)
    [run_dir] = _run_dirs(tmp_path, "fb")
    rows = _metrics(run_dir)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for key in ("lr", "train_loss", "train_acc", "full_loss", "grad_norm", "pre_clip_norm", "clipped", "seconds"):
        assert all(key in row for row in rows), key
    assert "val_acc" in rows[1] and "val_acc" in rows[2] and "val_acc" not in rows[0]
    assert all(row["grad_norm"] <= 0.25 + 1e-6 for row in rows)
    assert all(row["clipped"] == (row["pre_clip_norm"] > 0.25) for row in rows)
    assert all(row["full_loss"] > row["train_loss"] for row in rows)  # weight decay term
    summary = _summary(run_dir)
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["final_val_acc"] == rows[-1]["val_acc"]
    assert summary["best_val_acc"] == max(rows[1]["val_acc"], rows[2]["val_acc"])
    assert summary["config"]["hyp"]["grad_clip"] == 0.25 and summary["torch_version"] == torch.__version__
    for key in ("wall_time", "device", "git_revision"):
        assert key in summary
    state = torch.load(os.path.join(run_dir, "model.pt"))
    assert "fc.weight" in state
    assert os.path.isfile(os.path.join(run_dir, "train_with_gradient_descent.log"))
    with open(tmp_path / "tables" / "synthetic_resnet20.csv") as handle:
        [table_row] = list(csv.DictReader(handle))
    assert table_row["hyp"] == "fbclip" and table_row["name"] == "fb" and table_row["status"] == "finished"
    assert table_row["config"] == "data=synthetic data.size=256 data.test_size=128 data.batch_size=64 " \
        "model=resnet20 model.width=4 hyp.warmup=1 hyp=fbclip hyp.steps=3"  # without name, seed, device, threads
    assert (table_row["width"], table_row["data_size"], table_row["test_size"], table_row["dryrun"]) == \
        ("4", "256", "128", "False")
    assert (table_row["augmentations"], table_row["precision"]) == ("random_crop+horizontal_flip", "float32")
    assert float(table_row["seconds_per_step"]) == pytest.approx(sum(row["seconds"] for row in rows) / 3)
    log = result.stdout + result.stderr  # progress: the run folder, step k/N with elapsed and ETA, where it wrote
    assert f"Run folder: {run_dir}" in log
    assert all(f"step {k}/3 | elapsed " in log for k in (1, 2, 3)) and "| eta 0:00 |" in log
    assert f"Wrote metrics {run_dir}/metrics.jsonl, model {run_dir}/model.pt, summary {run_dir}/summary.json, " \
           f"table row {tmp_path}/tables/synthetic_resnet20.csv" in log


def test_dry_runs_go_to_their_own_table(tmp_path):
    run_entry([*TINY, "name=dry", "hyp=fb1", "dryrun=True"], tmp_path)
    assert not (tmp_path / "tables" / "synthetic_resnet20.csv").exists()
    with open(tmp_path / "tables" / "dryrun" / "synthetic_resnet20.csv") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["dryrun"] == "True" and row["name"] == "dry"


def test_stochastic_run_takes_one_epoch_per_step(tmp_path):
    run_entry([*TINY, "name=sgd", "hyp=base_sgd", "hyp.steps=2", "data.batch_size=32"], tmp_path)
    [run_dir] = _run_dirs(tmp_path, "sgd")
    rows = _metrics(run_dir)
    assert len(rows) == 2 and rows[-1]["val_acc"] >= 0 and _summary(run_dir)["status"] == "finished"
    assert all(0 < row["grad_norm"] and row["clipped"] == 0.0 for row in rows)
    assert [row["lr"] for row in rows] == [0.0, 0.1]  # warmup 1: the first epoch at lr 0, then the peak
    from conftest import compose_config
    from fullbatch.train import build_trainer

    for batch_size, updates in ((32, 8), (48, 6)):  # 256 examples: 8 full mini-batches; 5 of 48 and one of 16
        trainer = build_trainer(compose_config([*TINY, "hyp=base_sgd", f"data.batch_size={batch_size}"]))
        counted = []
        trainer.optimizer.register_step_post_hook(lambda *args: counted.append(1))
        trainer.run_step()
        assert len(counted) == updates


def test_sweep_runs_two_jobs_into_one_table(tmp_path):
    result = run_entry(["-m", *TINY, "name=sweep", "hyp=fb1", "hyp.steps=2", "seed=0,1"], tmp_path)
    run_dirs = _run_dirs(tmp_path, "sweep")
    assert len(run_dirs) == 2, result.stdout
    seeds = sorted(_summary(d)["config"]["seed"] for d in run_dirs)
    assert seeds == [0, 1]
    with open(tmp_path / "tables" / "synthetic_resnet20.csv") as handle:
        assert sorted(int(row["seed"]) for row in csv.DictReader(handle)) == [0, 1]


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    common = [*TINY, "hyp=fbclip", "hyp.steps=4", "hyp.shuffle=True", "hyp.grad_noise.additive=1e-4",
              "impl.checkpoint.save_every_nth_step=2", "impl.validate_every_nth_step=2"]
    run_entry([*common, "name=whole"], tmp_path)
    [whole] = _run_dirs(tmp_path, "whole")
    checkpoint = os.path.join(whole, "checkpoints", "step-0000002.pt")
    assert os.path.isfile(checkpoint) and os.path.isfile(checkpoint[:-3] + ".json")
    run_entry([*common, "name=resumed", f"impl.checkpoint.resume={checkpoint}"], tmp_path)
    [resumed] = _run_dirs(tmp_path, "resumed")
    assert [row["step"] for row in _metrics(resumed)] == [3, 4]
    assert _summary(resumed)["resumed_from"] == os.path.abspath(checkpoint)
    expected, found = torch.load(os.path.join(whole, "model.pt")), torch.load(os.path.join(resumed, "model.pt"))
    assert expected.keys() == found.keys()
    for key in expected:
        assert torch.equal(expected[key], found[key]), key
    assert _metrics(resumed)[-1]["val_acc"] == _metrics(whole)[-1]["val_acc"]


@pytest.mark.slow
def test_resume_true_finds_the_newest_checkpoint_of_the_run_name(tmp_path):
    common = [*TINY, "name=again", "hyp=fb1", "hyp.steps=2", "impl.checkpoint.save_every_nth_step=1"]
    run_entry(common, tmp_path)
    run_entry([*common, "hyp.steps=3"], tmp_path)  # a different config: must not be resumed from
    result = run_entry([*common, "impl.checkpoint.resume=true"], tmp_path)
    summaries = [_summary(d) for d in _run_dirs(tmp_path, "again")]
    resumed = [s for s in summaries if s["resumed_from"]]
    assert len(resumed) == 1, result.stderr
    assert resumed[0]["resumed_from"].endswith("step-0000002.pt") and resumed[0]["steps"] == 2
    first = [s for s in summaries if not s["resumed_from"] and s["steps"] == 2][0]
    assert os.path.dirname(os.path.dirname(resumed[0]["resumed_from"])) == first["output_dir"]
    assert len(glob.glob(os.path.join(first["output_dir"], "checkpoints", "step-*.pt"))) == 2  # keep: 2


def test_resume_into_a_different_config_is_refused(tmp_path):
    run_entry([*TINY, "name=a", "hyp=fb1", "hyp.steps=2", "impl.checkpoint.save_every_nth_step=1"], tmp_path)
    [run_dir] = _run_dirs(tmp_path, "a")
    checkpoint = os.path.join(run_dir, "checkpoints", "step-0000001.pt")
    result = run_entry([*TINY, "name=b", "model.width=8", "hyp=fb1", "hyp.steps=2",
                        f"impl.checkpoint.resume={checkpoint}"], tmp_path, check=False)
    assert result.returncode == 2 and "different config" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    result = run_entry([*TINY, "name=boom", "hyp=fb1", "hyp.steps=6", "hyp.warmup=0", "hyp.optim.lr=1e25",
                        "impl.checkpoint.save_every_nth_step=1"], tmp_path, check=False)
    assert result.returncode == 3
    [run_dir] = _run_dirs(tmp_path, "boom")
    summary, rows = _summary(run_dir), _metrics(run_dir)
    assert summary["status"] == "diverged" and summary["steps"] < 6
    assert rows[-1]["train_loss"] in ("nan", "inf") or rows[-1]["pre_clip_norm"] in ("nan", "inf")
    assert not os.path.exists(os.path.join(run_dir, "model.pt"))
    markers = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step-*.json")))
    assert markers and json.load(open(markers[-1]))["step"] == len(rows) - 1
