"""`--jobs N`: N rows and seeds at once, each in its own process with one slot of this machine: one CPU thread
each, or one GPU each on a multi-GPU node.

The children run in their own process groups, so a Ctrl-C or SIGTERM reaches them once, forwarded from here:
each finishes its step, writes a checkpoint and exits with 4, no new job starts, and the same command continues
later. A second signal is forwarded too and stops them at once (their previous checkpoints stay)."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

from fullbatch.config.limits import DEVICE_NAMES, is_device_name
from fullbatch.errors import ConfigError, ExitCode
from fullbatch.reproduce.runner import ended, run_folder
from fullbatch.run.interruption import SIGNALS
from fullbatch.visualization.runs import read_summary

log = logging.getLogger("fullbatch")
STATUS = {ExitCode.DONE: "ended", ExitCode.BAD_INPUT: "configuration or data error",
          ExitCode.STOPPED: "stopped by a signal"}


def device_problem(device):
    """Why `device` is not a device name a run accepts (auto, cpu, cuda, cuda:N), or None."""
    return None if is_device_name(device) else f"--device={device} is not allowed: expected {DEVICE_NAMES}"


def check_device(device):
    """Refuse a CUDA device that this machine does not have, naming --device, before any work rather than in the
    first row (which would name impl.device, or fail only when it uses the device)."""
    import torch

    if not device.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"--device={device} is not allowed: no CUDA device is visible here; use auto or cpu")
    if device.startswith("cuda:") and int(device[5:]) >= count:
        raise ConfigError(f"--device={device} is not allowed: this machine has {count} GPU(s), cuda:0 to "
                          f"cuda:{count - 1}")


def slots(device, jobs):
    """The impl overrides that give each of `jobs` parallel jobs its own share of the machine."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return [["impl.device=cpu", "impl.threads=1"] for _ in range(jobs)]
    if device != "cuda":
        raise ConfigError(f"--device {device} is not allowed with --jobs {jobs}: give cuda (one GPU per job), cpu "
                          "or auto")
    count = torch.cuda.device_count()
    if jobs > count:
        raise ConfigError(f"--jobs {jobs} is not allowed: this node has {count} GPU(s), one per job; use at most "
                          f"{count}")
    return [[f"impl.device=cuda:{index}"] for index in range(jobs)]


def child_overrides(slot, extra):
    """The slot's overrides, except a key the user set: an explicit impl.threads=4 wins."""
    given = {item.split("=", 1)[0] for item in extra}
    return [item for item in slot if item.split("=", 1)[0] not in given] + list(extra)


class _Forwarder:
    """Stop signals of this process go to every running child instead of stopping this loop."""

    def __init__(self):
        self.received, self.children = [], []

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._forward) for sig in SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _forward(self, signum, frame):
        self.received.append(signum)
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)


def run_parallel(root, scale, rows, seeds, jobs, device="auto", extra=()):
    """Run every (row, seed) that has not ended, `jobs` at a time; return 'preempted' if a signal stopped them,
    'failed' if a job failed, else 'done'. Each child's output goes to job.log in its run folder."""
    todo = scale.jobs(rows, seeds)
    free = slots(device, jobs)
    running, failed, total = {}, [], len(todo)
    with _Forwarder() as forwarder:
        number = 0
        while todo or running:
            while todo and free and not forwarder.received:
                row, seed = todo.pop(0)
                number += 1
                folder = run_folder(root, scale, row, seed)
                if ended(root, scale, row, seed):
                    log.info(f"[{number}/{total}] {row.name} seed {seed}: already ended, kept")
                    continue
                os.makedirs(folder, exist_ok=True)
                slot = free.pop(0)
                job = dict(root=root, scale=scale.name, row=row.name, seed=seed, extra=child_overrides(slot, extra))
                with open(os.path.join(folder, "job.log"), "a") as output:
                    child = subprocess.Popen([sys.executable, "-m", "fullbatch.reproduce.job", json.dumps(job)],
                                             stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
                forwarder.children.append(child)
                running[child] = (row, seed, slot, time.time())
                log.info(f"[{number}/{total}] {row.name} seed {seed}: started ({' '.join(slot)}), log "
                         f"{os.path.join(folder, 'job.log')}")
            if todo and forwarder.received:
                todo.clear()
            for child in [child for child in running if child.poll() is not None]:
                row, seed, slot, started = running.pop(child)
                forwarder.children.remove(child)
                free.append(slot)
                code = child.returncode
                summary = read_summary(run_folder(root, scale, row, seed))
                log.info(f"{row.name} seed {seed}: {summary.get('status') or STATUS.get(code, f'exit {code}')} "
                         f"after {time.time() - started:.0f} s")
                if code not in (0, 4) and not (forwarder.received and code < 0):  # killed by the forwarded stop
                    failed.append(f"{row.name} seed {seed} (exit {code}, see its job.log)")
            time.sleep(0.2)
    if failed:
        log.error("failed: " + "; ".join(failed))
        return "failed"
    return "preempted" if forwarder.received or any(
        not ended(root, scale, row, seed) for row, seed in scale.jobs(rows, seeds)) else "done"
