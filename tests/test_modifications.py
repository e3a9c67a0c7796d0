"""SAM and LARS/LARC on the exact full gradient."""
import pytest
import torch

from conftest import TINY, compose_config
from fullbatch.train import build_trainer
from fullbatch.training.full_batch import full_batch_gradient
from fullbatch.training.modifications import sam_gradient, trust_ratios
from fullbatch.training.steps import exact_gradient


def test_sam_evaluates_at_the_configured_radius_along_the_gradient_and_restores_the_weights():
    params = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    grads = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    before = [p.clone() for p in params]
    seen = []
    result = sam_gradient(params, grads, 0.05, lambda: seen.append([p.clone() for p in params]) or "gradient")
    shift = torch.cat([(a - b).flatten() for a, b in zip(seen[0], before)])
    direction = torch.cat([g.flatten() for g in grads])
    assert result == "gradient" and shift.norm().item() == pytest.approx(0.05, rel=1e-12)
    torch.testing.assert_close(shift, 0.05 * direction / direction.norm())
    assert all(torch.equal(p, b) for p, b in zip(params, before))


def test_sam_step_uses_the_full_gradient_at_the_perturbed_point():
    trainer = build_trainer(compose_config([*TINY, "hyp=fb1", "hyp/optim_modification=SAM",
                                            "hyp.optim_modification.rho=0.1", "data.augmentations_train="]))
    trainer.model.double()
    trainer.dtype = torch.float64
    inputs, blocks = trainer.step_inputs(), trainer.blocks()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    plain, _ = full_batch_gradient(inputs, blocks)
    norm = torch.sqrt(sum((g**2).sum() for g in plain))
    with torch.no_grad():
        for p, g in zip(trainer.params, plain):
            p.add_(0.1 * g / norm)
    expected, _ = full_batch_gradient(inputs, blocks)
    trainer.model.load_state_dict(state)
    exact_gradient(trainer, inputs, blocks)
    for p, e in zip(trainer.params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-9, atol=1e-12)
    for key, value in trainer.model.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(value, state[key]), key


def test_lars_and_larc_trust_ratios_follow_the_formula():
    params = [torch.full((4,), 2.0), torch.zeros(3)]
    grads = [torch.full((4,), 0.5), torch.ones(3)]
    lars = trust_ratios(params, grads, trust=0.01, weight_decay=0.1)
    assert lars[0].item() == pytest.approx(0.01 * 4.0 / (1.0 + 0.1 * 4.0)) and lars[1].item() == 1.0
    larc = trust_ratios(params, grads, trust=0.01, weight_decay=0.1, lr=0.001)
    assert larc[0].item() == 1.0 and larc[1].item() == 1.0  # clipped at the global learning rate
    larc = trust_ratios(params, grads, trust=0.01, weight_decay=0.1, lr=0.1)
    assert larc[0].item() == pytest.approx(lars[0].item() / 0.1)


@pytest.mark.parametrize("modification", ["SAM", "LARS", "LARC"])
def test_modifications_compose_with_clipping_and_the_regularizer(modification):
    base = [*TINY, "hyp=gradreg", "hyp.warmup=0", "hyp.steps=2"]
    plain = build_trainer(compose_config(base))
    modified = build_trainer(compose_config([*base, f"hyp/optim_modification={modification}"]))
    rows = [(plain.run_step(), modified.run_step()) for _ in range(2)]
    assert rows[0][0]["train_loss"] == rows[0][1]["train_loss"]  # the same start
    for _, row in rows:
        assert row["full_loss"] > row["train_loss"]  # the regularizer's penalty is part of the objective
        assert row["grad_norm"] <= 0.25 * (1 + 1e-6)  # and the step was clipped to hyp.grad_clip
    assert any(not torch.equal(a, b) for a, b in zip(plain.params, modified.params))  # the modification acted
