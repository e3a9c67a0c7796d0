"""The same computation on CUDA and on the CPU, in float64 (so TF32 and kernel choice cannot hide a bug)."""
import pytest
import torch

from conftest import TINY, compose_config
from fullbatch.train import build_trainer
from fullbatch.training.full_batch import full_batch_gradient

pytestmark = pytest.mark.gpu


def _float64_gradient(device, *overrides):
    trainer = build_trainer(compose_config([*TINY, f"impl.device={device}", "impl.dtype=float64",
                                            "data.augmentations_train=", *overrides]))
    grads, stats = full_batch_gradient(trainer.step_inputs(), trainer.blocks(), trainer.rule)
    return [g.cpu() for g in grads], stats["loss_sum"].item()


@pytest.mark.parametrize("overrides", [["hyp=fbclip"], ["hyp=gradreg", "hyp.warmup=0"],
                                       ["hyp=fbclip", "impl.merge_blocks=2"]])
def test_exact_full_batch_gradient_on_cuda_equals_the_cpu_one(overrides):
    cpu, cpu_loss = _float64_gradient("cpu", *overrides)
    cuda, cuda_loss = _float64_gradient("cuda", *overrides)
    assert cuda_loss == pytest.approx(cpu_loss, rel=1e-10)
    for a, b in zip(cpu, cuda):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-11)
