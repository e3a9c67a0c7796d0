"""Every way a job is stopped by SIGTERM or SIGINT ends with exit code 4 and no traceback, so `$? -eq 4` can
requeue it: during start-up, a second signal during training, and (through `fullbatch.status`) under torchrun."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ENTRY, ROOT, TINY
from fullbatch.status import main as status_main

pytestmark = pytest.mark.slow  # each test starts the entry script and waits for it


def _start(overrides, cwd, command=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(command or [sys.executable, ENTRY, *overrides], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_steps(root, name, count, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = glob.glob(str(root / "outputs" / name / "**" / "metrics.jsonl"), recursive=True)
        if found and len(open(found[0]).read().splitlines()) >= count:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("the run did not start training")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_4_with_one_line(tmp_path, sig):
    process = _start([*TINY, "name=early", "hyp=fb1", "hyp.steps=2"], tmp_path)
    time.sleep(1.5)  # inside the imports of Hydra and PyTorch, long before the first step
    assert process.poll() is None
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 4, stderr[-2000:]
    assert stderr.strip().splitlines() == [f"fullbatch: {sig.name} during start-up: stopped before any step; run "
                                           "the same command again to continue"]


def test_a_second_signal_stops_at_once_with_exit_4_and_the_run_continues(tmp_path):
    overrides = [*TINY, "name=twice", "hyp=fb1", "hyp.steps=400", "impl.checkpoint.save_every_nth_step=1",
                 "data.size=2048"]  # steps of about a second: both signals arrive within one
    process = _start(overrides, tmp_path)
    metrics = _wait_for_steps(tmp_path, "twice", 2)
    second_done = time.time()
    _wait_for_steps(tmp_path, "twice", 3)
    step_seconds = time.time() - second_done
    time.sleep(step_seconds / 3)  # inside step 4, not in the checkpoint write at the end of step 3
    process.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # a second signal of another kind: two pending ones of one kind would merge into one
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 4, stderr[-2000:]
    assert "Traceback" not in stderr
    # both handlers may be pending when Python runs them, and then it runs them in signal-number order
    [line] = stderr.strip().splitlines()
    assert re.fullmatch(r"fullbatch: second signal \((SIGINT after SIGTERM|SIGTERM after SIGINT)\): stopped at "
                        r"once; run the same command again to continue from the last checkpoint", line), \
        (line, step_seconds, len(open(metrics).read().splitlines()))
    assert status_main([str(tmp_path / "outputs" / "twice")]) == 4


def test_under_torchrun_the_launcher_exits_1_and_fullbatch_status_says_preempted(tmp_path, capsys):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", ENTRY,
               "impl/setup=distributed", *TINY, "name=tr", "hyp=fb1", "hyp.steps=400"]
    launcher = _start(None, tmp_path, command)
    try:
        _wait_for_steps(tmp_path, "tr", 2)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 1  # torchrun's own code for a signal it received; documented in clusters.md
    [summary_path] = glob.glob(str(tmp_path / "outputs" / "tr" / "**" / "summary.json"), recursive=True)
    summary = json.load(open(summary_path))
    assert summary["status"] == "preempted" and summary["world_size"] == 2
    assert glob.glob(os.path.join(os.path.dirname(summary_path), "checkpoints", f"step-{summary['steps']:07d}.pt"))
    capsys.readouterr()
    assert status_main([str(tmp_path / "outputs" / "tr")]) == 4
    assert capsys.readouterr().out.startswith("preempted ")


def test_a_signal_held_during_an_import_is_delivered_when_the_hold_ends():
    from fullbatch.run.interruption import Stopped, signals_held, stop_at_once_on_signals

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    reached = []
    try:
        stop_at_once_on_signals()
        previous_handler = signal.getsignal(signal.SIGTERM)
        with pytest.raises(Stopped, match="SIGTERM during start-up"):
            with signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # bytecodes where an unheld signal's handler would have run
                    reached.append(1)
                reached.append("end of the block")
        assert reached[-1] == "end of the block" and len(reached) == 1001
        assert signal.getsignal(signal.SIGTERM) is previous_handler  # the start-up handler is back
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
