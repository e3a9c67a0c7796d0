"""torch.distributed for full-batch and SGD steps: who computes which blocks, and one reduction per update.

Started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment); without it, a Communicator of world
size 1 makes every method a no-op, so the single-process path runs the same code. NCCL on GPUs, gloo on CPUs.
"""
import datetime
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger("fullbatch")


def launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Communicator:
    def __init__(self, rank=0, world_size=1, local_rank=0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @classmethod
    def from_environment(cls, setup_cfg, device_type):
        """Join torchrun's process group when launched by it; otherwise a single-process communicator."""
        if not launched_by_torchrun():
            return cls()
        backend = str(setup_cfg.backend)
        if backend == "auto":
            backend = "nccl" if device_type == "cuda" else "gloo"
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=setup_cfg.timeout_seconds))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def active(self):
        return self.world_size > 1

    def split_counts(self, count):
        """How many of `count` consecutive items each rank takes: contiguous shares, as even as possible."""
        base, extra = divmod(count, self.world_size)
        return [base + (1 if rank < extra else 0) for rank in range(self.world_size)]

    def share(self, items):
        """This rank's contiguous share of `items` (all of them in a single process)."""
        counts = self.split_counts(len(items))
        start = sum(counts[: self.rank])
        return items[start:start + counts[self.rank]]

    def all_reduce_sum_(self, tensors):
        """Sum `tensors` over ranks in place: one flat all-reduce per dtype, not one call per tensor."""
        if not self.active:
            return
        by_dtype = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            offset = 0
            for tensor in group:
                tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()

    def barrier(self):
        if self.active:
            dist.barrier()

    def check_identical(self, params, step):
        """Fail loudly if the parameters differ across ranks (two float64 checksums gathered from every rank)."""
        if not self.active:
            return
        flat = torch.cat([p.detach().reshape(-1).double() for p in params])
        weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.float64).remainder_(997)
        checksum = torch.stack([flat.sum(), (flat * weights).sum()])
        gathered = [torch.empty_like(checksum) for _ in range(self.world_size)]
        dist.all_gather(gathered, checksum)
        if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
            raise RuntimeError(f"parameters differ across ranks at step {step}: checksums "
                               f"{[g.tolist() for g in gathered]}")

    def close(self):
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
