"""Hydra's own launcher and sweeper plugins (the cluster extra): sweeps through submitit's local executor, a
requeue after a preemption signal inside a submitit job, optuna trials optimising the returned objective, and
one line for a launcher or sweeper that is not installed."""
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ENTRY, ROOT, TINY, run_entry

pytestmark = pytest.mark.slow


def _plugin(module):
    return pytest.importorskip(module, reason="the cluster extra is not installed: pip install -e \".[cluster]\"")


def _sweep_folder(cwd, name):
    folders = glob.glob(os.path.join(cwd, "outputs", name, "*", "*-sweep"))
    assert len(folders) == 1, folders  # every job of the sweep writes below one sweep folder
    return folders[0]


def _summary(folder):
    with open(os.path.join(folder, "summary.json")) as handle:
        return json.load(handle)


def _table(cwd):
    with open(os.path.join(cwd, "tables", "synthetic_resnet20.csv")) as handle:
        import csv

        return list(csv.DictReader(handle))


def test_a_sweep_through_submitits_local_launcher_writes_where_a_plain_sweep_does(tmp_path):
    _plugin("hydra_plugins.hydra_submitit_launcher")
    run_entry(["-m", "hydra/launcher=submitit_local", "name=plug", *TINY, "hyp=fb1", "hyp.steps=3",
               "impl.checkpoint.save_every_nth_step=2", "hyp.train_stochastic=False,True"], cwd=tmp_path)
    sweep = _sweep_folder(str(tmp_path), "plug")
    assert os.path.isdir(os.path.join(sweep, ".submitit"))  # the jobs ran through submitit
    for number, stochastic in ((0, False), (1, True)):
        folder = os.path.join(sweep, str(number))
        summary = _summary(folder)
        assert summary["status"] == "finished" and summary["steps"] == 3
        assert summary["config"]["hyp"]["train_stochastic"] is stochastic
        assert {os.path.basename(path) for path in glob.glob(os.path.join(folder, "checkpoints", "step-*"))} == {
            "step-0000002.pt", "step-0000002.json", "step-0000003.pt", "step-0000003.json"}
        assert os.path.isfile(os.path.join(folder, "model.pt")) and os.path.isfile(os.path.join(folder, "metrics.jsonl"))
    rows = _table(str(tmp_path))
    assert sorted(row["output_dir"] for row in rows) == [os.path.join(sweep, "0"), os.path.join(sweep, "1")]
    assert {row["status"] for row in rows} == {"finished"}


def test_failed_jobs_of_a_submitit_sweep_set_the_sweeps_exit_code(tmp_path):
    _plugin("hydra_plugins.hydra_submitit_launcher")
    result = run_entry(["-m", "hydra/launcher=submitit_local", "name=bad", *TINY, "hyp=fb1", "hyp.steps=2",
                        "data.batch_size=512,64"], cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr  # job 0 failed in another process; job 1 finished
    failed = [line for line in result.stderr.splitlines() if line.startswith("fullbatch: job")]
    assert len(failed) == 1 and "config_error: data.batch_size=512 is not allowed" in failed[0], result.stderr
    sweep = _sweep_folder(str(tmp_path), "bad")
    assert _summary(os.path.join(sweep, "0"))["status"] == "config_error"
    assert _summary(os.path.join(sweep, "1"))["status"] == "finished"


def _job_process(sweep, number, timeout=180):
    """The process that runs a local submitit job's task, once it has trained a few steps: the child of the
    process whose id names the job's folder (submitit's local controller)."""
    deadline = time.time() + timeout
    metrics = os.path.join(sweep, str(number), "metrics.jsonl")
    while time.time() < deadline:
        if os.path.isfile(metrics) and sum(1 for _ in open(metrics)) >= 3:
            for job_id in (name for name in os.listdir(os.path.join(sweep, ".submitit")) if name.isdigit()):
                log = os.path.join(sweep, ".submitit", job_id, f"{job_id}_0_log.out")
                if os.path.isfile(log) and f"sweep/{number}" in open(log).read().replace(os.sep, "/"):
                    with open(f"/proc/{job_id}/task/{job_id}/children") as handle:
                        return int(handle.read().split()[0])
        time.sleep(0.05)
    raise AssertionError(f"job {number} did not start training in {sweep}")


def _interrupted_sweep(tmp_path, signum, steps):
    """A one-job submitit_local sweep whose job gets `signum` once it has trained a few steps."""
    _plugin("hydra_plugins.hydra_submitit_launcher")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("HYDRA_FULL_ERROR", None)
    sweep_process = subprocess.Popen(
        [sys.executable, ENTRY, "-m", "hydra/launcher=submitit_local", "name=pre", *TINY, "data.size=128",
         "model.width=2", "hyp=fbclip", f"hyp.steps={steps}", "impl.checkpoint.save_every_nth_step=1000", "seed=0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not glob.glob(os.path.join(tmp_path, "outputs", "pre", "*", "*-sweep")) and time.time() < deadline:
            time.sleep(0.05)
        sweep = _sweep_folder(str(tmp_path), "pre")
        os.kill(_job_process(sweep, 0), signum)
        _, err = sweep_process.communicate(timeout=600)
    finally:
        if sweep_process.poll() is None:
            sweep_process.kill()
    return sweep_process.returncode, err, os.path.join(sweep, "0")


def test_a_preempted_submitit_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    steps = 150
    code, err, folder = _interrupted_sweep(tmp_path, signal.SIGUSR2, steps)  # what SLURM sends before preempting
    assert code == 0, err
    summary = _summary(folder)
    assert summary["status"] == "finished" and summary["steps"] == steps
    assert summary["resumed_from"].startswith(os.path.join(folder, "checkpoints", "step-"))  # its own checkpoint
    stopped_at = int(summary["resumed_from"].rsplit("-", 1)[1].split(".")[0])
    assert 3 <= stopped_at < steps
    with open(os.path.join(folder, "metrics.jsonl")) as handle:
        assert [json.loads(line)["step"] for line in handle] == list(range(1, steps + 1))  # none lost, none twice
    logs = "".join(open(path).read() for path in glob.glob(os.path.join(folder, "..", ".submitit", "*", "*_log.*")))
    assert "Requeued" in logs or "requeued" in logs


def test_a_submitit_job_stopped_by_sigterm_keeps_its_checkpoint_and_the_sweep_exits_4(tmp_path):
    code, err, folder = _interrupted_sweep(tmp_path, signal.SIGTERM, 150)  # scancel: no requeue
    assert code == 4, err
    failed = [line for line in err.splitlines() if line.startswith("fullbatch: job")]
    assert len(failed) == 1 and " preempted in " in failed[0], err  # one line, no traceback
    summary = _summary(folder)
    assert summary["status"] == "preempted" and summary["stopped_by"] == "SIGTERM"
    assert glob.glob(os.path.join(folder, "checkpoints", "step-*.pt"))  # the same command continues from it


def test_optuna_trials_optimise_the_objective_each_job_returns(tmp_path):
    _plugin("hydra_plugins.hydra_optuna_sweeper")
    run_entry(["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
               "hydra.sweeper.sampler.seed=0", "hyp.optim.lr=interval(0.01,0.2)", "name=opt", *TINY, "hyp=fb1",
               "hyp.steps=3"], cwd=tmp_path)
    sweep = _sweep_folder(str(tmp_path), "opt")
    trials = [_summary(os.path.join(sweep, str(number))) for number in (0, 1)]
    assert all(trial["status"] == "finished" for trial in trials)
    lrs = [trial["config"]["hyp"]["optim"]["lr"] for trial in trials]
    assert all(0.01 <= lr <= 0.2 for lr in lrs) and lrs[0] != lrs[1]  # optuna drew each trial's lr
    with open(os.path.join(sweep, "optimization_results.yaml")) as handle:
        result = yaml.safe_load(handle)
    best = max(trials, key=lambda trial: trial["final_val_acc"])
    assert result["best_value"] == pytest.approx(best["final_val_acc"])  # what the jobs returned
    assert result["best_params"]["hyp.optim.lr"] in lrs


def test_a_failed_optuna_trial_is_ranked_last_and_the_sweep_goes_on_then_exits_with_its_code(tmp_path):
    _plugin("hydra_plugins.hydra_optuna_sweeper")
    result = run_entry(["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
                        "hydra.sweeper.direction=minimize", "objective=final_train_loss", "name=optfail",
                        *[item for item in TINY if not item.startswith("data.batch_size=")],
                        "data.batch_size=choice(64,512)", "hyp=fb1", "hyp.steps=2"],
                       cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr  # the trial with blocks larger than the set failed
    assert [line for line in result.stderr.splitlines() if line.startswith("fullbatch: job")] != []
    sweep = _sweep_folder(str(tmp_path), "optfail")
    trials = {_summary(os.path.join(sweep, str(n)))["status"]: _summary(os.path.join(sweep, str(n))) for n in (0, 1)}
    assert set(trials) == {"finished", "config_error"}
    with open(os.path.join(sweep, "optimization_results.yaml")) as handle:
        result = yaml.safe_load(handle)
    assert result["best_params"] == {"data.batch_size": 64}
    assert result["best_value"] == pytest.approx(trials["finished"]["final_train_loss"])  # the configured objective


def test_the_objective_is_the_configured_summary_entry_and_nan_for_a_run_that_did_not_finish():
    from fullbatch.run.sweeps import objective_value

    summary = dict(status="finished", final_val_acc=0.5, final_val_loss=1.25)
    assert objective_value(summary, "final_val_acc") == 0.5 and objective_value(summary, "final_val_loss") == 1.25
    assert math.isnan(objective_value(dict(summary, status="diverged"), "final_val_acc"))  # no sweeper direction
    assert math.isnan(objective_value(dict(summary, final_val_acc=None), "final_val_acc"))


def test_a_stale_summary_in_a_reused_sweep_folder_is_not_counted(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "5").mkdir(parents=True)
    (sweep / "5" / "summary.json").write_text(json.dumps({"status": "crashed", "error": "an older sweep"}))
    os.utime(sweep / "5" / "summary.json", (time.time() - 3600, time.time() - 3600))
    result = run_entry(["-m", f"hydra.sweep.dir={sweep}", "name=reuse", *TINY, "hyp=fb1", "hyp.steps=1"],
                       cwd=tmp_path, check=False)
    assert result.returncode == 0 and "older sweep" not in result.stderr, result.stderr


def test_a_launcher_or_sweeper_that_is_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    from fullbatch import cli

    result = run_entry(["-m", "hydra/launcher=submitit_slrum", "name=x", *TINY], cwd=tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("fullbatch: hydra/launcher=submitit_slrum is not allowed: expected one of basic")
    assert not os.path.exists(tmp_path / "outputs")
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    installed = ConfigLoaderImpl.get_group_options
    monkeypatch.setattr(ConfigLoaderImpl, "get_group_options",  # as on a machine without the cluster extra
                        lambda self, group, *args, **kwargs: [name for name in installed(self, group, *args, **kwargs)
                                                              if name in ("basic",)])
    for argument, package in (("hydra/launcher=submitit_slurm", "hydra-submitit-launcher"),
                              ("hydra/sweeper=optuna", "hydra-optuna-sweeper")):
        message = cli.plugin_error(["-m", argument])
        assert message.startswith(f"{argument} is not allowed: expected one of basic; "), message
        assert message.endswith(f"comes with {package}, in the cluster extra: pip install -e \".[cluster]\""), message
    monkeypatch.setattr(ConfigLoaderImpl, "get_group_options", installed)
    for fine in (["hydra/sweeper=basic", "seed=1"], ['hydra/launcher="basic"'], ["hydra/launcher=null"],
                 ["hydra.launcher.partition=gpu"], ["hydra/launcher=mine", "hydra.searchpath=[file:///x]"]):
        assert cli.plugin_error(fine) is None, fine


def test_a_stop_signal_to_the_launching_process_says_the_submitit_jobs_go_on(tmp_path):
    _plugin("hydra_plugins.hydra_submitit_launcher")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("HYDRA_FULL_ERROR", None)
    launcher = subprocess.Popen([sys.executable, ENTRY, "-m", "hydra/launcher=submitit_local", "name=wait", *TINY,
                                 "data.size=128", "model.width=2", "hyp=fbclip", "hyp.steps=60"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not glob.glob(os.path.join(tmp_path, "outputs", "wait", "*", "*-sweep", "0", "metrics.jsonl")):
            assert time.time() < deadline and launcher.poll() is None, "the job never started training"
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 4 and err.strip().splitlines()[-1] == (
        "fullbatch: SIGTERM: stopped waiting for the sweep; its jobs go on under their scheduler (cancel them "
        "there); their results land in their folders and tables as usual"), err
    folder = os.path.join(_sweep_folder(str(tmp_path), "wait"), "0")
    deadline = time.time() + 300
    while not os.path.isfile(os.path.join(folder, "summary.json")) and time.time() < deadline:
        time.sleep(0.2)  # the job was not stopped: it ends on its own
    assert _summary(folder)["status"] == "finished"
