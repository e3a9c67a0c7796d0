"""fullbatch.reproduce: the scale factors of every scale, the balanced subsets, and the whole pipeline at the
smoke scale (runs, the resume of an interrupted row, the report's table and figures)."""
import csv
import json
import os
import re

import numpy as np
import pytest

from conftest import compose_config
from fullbatch.data.subsets import balanced_indices, take_subset
from fullbatch.errors import ConfigError
from fullbatch.reproduce.__main__ import main as reproduce
from fullbatch.reproduce.report import comparisons, ladder
from fullbatch.reproduce.runner import run_folder
from fullbatch.reproduce.scales import ROWS, SCALES, row_overrides


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_scale_keeps_each_rows_constants_and_its_lengths(scale):
    scale = SCALES[scale]
    runs = {row.name: compose_config(row_overrides(scale, row, 0)) for row in scale.rows()}
    full = {name: compose_config(list(ROWS[name].overrides)) for name in runs}
    assert runs["sgd"].hyp.steps == runs["fb"].hyp.steps and runs["sgd"].hyp.train_stochastic  # epochs = steps
    long_rows = ("fb_longer", "fb_clip", "fb_reg", "fb_strong", "fb_practice")
    assert len({runs[name].hyp.steps for name in long_rows}) == 1  # one length for the long rows of a half
    assert len({runs[f"{name}_noaug"].hyp.steps for name in long_rows[:-1]}) == 1
    for name, cfg in runs.items():
        preset, factor = full[name], scale.factor_of(ROWS[name])
        assert cfg.hyp.optim.lr == preset.hyp.optim.lr and cfg.hyp.grad_clip == preset.hyp.grad_clip, name
        assert cfg.hyp.grad_reg.block_strength == preset.hyp.grad_reg.block_strength, name
        assert cfg.data.batch_size == preset.data.batch_size and cfg.hyp.scheduler == preset.hyp.scheduler, name
        assert cfg.hyp.train_stochastic == preset.hyp.train_stochastic and cfg.hyp.shuffle == preset.hyp.shuffle
        assert list(cfg.data.augmentations_train) == (list(preset.data.augmentations_train)
                                                      if ROWS[name].augmented else []), name
        assert cfg.hyp.steps == round(preset.hyp.steps * factor), name
        assert cfg.hyp.warmup == max(1, round(preset.hyp.warmup * factor)) or factor == 1, name
        assert cfg.model.name == "resnet18" and cfg.model.width == scale.width, name
        if str(cfg.hyp.scheduler) == "cosine-4000" and factor != 1:
            assert cfg.hyp.cosine_horizon == round(4000 * factor), name
    assert (runs["fb_practice"].hyp.shuffle, runs["fb_strong"].hyp.shuffle) == (True, False)
    assert not runs["fb_clip_noaug"].data.augmentations_train and runs["fb_clip"].data.augmentations_train
    assert ("fb_reg_10x" in runs) == (scale.name == "paper")


def test_micro_gives_the_main_rows_three_seeds_and_sgd_its_length_in_epochs():
    micro = SCALES["micro"]
    seeds = {row.name: micro.seeds_for(row) for row in micro.rows()}
    assert all(seeds[name] >= 3 for name in ("sgd", "fb", "fb_clip", "fb_reg", "fb_strong"))
    assert min(seeds.values()) >= 2 and sum(seeds.values()) == len(micro.jobs(micro.rows()))
    assert {micro.seeds_for(row, 1) for row in micro.rows()} == {1}  # --seeds 1 wins
    sgd, fb = (compose_config(row_overrides(micro, ROWS[name], 0)) for name in ("sgd", "fb_clip"))
    assert (sgd.hyp.steps, fb.hyp.steps, sgd.data.size) == (100, 300, 500)


def test_small_gives_the_compared_rows_the_seeds_its_power_calculation_asks_for():
    from fullbatch.reproduce.power import expected_half_width, sd_upper_bound

    small = SCALES["small"]
    seeds = {row.name: small.seeds_for(row) for row in small.rows()}
    assert (seeds["sgd"], seeds["fb"], seeds["fb_clip"], seeds["fb_reg"]) == (8, 8, 6, 6)
    assert min(seeds.values()) >= 2
    bound = sd_upper_bound(0.86, 8)  # micro's pooled seed-to-seed spread of these rows, upper 90% bound
    for name in ("fb", "fb_clip", "fb_reg"):  # each against Baseline SGD: at most 2 points at the bound
        assert expected_half_width(bound, seeds["sgd"], bound, seeds[name]) <= 2.0, name
    runs = {name: compose_config(row_overrides(small, ROWS[name], 0)) for name in ("sgd", "fb", "fb_clip",
                                                                                   "fb_clip_noaug")}
    assert [runs[name].hyp.steps for name in runs] == [100, 100, 600, 300]
    assert (runs["fb_clip"].hyp.warmup, runs["fb_clip"].hyp.cosine_horizon) == (80, 800)
    assert (runs["sgd"].data.size, str(runs["sgd"].data.subset), runs["sgd"].model.width) == (1000, "balanced", 8)


def test_paper_scale_is_the_papers_settings():
    cfg = compose_config(row_overrides(SCALES["paper"], ROWS["fb_strong"], 0))
    assert (cfg.hyp.steps, cfg.hyp.warmup, cfg.hyp.cosine_horizon, cfg.data.size, cfg.model.width) == (
        3000, 400, None, None, 64)


def test_balanced_subsets_are_balanced_seeded_and_shuffled():
    labels = np.repeat(np.arange(10), 100)  # sorted by class, as some CIFAR copies are
    first = balanced_indices(labels, 1000 - 7, 10, seed=3)
    counts = np.bincount(labels[first], minlength=10)
    assert counts.sum() == 993 and counts.max() - counts.min() == 1 and len(set(first)) == 993
    assert np.array_equal(first, balanced_indices(labels, 993, 10, seed=3))
    assert not np.array_equal(first, balanced_indices(labels, 993, 10, seed=4))
    assert len(set(labels[first[:20]])) > 3  # random order: the first block holds many classes
    images = np.arange(1000)
    assert np.array_equal(take_subset(images, labels, 5, "first", 10, 0, "data.size")[1], labels[:5])
    with pytest.raises(ConfigError, match="data.size=950 is not allowed with data.subset=balanced: class 0 has only 50 examples"):
        balanced_indices(labels[50:], 1000 - 50, 10, seed=0, key="data.size")


def test_a_balanced_subset_of_a_class_sorted_cifar_copy_trains_on_every_class(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:  # every file sorted by class
            pickle.dump({"data": np.zeros((100, 3072), np.uint8), "labels": sorted(list(range(10)) * 10)}, handle)
    from fullbatch.data import load_device_dataset

    cfg = compose_config(["data=CIFAR10", f"data.path={tmp_path}", "data.size=50", "data.test_size=20",
                          "data.subset=balanced", "data.download=false"])
    dataset = load_device_dataset(cfg.data, 3, "cpu")
    assert dataset.seed == 3  # the run's seed drives augmentation; data.subset_seed only picks the examples
    assert np.bincount(dataset.train_labels.numpy(), minlength=10).tolist() == [5] * 10
    assert np.bincount(dataset.test_labels.numpy(), minlength=10).tolist() == [2] * 10


def stop_after_step_5(folder):
    """Leave a finished 10-step smoke run as if it had been stopped after its checkpoint of step 5."""
    for name in ("summary.json", "model.pt", "checkpoints/step-0000010.pt", "checkpoints/step-0000010.json"):
        os.remove(os.path.join(folder, name))
    with open(os.path.join(folder, "metrics.jsonl")) as handle:
        kept = handle.readlines()[:5]
    with open(os.path.join(folder, "metrics.jsonl"), "w") as handle:
        handle.writelines(kept)


def test_the_smoke_scale_runs_resumes_an_interrupted_row_and_reports(tmp_path, capsys):
    assert reproduce(["--scale", "smoke", "--root", str(tmp_path), "--device", "cpu"]) == 0
    scale = SCALES["smoke"]
    interrupted = run_folder(str(tmp_path), scale, ROWS["fb_clip"], 0)
    stop_after_step_5(interrupted)
    untouched = os.path.getmtime(os.path.join(run_folder(str(tmp_path), scale, ROWS["fb_reg"], 0), "summary.json"))
    assert reproduce(["--scale", "smoke", "--root", str(tmp_path), "--device", "cpu", "--no-landscapes"]) == 0
    summary = json.load(open(os.path.join(interrupted, "summary.json")))
    assert summary["status"] == "finished" and summary["resumed_from"].endswith("step-0000005.pt")
    steps = [json.loads(line)["step"] for line in open(os.path.join(interrupted, "metrics.jsonl"))]
    assert steps == list(range(1, 11))  # one curve: 1-5 before, 6-10 after the resume
    assert os.path.getmtime(os.path.join(run_folder(str(tmp_path), scale, ROWS["fb_reg"], 0), "summary.json")) == \
        untouched  # a row that had ended is not run again
    report = tmp_path / "reports" / "smoke"
    for figure in ("accuracy", "curves", "landscape"):
        assert (report / f"{figure}.png").stat().st_size > 1000 and (report / f"{figure}.pdf").exists(), figure
    text = (report / "README.md").read_text()
    labels = [row.label for row in scale.rows()]
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert [line.split(" | ")[0][2:] for line in table] == labels and len(labels) == 13
    assert "pipeline check, not a result" in text and "No verdicts are drawn" in text
    assert "Ranked by" not in text and "interval" not in text.split("Regime:")[0]  # no comparisons, no verdicts
    with open(report / "results.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert [run["row"] for run in runs] == [row.name for row in scale.rows()]
    assert all(run["status"] == "finished" and 0 <= float(run["final_val_acc"]) <= 1 for run in runs)
    for run in runs:  # the regime columns: each run's own final train accuracy and loss
        summary = json.load(open(os.path.join(tmp_path, run["output_dir"], "summary.json")))
        assert float(run["final_train_acc"]) == summary["final_train_acc"]
        assert float(run["final_train_loss"]) == summary["final_train_loss"]
        assert run["fitted"] == str(summary["final_train_acc"] >= 0.99)
    capsys.readouterr()
    assert reproduce(["--scale", "paper", "--list", "--device", "cpu", "--rows", "fb_strong,fb_reg_10x"]) == 0
    listing = capsys.readouterr().out  # a CPU does not measure full-width steps: it says so, and lists at once
    assert listing.count("python train_with_gradient_descent.py") == 2 and "GPU-hours" in listing
    assert "# not measured here: a CPU needs hours per row for ResNet-18 at width 64" in listing
    assert "# total on one H100 for these 2 runs:" in listing
    assert "data.db.rounds=10" in listing


def test_intervals_match_hand_computed_t_and_welch_values():
    from fullbatch.reproduce.intervals import mean_interval, welch_difference

    row = mean_interval([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.302653 from the table
    assert row.centre == 2.0 and row.half_width == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    difference = welch_difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])  # equal spread: 4 degrees of freedom
    assert difference.df == pytest.approx(4.0) and difference.centre == -3.0
    assert difference.half_width == pytest.approx(2.776445 * (2 / 3) ** 0.5, rel=1e-6) and difference.excludes_zero
    unequal = welch_difference([1.0, 2.0, 3.0], [2.0, 3.0, 5.0, 6.0])  # Welch-Satterthwaite df 4.742
    assert unequal.df == pytest.approx(1.1666667 ** 2 / ((1 / 3) ** 2 / 2 + (10 / 12) ** 2 / 3), rel=1e-6)
    assert not unequal.excludes_zero  # -2 +- 2.82
    assert welch_difference([0.5], [0.2, 0.3]).half_width is None  # one seed: no interval, no verdict
    assert welch_difference([0.5, 0.5], [0.2, 0.2]).excludes_zero  # seeds that agree exactly


def test_rows_are_compared_with_95_percent_welch_intervals_and_never_from_a_row_that_missed_its_regime():
    rows = SCALES["micro"].rows()
    accuracies = {"sgd": (0.20, 0.22, 0.24), "fb": (0.10, 0.11, 0.12), "fb_longer": (0.25, 0.27),
                  "fb_clip": (0.21, 0.23, 0.25), "fb_reg": (0.41,), "fb_strong": (0.5, 0.5, 0.5),
                  "sgd_noaug": (0.30, 0.32)}
    train = {"fb": 0.5, "fb_strong": 0.9}  # Baseline FB may stay unfitted; FB strong reg. missed its regime
    results = {name: [{"final_val_acc": value, "final_train_acc": train.get(name, 1.0)} for value in values]
               for name, values in accuracies.items()}
    against_sgd = {c.row.name: c for c in comparisons(rows, results)}
    assert set(against_sgd) == {"fb", "fb_longer", "fb_clip", "fb_reg", "fb_strong"}
    fb = against_sgd["fb"].difference  # 11 +- 1 against 22 +- 2, 3 seeds each: df 2 * (1 + 4) ** 2 / 17
    assert fb.centre == pytest.approx(-11.0) and fb.df == pytest.approx(50 / 17)
    assert fb.excludes_zero and "excludes 0" in against_sgd["fb"].verdict()
    assert not against_sgd["fb_clip"].difference.excludes_zero and "no difference" in against_sgd["fb_clip"].verdict()
    assert against_sgd["fb_reg"].difference.half_width is None and "no verdict" in against_sgd["fb_reg"].verdict()
    assert against_sgd["fb_strong"].difference is None and "missed its regime" in against_sgd["fb_strong"].verdict()
    steps = {c.row.name: c for c in ladder(rows, results)}
    assert steps["fb_longer"].reference == "Baseline FB" and steps["fb_longer"].difference.excludes_zero
    assert steps["fb_strong"].difference is None  # from a missed row, no comparison in either list
    assert "fb" not in steps  # Baseline FB is compared with SGD, not with a row before it
    from fullbatch.reproduce.report import regime

    assert [regime(ROWS[name], results[name]) for name in ("fb", "fb_strong", "sgd")] == [
        "unfitted by design", "missed", "fitted"]


def _smoke(root, *extra):
    return reproduce(["--scale", "smoke", "--root", str(root), "--device", "cpu", "--no-landscapes", *extra])


def _weights(root, row, seed=0):
    import torch

    return torch.load(os.path.join(run_folder(str(root), SCALES["smoke"], ROWS[row], seed), "model.pt"),
                      weights_only=True)


def test_jobs_in_parallel_train_the_same_weights_as_one_after_the_other_and_skip_what_ended(tmp_path):
    rows = ["--rows", "fb_clip,fb_reg,sgd", "impl.threads=1"]
    assert _smoke(tmp_path / "serial", *rows) == 0
    assert _smoke(tmp_path / "parallel", "--jobs", "2", *rows) == 0
    for row in ("fb_clip", "fb_reg", "sgd"):
        serial, parallel = _weights(tmp_path / "serial", row), _weights(tmp_path / "parallel", row)
        assert all(torch_equal(serial[key], parallel[key]) for key in serial), row
        log = os.path.join(run_folder(str(tmp_path / "parallel"), SCALES["smoke"], ROWS[row], 0), "job.log")
        assert "finished: final validation accuracy" in open(log).read()  # each child wrote its own log
    summary = os.path.join(run_folder(str(tmp_path / "parallel"), SCALES["smoke"], ROWS["fb_reg"], 0), "summary.json")
    before = os.path.getmtime(summary)
    assert _smoke(tmp_path / "parallel", "--jobs", "2", *rows) == 0
    assert os.path.getmtime(summary) == before  # ended runs are skipped, not run again


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_jobs_are_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        reproduce(["--scale", "smoke", "--root", str(tmp_path), "--jobs", "0"])
    assert stop.value.code == 2 and "--jobs must be at least 1" in capsys.readouterr().err
    assert reproduce(["--scale", "smoke", "--root", str(tmp_path), "--jobs", "2", "--device", "cuda:1"]) == 2
    assert "--device cuda:1 is not allowed with --jobs 2" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()


def _started_process(job, timeout=120):
    """The process of a local submitit job's task, once it has entered RowJob (submitit's handlers are set)."""
    import re
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        found = re.search(r"seed 0\) started in process (\d+)", job.stderr() or "")
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"job {job.job_id} did not start: {job.stderr()}")


def test_the_local_launcher_runs_the_smoke_scale_and_requeues_a_preempted_job_from_its_checkpoint(tmp_path):
    pytest.importorskip("submitit")
    import signal

    from fullbatch.reproduce.launchers import run_local

    rows = ["--rows", "sgd,fb_clip"]
    assert _smoke(tmp_path, "--launcher", "local", "--jobs", "2", *rows) == 0
    scale = SCALES["smoke"]
    runs = [json.load(open(os.path.join(run_folder(str(tmp_path), scale, ROWS[row], 0), "summary.json")))
            for row in ("sgd", "fb_clip")]
    assert [run["status"] for run in runs] == ["finished"] * 2
    folder = run_folder(str(tmp_path), scale, ROWS["fb_clip"], 0)
    stop_after_step_5(folder)

    def preempt(job):  # what SLURM does: the preemption signal to the job's task, here while it starts up
        os.kill(_started_process(job), signal.SIGUSR2)

    jobs, stopped = run_local(str(tmp_path), scale, [ROWS["sgd"], ROWS["fb_clip"]], None, {"time": 60}, 1, "cpu",
                              wait=preempt)
    assert not stopped and len(jobs) == 1 and jobs[0].result() == "finished"  # only the stopped row ran
    assert "Requeued" in jobs[0].stdout() + jobs[0].stderr()  # submitit requeued it after the signal
    assert len(re.findall(r"RowJob\(smoke, fb_clip, seed 0\) started", jobs[0].stderr())) == 2
    summary = json.load(open(os.path.join(folder, "summary.json")))
    assert summary["status"] == "finished" and summary["resumed_from"].endswith("step-0000005.pt")
    from fullbatch.visualization.runs import read_metrics

    assert [row["step"] for row in read_metrics(folder)] == list(range(1, 11))  # continued from step 5
    assert _smoke(tmp_path, "--launcher", "local", *rows) == 0  # nothing left to run: the report is written
    assert (tmp_path / "reports" / "smoke" / "README.md").exists()


def test_a_row_job_preempted_during_training_hands_over_to_submitits_handler_and_only_for_its_signal(monkeypatch):
    import signal

    from fullbatch.reproduce import launchers

    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        for stopped_by, requeued in (("SIGUSR2", True), ("SIGTERM", False)):
            calls.clear()
            monkeypatch.setattr(launchers, "run_job", lambda *args, by=stopped_by: {"status": "preempted",
                                                                                    "stopped_by": by})
            assert launchers.RowJob("/nowhere", "smoke", "fb_clip", 0)() == "preempted"
            assert calls == ([signal.SIGUSR2] if requeued else []), stopped_by  # scancel's SIGTERM: no requeue
        monkeypatch.setattr(launchers, "run_job", lambda *args: {"status": "finished"})
        calls.clear()
        assert launchers.RowJob("/nowhere", "smoke", "fb_clip", 0)() == "finished" and calls == []
    finally:
        signal.signal(signal.SIGUSR2, previous)
    delayed = launchers.RowJob("/r", "micro", "sgd", 2, ["impl.threads=1"]).checkpoint()
    assert repr(delayed.function) == "RowJob(micro, sgd, seed 2)" and delayed.function.extra == ["impl.threads=1"]


def test_the_slurm_launcher_submits_one_array_with_the_options_and_config(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/bash\necho \"$@\" >> \"$(dirname \"$0\")/calls\"\n"
                                    "echo 'Submitted batch job 4242'\n")
    (bin_dir / "srun").write_text("#!/bin/bash\nexit 0\n")
    for name in ("sbatch", "srun"):
        os.chmod(bin_dir / name, 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "slurm.yaml"
    config.write_text("partition: gpu\naccount: 1234\ngpus: 2\ntime: 90\n")
    root = tmp_path / "root"
    assert reproduce(["--scale", "smoke", "--root", str(root), "--launcher", "slurm", "--slurm-config", str(config),
                      "--time", "30", "--rows", "fb_clip,sgd"]) == 0
    assert "submitted 2 job(s)" in capsys.readouterr().out and (bin_dir / "calls").exists()
    script = next((root / "outputs" / "reproduce" / "smoke" / "submitit").glob("*_submission.sh")).read_text()
    for line in ("--partition=gpu", "--account=1234", "--gpus-per-node=2", "--time=30", "--signal=USR2@120",
                 "--array=0-1"):
        assert line in script, line
    assert len(list((root / "outputs" / "reproduce" / "smoke" / "submitit").glob("*_submitted.pkl"))) == 2
    config.write_text("partition: gpu\ngpus: -1\n")
    assert reproduce(["--scale", "smoke", "--root", str(root), "--launcher", "slurm", "--slurm-config",
                      str(config)]) == 2
    assert "slurm gpus=-1 is not allowed" in capsys.readouterr().err


def test_a_run_folder_of_another_design_of_the_scale_is_refused_not_reused(tmp_path, capsys):
    folder = run_folder(str(tmp_path), SCALES["smoke"], ROWS["sgd"], 0)
    os.makedirs(folder)
    with open(os.path.join(folder, "summary.json"), "w") as handle:
        json.dump({"status": "finished", "overrides": ["data.size=99", "hyp=base_sgd"]}, handle)
    assert reproduce(["--scale", "smoke", "--root", str(tmp_path), "--rows", "sgd", "--device", "cpu"]) == 2
    assert "holds a run of another design of scale smoke" in capsys.readouterr().err
    assert reproduce(["--scale", "smoke", "--root", str(tmp_path), "--rows", "sgd", "--report-only"]) == 2


def test_the_table_gives_each_rows_cost_and_every_commit_its_seeds_ran():
    from fullbatch.reproduce.report import table_lines

    run = dict(status="finished", final_val_acc=0.4, best_val_acc=0.4, final_train_acc=1.0, final_train_loss=0.01,
               steps=100, seconds_per_step=1.5, device="cpu")
    results = {"sgd": [dict(run, wall_time=1800, git_revision="a" * 40),
                       dict(run, wall_time=5400, git_revision="b" * 40), dict(run, wall_time=3600, git_revision="a" * 40)]}
    header, rule, sgd, fb = table_lines([ROWS["sgd"], ROWS["fb"]], results, {})
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert all(line.count("|") == header.count("|") for line in (rule, sgd, fb))
    cells = dict(zip(columns, (cell.strip() for cell in sgd.strip("|").split("|"))))
    assert cells["row's cost (h)"] == "3.00" and cells["wall time per seed (s)"] == "3600"
    assert cells["commits"] == "aaaaaaaa, bbbbbbbb"


def test_the_table_says_how_many_of_a_rows_planned_seeds_have_ended():
    from fullbatch.reproduce.report import table_lines

    run = dict(status="finished", final_val_acc=0.4, best_val_acc=0.4, final_train_acc=1.0, final_train_loss=0.01,
               steps=100, seconds_per_step=1.5, device="cpu", wall_time=10, git_revision="a" * 40)
    results = {"sgd": [dict(run)] * 3, "fb": [dict(run)] * 2}
    lines = table_lines([ROWS["sgd"], ROWS["fb"], ROWS["fb_clip"]], results, {}, {"sgd": 3, "fb": 8, "fb_clip": 6})
    seeds = [line.split("|")[2].strip() for line in lines[2:]]
    assert seeds == ["3", "2 of 8", "0 of 6"]


def test_a_piece_killed_without_a_signal_counts_up_to_its_last_heartbeat_and_a_refused_one_not_at_all(
        tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    from fullbatch.reproduce import wall_time

    monkeypatch.setattr(wall_time, "HEARTBEAT", 0.2)
    scale, root = SCALES["smoke"], str(tmp_path / "root")
    script = ("import sys, time\nfrom fullbatch.reproduce import wall_time\nfrom fullbatch.reproduce.scales import "
              "SCALES\nwall_time.HEARTBEAT = 0.2\npiece = wall_time.piece(sys.argv[1], SCALES['smoke'], 2, 'none')\n"
              "piece.__enter__()\nprint('running', flush=True)\ntime.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", script, root], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "running"
        time.sleep(1.5)
        (running,) = wall_time.read_pieces(root, scale)
        assert running["outcome"] == "running"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    time.sleep(0.5)  # two beats' time: no longer running
    (killed,) = wall_time.read_pieces(root, scale)
    beat = wall_time.heartbeat_path(root, scale, killed["piece"])
    assert killed["outcome"] == "killed" and killed["ended"] == float(open(beat).read()) <= os.path.getmtime(beat)
    assert 1.0 < killed["ended"] - killed["started"] < 10  # beats every 0.2 s for about 1.5 s, then none
    later = time.time() + 86400
    os.utime(beat, (later, later))  # a copy that did not keep times: the piece is not stretched
    assert wall_time.read_pieces(root, scale) == [killed]

    with open(wall_time.pieces_path(root, scale), "a") as handle:
        handle.write('{"piece": "cut", "sta')  # a line a kill cut short: the next line is still read
    with wall_time.piece(root, scale, 1, "none") as normal:
        normal.outcome = "done"
    with wall_time.piece(root, scale, 1, "none") as refused:
        refused.outcome = None
    pieces = wall_time.read_pieces(root, scale)
    assert [piece["outcome"] for piece in pieces] == ["killed", "done"]
    assert not os.path.exists(wall_time.heartbeat_path(root, scale, normal.id))  # only a killed piece's beat stays
    assert not os.path.exists(wall_time.heartbeat_path(root, scale, refused.id))
    total = sum(piece["ended"] - piece["started"] for piece in pieces) / 3600
    text = wall_time.sentence(root, scale)
    assert f"{total:.2f} hours in 2 piece(s)" in text and "1 of the pieces was killed without a signal" in text

    fresh = str(tmp_path / "fresh")
    os.makedirs(fresh)
    with wall_time.piece(fresh, scale, 1, "none") as refused:
        refused.outcome = None
    assert os.listdir(fresh) == []  # a command refused before anything ran leaves no record behind
