"""Measurements that run extra forward passes must leave the model as they found it."""
from contextlib import contextmanager

import torch


@contextmanager
def unchanged_buffers(model):
    """Restore every buffer (BatchNorm running statistics, batch counters) on exit, also after an error."""
    saved = [buffer.detach().clone() for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)
