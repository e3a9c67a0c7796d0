"""SIGTERM, SIGINT and SIGUSR2 (SLURM preemption, Ctrl-C, the warning SLURM sends before a time limit with
`--signal=USR2@seconds`, submitit's preemption signal): every path ends with exit code 4 and one line, no
traceback.

- During start-up (imports, data, LMDB build, checkpoint load) a signal stops at once: `Stopped` is raised and
  the entry script turns it into exit 4 (nothing is lost: no step has run since the last checkpoint). Only
  while NumPy and PyTorch are imported is it held back (`signals_held`) and delivered when the import ends.
- During training `StopRequest` turns the first signal into a request to stop after the current step, with a
  checkpoint; under torchrun all ranks agree through one tiny all-reduce, so every rank stops after the same
  step. A second signal stops at once (the previous checkpoint stays the one to continue from); the same signal
  again within 2 seconds is the first one delivered twice (SLURM signals every process of a job step).
"""
import contextlib
import logging
import signal
import time

from fullbatch.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
SAME_STOP_SECONDS = 2.0  # a repeat of the first signal within this time is the same stop, not a second one


def _stop_now(signum, frame):
    raise Stopped(f"{signal.Signals(signum).name} during start-up: stopped before any step; run the same command "
                  "again to continue")


def stop_at_once_on_signals():
    """Install the start-up behaviour; the entry scripts call this before their slow imports."""
    for sig in SIGNALS:
        signal.signal(sig, _stop_now)


@contextlib.contextmanager
def signals_held():
    """Deliver SIGTERM and SIGINT only when the block ends. The imports of compiled extensions (NumPy, PyTorch)
    run Python code from C: a `Stopped` raised in there leaves the module half-initialised, and the process then
    crashes (ImportError, or SIGABRT) instead of exiting with 4. The handlers are swapped rather than the signal
    mask set, because a mask holds only its own thread's signals."""
    held = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])  # now the handler from before the block runs


def ignore_signals():
    """While the last lines are printed and the process exits: a further signal must not become a traceback."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopRequest:
    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal == name and time.monotonic() - self._first < SAME_STOP_SECONDS:
            return  # the same stop delivered twice: SLURM signals every process of a step, and --jobs forwards it
        if self.signal is not None:
            raise Stopped(f"second signal ({name} after {self.signal}): stopped at once; run the same command "
                          "again to continue from the last checkpoint")
        self.signal, self._first = name, time.monotonic()

    def requested(self, comm, device):
        """True on every rank if any rank received a signal."""
        if not comm.active:
            return self.signal is not None
        import torch

        flag = torch.tensor([1.0 if self.signal else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


PREEMPT_SIGNAL = signal.SIGUSR2  # submitit's preemption signal (its SUBMITIT_PREEMPT_SIGNAL default)


def hand_over_preemption(summary, signum=PREEMPT_SIGNAL):
    """Inside a submitit job (a Hydra submitit launcher's, or `reproduce --launcher`), give a stop by submitit's
    preemption signal to submitit's own handler once training has written its checkpoint: it calls the job's
    `checkpoint()` and requeues it, and the requeued job resumes from the checkpoint. That handler exits the
    process. Returns False, doing nothing, for any other stop (scancel's SIGTERM ends without a requeue) or
    outside submitit."""
    if summary.get("status") != "preempted" or summary.get("stopped_by") != signum.name:
        return False
    handler = signal.getsignal(signum)  # submitit's, back in place after the training; else ours or the default
    if not callable(handler) or getattr(handler, "__module__", "").startswith("fullbatch"):
        return False
    try:
        handler(signum, None)  # requeues and exits the process (SystemExit passes through)
    except Exception as error:  # submitit refused: e.g. a time limit with no requeues left (max_num_timeout)
        logging.getLogger("fullbatch").error(f"submitit did not requeue the job ({type(error).__name__}: {error}); "
                                             "it ends as stopped, and its checkpoint stays")
        return False
    return True
