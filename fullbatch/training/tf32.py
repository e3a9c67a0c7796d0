"""TF32 switches for CUDA convolutions and matmuls, through whichever of PyTorch's two APIs is in use.

PyTorch 2.9 added `fp32_precision` beside the older `allow_tf32`. Once the newer API has set cuDNN's
convolution and RNN flags differently, reading the older one raises, so the code here reads the older API when
it can and falls back to the newer one; it never mixes them.
"""
from contextlib import contextmanager

import torch


def _legacy_flags():
    """(cuDNN, cuBLAS) `allow_tf32`, or None where the `fp32_precision` API makes reading them raise."""
    try:
        return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    except RuntimeError:
        return None


def _precision_switches():
    backends = torch.backends
    return backends.cudnn.conv, backends.cudnn.rnn, backends.cuda.matmul


def tf32_in_effect(device_type):
    """Whether float32 convolutions or matmuls on this device may round their inputs to TF32."""
    if device_type != "cuda":
        return False
    legacy = _legacy_flags()
    if legacy is not None:
        return any(legacy)
    conv, _, matmul = _precision_switches()
    return conv.fp32_precision != "ieee" or matmul.fp32_precision != "ieee"  # "none" may inherit TF32


@contextmanager
def without_tf32(device_type):
    """Full float32 for convolutions and matmuls on CUDA for the duration, then the flags as they were."""
    if device_type != "cuda":
        yield
        return
    backends = torch.backends
    legacy = _legacy_flags()
    if legacy is not None:
        backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = legacy
        return
    switches = _precision_switches()
    saved = [switch.fp32_precision for switch in switches]
    for switch in switches:
        switch.fp32_precision = "ieee"
    try:
        yield
    finally:
        for switch, value in zip(switches, saved):
            switch.fp32_precision = value
