"""Schedule values and gradient post-processing are exact."""
import math

import pytest
import torch

from conftest import compose_config
from fullbatch.training.gradients import add_noise_, clip_, gradient_norm, post_process_
from fullbatch.training.schedules import build_optimizer, build_scheduler, lr_factor


def test_warmup_is_linear_and_reaches_the_peak_when_it_ends():
    assert [lr_factor(s, "cosine-4000", 3000, 400) for s in (0, 199, 399)] == [1 / 400, 200 / 400, 1.0]
    assert lr_factor(400, "cosine-4000", 3000, 400) == 1.0


def test_cosine_4000_at_step_3000_and_cosine_decay_end():
    assert lr_factor(3000, "cosine-4000", 3000, 400) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2600 / 3600)),
                                                                     abs=1e-15)
    assert lr_factor(299, "cosine-decay", 300, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 294 / 295)), abs=1e-15)
    assert lr_factor(300, "cosine-decay", 300, 5) == pytest.approx(0.0, abs=1e-15)


def test_linear_drops_and_none():
    assert [lr_factor(s, "linear", 800, 0) for s in (0, 299, 300, 500, 700, 799)] == [1, 1, 0.1, 0.1**2, 0.1**3, 0.1**3]
    assert lr_factor(10, "none", 100, 5) == 1.0


def test_scheduler_drives_the_optimizer_lr_per_step():
    hyp = compose_config(["hyp=fbclip"]).hyp
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], hyp.optim)
    scheduler = build_scheduler(optimizer, hyp)
    lrs = []
    for _ in range(401):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.4 / 400) and lrs[399] == pytest.approx(0.4) and lrs[400] == pytest.approx(0.4)


def test_clip_scales_to_the_bound_exactly_and_records_the_norm():
    grads = [torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64)]
    norm, clipped = clip_(grads, 0.25)
    assert norm.item() == 5.0 and clipped.item()
    factor = 0.25 / (5.0 + 1e-6)
    assert torch.equal(grads[0], torch.tensor([3.0 * factor, 0.0], dtype=torch.float64))
    assert gradient_norm(grads).item() == pytest.approx(5.0 * factor, rel=1e-15)
    small = [torch.tensor([0.1], dtype=torch.float64)]
    norm, clipped = clip_(small, 0.25)
    assert not clipped.item() and small[0].item() == 0.1


def test_inf_norm_clipping():
    grads = [torch.tensor([0.5, -2.0]), torch.tensor([1.0])]
    norm, clipped = clip_(grads, 1.0, float("inf"))
    assert norm.item() == 2.0 and clipped.item()
    assert gradient_norm(grads, float("inf")).item() == pytest.approx(1.0 / (2.0 + 1e-6) * 2.0, rel=1e-6)


def test_noise_is_seeded_and_has_the_configured_scale():
    grads = [torch.zeros(100_000)]
    add_noise_(grads, 0.5, None, torch.Generator().manual_seed(0))
    assert grads[0].std().item() == pytest.approx(0.5, rel=0.02)
    again = [torch.zeros(100_000)]
    add_noise_(again, 0.5, None, torch.Generator().manual_seed(0))
    assert torch.equal(grads[0], again[0])
    ones = [torch.ones(100_000)]
    add_noise_(ones, None, 0.1, torch.Generator().manual_seed(1))
    assert ones[0].mean().item() == pytest.approx(1.0, abs=0.003) and ones[0].std().item() == pytest.approx(0.1, rel=0.02)


def test_post_process_clips_the_norm_biased_gradient():
    hyp = compose_config(["hyp=fbclip", "hyp.norm_bias.strength=0.5", "hyp.norm_bias.bias=1.0"]).hyp
    params = [torch.tensor([3.0, 4.0], dtype=torch.float64)]
    grads = [torch.zeros(2, dtype=torch.float64)]
    norm, clipped, penalty = post_process_(grads, params, hyp, torch.Generator())
    # d/dtheta 0.5 * (||theta|| - 1)^2 = (5 - 1) * theta / 5 = (2.4, 3.2), norm 4 -> clipped to 0.25
    assert penalty.item() == pytest.approx(0.5 * 16) and norm.item() == pytest.approx(4.0) and clipped.item()
    torch.testing.assert_close(grads[0], torch.tensor([2.4, 3.2], dtype=torch.float64) * 0.25 / (4.0 + 1e-6))
