"""TF32 switches: off for the duration, restored after, through whichever PyTorch API the process uses.

The flags are process-wide settings that exist on CPU builds too, so both API regimes are exercised here; only
their effect on kernels needs a GPU."""
import pytest
import torch

from fullbatch.training.tf32 import tf32_in_effect, without_tf32

NEW_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


@pytest.fixture
def restore_tf32_flags():
    """Put every flag back as it was, through the API that was readable before the test."""
    backends = torch.backends
    if NEW_API:
        switches = backends.cudnn.conv, backends.cudnn.rnn, backends.cuda.matmul
        saved = [switch.fp32_precision for switch in switches]
        yield
        for switch, value in zip(switches, saved):
            switch.fp32_precision = value
    else:
        saved = backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32
        yield
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved


def test_legacy_api_flags_are_switched_off_and_restored(restore_tf32_flags):
    backends = torch.backends
    backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = True, False  # PyTorch's defaults
    assert tf32_in_effect("cuda") and not tf32_in_effect("cpu")
    with without_tf32("cuda"):
        assert (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32) == (False, False)
        assert not tf32_in_effect("cuda")
    assert (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32) == (True, False)
    with pytest.raises(RuntimeError, match="a failing pass"), without_tf32("cuda"):
        raise RuntimeError("a failing pass")
    assert backends.cudnn.allow_tf32  # restored on errors too
    with without_tf32("cpu"):
        assert backends.cudnn.allow_tf32  # nothing to change off CUDA


@pytest.mark.skipif(not NEW_API, reason="this PyTorch has no fp32_precision API")
def test_new_api_flags_are_used_when_the_old_api_cannot_be_read(restore_tf32_flags):
    conv, rnn, matmul = torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul
    conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision = "ieee", "tf32", "tf32"
    with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        torch.backends.cudnn.allow_tf32  # why the old API must not be touched in this state
    assert tf32_in_effect("cuda")
    with without_tf32("cuda"):
        assert (conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee", "ieee")
        assert not tf32_in_effect("cuda")
    assert (conv.fp32_precision, rnn.fp32_precision, matmul.fp32_precision) == ("ieee", "tf32", "tf32")
    matmul.fp32_precision = "ieee"
    assert not tf32_in_effect("cuda")  # convolutions and matmuls both in IEEE float32 already
