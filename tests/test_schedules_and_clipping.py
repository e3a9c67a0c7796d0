"""Schedule values and gradient post-processing are exact."""
import math

import pytest
import torch

from conftest import compose_config
from fullbatch.training.gradients import add_noise_, clip_, gradient_norm, post_process_
from fullbatch.training.schedules import build_optimizer, build_scheduler, lr_factor


def original_lr(t, peak, warmup, horizon):
    """The original code's schedule in closed form (warmup, then a cosine whose horizon starts after it)."""
    if t <= warmup:
        return peak * t / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (t - warmup - 1) / horizon))


@pytest.mark.parametrize("scheduler,steps,warmup,horizon", [("cosine-4000", 3000, 400, 4000),
                                                            ("cosine-decay", 3000, 400, 3000),
                                                            ("cosine-decay", 300, 5, 300)])
def test_cosine_schedules_equal_the_closed_form(scheduler, steps, warmup, horizon):
    for t in (0, 1, warmup - 1, warmup, warmup + 1, warmup + 2, 150, 299, 1000, 2999):
        if t < steps:
            assert lr_factor(t, scheduler, steps, warmup) == pytest.approx(original_lr(t, 1.0, warmup, horizon),
                                                                           rel=1e-15, abs=1e-15), t
    assert lr_factor(0, scheduler, steps, warmup) == 0.0  # exactly: step 0 only fills the momentum buffer
    assert lr_factor(warmup, scheduler, steps, warmup) == lr_factor(warmup + 1, scheduler, steps, warmup) == 1.0


def test_fbclip_late_lr_and_summed_lr():
    # the figures of the side-by-side check: lr 0.1095 at step 2999 of fbclip (peak 0.4), summed lr 0.4 * 2067.8
    assert 0.4 * lr_factor(2999, "cosine-4000", 3000, 400) == pytest.approx(0.1095, abs=5e-5)
    assert sum(lr_factor(t, "cosine-4000", 3000, 400) for t in range(3000)) == pytest.approx(2067.82, abs=0.01)


def test_linear_drops_after_warmup_at_the_original_milestones():
    # steps 80, warmup 5: milestones 80 // 2.667 = 29, 80 // 1.6 = 49 (float floor), 80 // 1.142 = 70,
    # counted from t - warmup - 1, so the drops fall at t = 35, 55, 76 (measured on the original code)
    factors = [lr_factor(t, "linear", 80, 5) for t in range(80)]
    assert factors[:6] == [t / 5 for t in range(6)]
    drops = [t for t in range(6, 80) if factors[t] < factors[t - 1]]
    assert drops == [35, 55, 76]
    assert factors[34] == 1.0 and factors[35] == pytest.approx(0.1) and factors[79] == pytest.approx(1e-3)


def test_none_and_no_warmup():
    assert [lr_factor(t, "none", 100, 5) for t in (0, 5, 6, 99)] == [0.0, 1.0, 1.0, 1.0]
    assert [lr_factor(t, "none", 100, 0) for t in (0, 1, 99)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("scheduler,steps,horizon", [("cosine-decay", 20, 20), ("cosine-4000", 3000, 4000),
                                                     ("cosine-4000", 300, 400)])
def test_without_warmup_the_cosine_is_the_originals_closed_form_from_step_0(scheduler, steps, horizon):
    # the original has no warmup wrapper at W = 0: lr(t) = p * 0.5 * (1 + cos(pi * t / T)) from t = 0
    peak = 0.4
    cosine_horizon = None if scheduler == "cosine-decay" or horizon == 4000 else horizon
    for t in range(steps):
        expected = peak * 0.5 * (1 + math.cos(math.pi * t / horizon))
        assert abs(peak * lr_factor(t, scheduler, steps, 0, cosine_horizon) - expected) < 1e-9, t
    assert lr_factor(0, scheduler, steps, 0, cosine_horizon) == 1.0 and lr_factor(1, scheduler, steps, 0) < 1.0


def test_without_warmup_linear_drops_at_the_milestones_themselves():
    # steps 80: milestones 29, 49, 70 (floor division of floats); without warmup the lr drops at t >= milestone
    factors = [lr_factor(t, "linear", 80, 0) for t in range(80)]
    assert [t for t in range(1, 80) if factors[t] < factors[t - 1]] == [29, 49, 70]
    for t in range(80):
        assert abs(factors[t] - 0.1 ** sum(t >= m for m in (29, 49, 70))) < 1e-9, t


def test_the_scheduler_at_warmup_0_drives_the_optimizer_with_the_closed_form():
    hyp = compose_config(["hyp=fb1", "hyp.warmup=0", "hyp.steps=20"]).hyp
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], hyp.optim)
    scheduler = build_scheduler(optimizer, hyp)
    for t in range(20):
        assert abs(optimizer.param_groups[0]["lr"] - 0.1 * 0.5 * (1 + math.cos(math.pi * t / 20))) < 1e-9, t
        optimizer.step()
        scheduler.step()


def test_warmup_longer_than_the_run_rises_for_the_whole_run():
    assert [lr_factor(t, "cosine-4000", 10, 400) for t in range(10)] == [t / 400 for t in range(10)]


def test_scheduler_drives_the_optimizer_lr_per_step():
    hyp = compose_config(["hyp=fbclip"]).hyp
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], hyp.optim)
    scheduler = build_scheduler(optimizer, hyp)
    lrs = []
    for _ in range(1001):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0
    for t in (1, 399, 400, 401, 402, 1000):
        assert lrs[t] == pytest.approx(original_lr(t, 0.4, 400, 4000), rel=1e-14), t


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
