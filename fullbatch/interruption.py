"""SIGTERM and SIGINT (SLURM preemption, Ctrl-C) as a request to stop after the current step.

The training loop asks `requested` after each step; under torchrun all ranks agree through one tiny all-reduce,
so every rank stops after the same step. A second signal interrupts at once.
"""
import signal

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
        if self.signal is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
        self.signal = signal.Signals(signum).name

    def requested(self, comm, device):
        """True on every rank if any rank received a signal."""
        if not comm.active:
            return self.signal is not None
        flag = torch.tensor([1.0 if self.signal else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())
