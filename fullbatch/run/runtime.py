"""Process set-up for a run: device, threads, determinism, precision and the config's identity."""
import hashlib
import os
from functools import partial

import torch
from omegaconf import OmegaConf

from fullbatch.config.choices import MemoryFormat
from fullbatch.errors import ConfigError


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"impl.device={name!r} is not allowed: no CUDA device is visible; use auto or cpu")
    return device


def configure_backend(impl, seed, local_rank=None):
    """Seed, threads and determinism switches; return the training device (this rank's GPU under torchrun)."""
    device = resolve_device(impl.device)
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    if impl.mixed_precision and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("impl.mixed_precision=true is not allowed: this GPU has no bf16 support; set it to false")
    if impl.threads > 0:
        torch.set_num_threads(impl.threads)
    if impl.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = impl.benchmark and not impl.deterministic
    torch.manual_seed(seed)
    return device


def autocast_factory(impl, device):
    """A context-manager factory for bf16 autocast, or None when running in full precision."""
    if not impl.mixed_precision:
        return None
    return partial(torch.autocast, device.type, dtype=torch.bfloat16)


MEMORY_FORMATS = {MemoryFormat.contiguous: torch.contiguous_format, MemoryFormat.channels_last: torch.channels_last}


def memory_format(impl):
    return MEMORY_FORMATS[impl.memory]


# impl keys that change the numbers a run computes; the others (paths, threads, checkpoint cadence,
# validation interval, evaluation batch size) do not, and a resumed run may change them
NUMERIC_IMPL_KEYS = ("device", "dtype", "mixed_precision", "memory", "compile", "compile_mode", "merge_blocks",
                     "deterministic", "benchmark")


def config_hash(cfg):
    """Identity of what a checkpoint depends on: data, model, hyperparameters, seed, and the impl keys that
    change the numbers (not paths, threads or cadences)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in ("path", "download"):
        data.pop(key, None)
    if data.get("subset") == "first":  # the default: leave it out, so checkpoints of earlier versions resume
        data.pop("subset", None)
        data.pop("subset_seed", None)
    for key in ("path", "map_size", "in_memory"):  # where and how the N x data is kept, not what it is
        data["db"].pop(key, None)
    impl = {key: cfg.impl[key] for key in NUMERIC_IMPL_KEYS}
    impl["batch_shards"] = cfg.impl.setup.batch_shards  # SGD: BatchNorm statistics per piece of a mini-batch
    hyp = OmegaConf.to_container(cfg.hyp, resolve=True)
    if hyp.get("cosine_horizon") is None:  # the default: left out, so checkpoints of earlier versions resume
        hyp.pop("cosine_horizon", None)
    identity = dict(data=data, model=OmegaConf.to_container(cfg.model, resolve=True), hyp=hyp, seed=cfg.seed,
                    dryrun=cfg.dryrun, impl=impl)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(identity)).encode()).hexdigest()[:16]
