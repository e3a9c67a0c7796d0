"""torchrun with two CPU processes (gloo) gives the single-process result: weights, metrics, BatchNorm."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENTRY, ROOT, TINY, run_entry
from fullbatch.training.distributed import Communicator
from fullbatch.training.full_batch import split_evenly

pytestmark = pytest.mark.slow  # every test here starts torchrun with two processes

# 5 blocks of 64, 64, 64, 64, 32: ranks take 3 and 2. float64, because a width-4 network amplifies float32
# reordering errors of the gradient sum (1e-7) to 1e-4 within a step or two.
UNEVEN = [*TINY, "data.size=288", "hyp.steps=3", "impl.dtype=float64"]


def torchrun(overrides, cwd, nproc=2, wait=True):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", ENTRY,
               "impl/setup=distributed", *overrides]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _run_dir(root, name):
    [summary] = glob.glob(str(root / "outputs" / name / "**" / "summary.json"), recursive=True)
    return os.path.dirname(summary)


def _outputs(root, name):
    run_dir = _run_dir(root, name)
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    return rows, torch.load(os.path.join(run_dir, "model.pt")), json.load(open(os.path.join(run_dir, "summary.json")))


def _assert_same_run(single, double, tolerance=1e-6):
    rows1, weights1, summary1 = single
    rows2, weights2, summary2 = double
    assert summary2["world_size"] == 2 and summary1["world_size"] == 1
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2]
    for a, b in zip(rows1, rows2):
        for key in ("lr", "train_loss", "train_acc", "full_loss", "grad_norm", "pre_clip_norm", "val_loss", "val_acc"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=tolerance, abs=tolerance), (key, a, b)
        assert a["clipped"] == b["clipped"]
    for key in weights1:  # parameters and BatchNorm running statistics
        torch.testing.assert_close(weights2[key].double(), weights1[key].double(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("preset", [
    ["hyp=fbclip"],
    ["hyp=gradreg", "hyp.sub_batch=32", "hyp.optim.lr=0.4"],  # regularizer on chunks of 32 inside blocks of 64
    ["hyp=fbclip", "hyp.shuffle=True", "hyp.batch_clip=1.0"],
])
def test_full_batch_two_processes_equal_one(tmp_path, preset):
    run_entry([*UNEVEN, *preset, "name=one", "impl.validate_every_nth_step=1"], tmp_path)
    torchrun([*UNEVEN, *preset, "name=two", "impl.validate_every_nth_step=1"], tmp_path)
    _assert_same_run(_outputs(tmp_path, "one"), _outputs(tmp_path, "two"))


def test_stochastic_two_processes_equal_one_process_with_the_same_shards(tmp_path):
    common = [*TINY, "hyp=base_sgd", "hyp.steps=2", "data.batch_size=48", "hyp.grad_clip=0.5",  # 256 = 5 x 48 + 16
              "impl.dtype=float64"]
    run_entry([*common, "name=one", "impl.setup.batch_shards=2"], tmp_path)
    torchrun([*common, "name=two"], tmp_path)
    _assert_same_run(_outputs(tmp_path, "one"), _outputs(tmp_path, "two"))


def test_two_process_run_resumes_to_the_same_weights(tmp_path):
    common = [*UNEVEN, "hyp=fbclip", "hyp.steps=4", "impl.checkpoint.save_every_nth_step=2"]
    torchrun([*common, "name=whole"], tmp_path)
    checkpoint = os.path.join(_run_dir(tmp_path, "whole"), "checkpoints", "step-0000002.pt")
    torchrun([*common, "name=resumed", f"impl.checkpoint.resume={checkpoint}"], tmp_path)
    _, whole, _ = _outputs(tmp_path, "whole")
    rows, resumed, summary = _outputs(tmp_path, "resumed")
    assert [r["step"] for r in rows] == [3, 4] and summary["resumed_from"] == checkpoint
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


def _rank_pids(launcher_pid, rank):
    """Worker processes of a torchrun launcher whose environment says RANK=rank."""
    found = []
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(environ, "rb") as handle:
                variables = handle.read().split(b"\0")
            with open(environ.replace("environ", "stat")) as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == launcher_pid and f"RANK={rank}".encode() in variables:
            found.append(int(environ.split("/")[2]))
    return found


def test_a_rank_that_dies_mid_run_ends_the_job_with_an_error(tmp_path):
    launcher = torchrun([*TINY, "name=dies", "hyp=fb1", "hyp.steps=1000", "impl.setup.timeout_seconds=30"],
                        tmp_path, wait=False)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(str(tmp_path / "outputs/dies/**/metrics.jsonl"), recursive=True):
            time.sleep(0.5)
        time.sleep(1.0)
        victims = _rank_pids(launcher.pid, 1)
        assert victims, "rank 1 not found"
        os.kill(victims[0], signal.SIGKILL)
        started = time.time()
        output, _ = launcher.communicate(timeout=90)
        assert launcher.returncode != 0
        assert time.time() - started < 90
        assert "rank" in output.lower() and ("failed" in output.lower() or "error" in output.lower())
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)


def test_shares_are_contiguous_and_as_even_as_possible():
    counts = [Communicator(rank, 3).split_counts(8) for rank in range(3)][0]
    assert counts == [3, 3, 2]
    items = list(range(8))
    assert [Communicator(rank, 3).share(items) for rank in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert Communicator().share(items) == items
    assert split_evenly(slice(10, 21), 2) == [slice(10, 16), slice(16, 21)]
    assert [t.tolist() for t in split_evenly(torch.arange(5), 2)] == [[0, 1, 2], [3, 4]]


def test_multinode_script_launches_through_c10d_rendezvous(tmp_path):
    import socket

    with socket.socket() as probe:  # a port that is free now, for this test's rendezvous only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, NNODES="1", GPUS_PER_NODE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               RUN_ID="test-run", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(["bash", os.path.join(ROOT, "train_distributed_multinode.sh"), *TINY, "name=multi",
                             "hyp=fb1", "hyp.steps=2"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows, _, summary = _outputs(tmp_path, "multi")
    assert summary["world_size"] == 2 and len(rows) == 2
    assert os.path.basename(_run_dir(tmp_path, "multi")) == "torchrun-test-run"


def test_only_rank_0_writes_to_the_tracker(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torchrun([*UNEVEN, "hyp=fbclip", "name=tracked", "logger=tensorboard"], tmp_path)
    run_dir = _run_dir(tmp_path, "tracked")
    files = glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))
    assert len(files) == 1  # one writer: rank 1 sends nothing
    events = EventAccumulator(files[0])
    events.Reload()
    steps = [json.loads(line)["step"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [event.step for event in events.Scalars("train_loss")] == steps == [1, 2, 3]
