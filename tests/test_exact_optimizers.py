"""Optimizers for exact gradients on a strongly convex problem (L2-regularised logistic regression, float64)."""
import warnings

import pytest
import torch

from conftest import compose_config
from fullbatch.train import build_trainer
from fullbatch.training.exact_optimizers import armijo_step

PROBLEM = ["data=synthetic", "data.size=256", "data.test_size=64", "data.batch_size=64", "data.augmentations_train=",
           "model=linear", "impl.device=cpu", "impl.dtype=float64", "hyp=fb1", "hyp.warmup=0", "hyp.scheduler=none",
           "hyp.steps=100", "impl.validate_every_nth_step=1000", "hyp.optim.weight_decay=1e-2"]


def _objective_and_minimum(trainer):
    """F(theta) on the trainer's data, and F* found independently by a long, tight L-BFGS run."""
    images, labels = trainer.dataset.training_set(0)
    inputs = trainer.prepare(images).flatten(1)
    decay = trainer.hyp.optim.weight_decay

    def objective(weight, bias):
        loss = torch.nn.functional.cross_entropy(inputs @ weight.T + bias, labels)
        return loss + 0.5 * decay * (weight.pow(2).sum() + bias.pow(2).sum())

    weight = torch.zeros(10, inputs.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([weight, bias], max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-15,
                               history_size=50, line_search_fn="strong_wolfe")

    def closure():
        solver.zero_grad()
        value = objective(weight, bias)
        value.backward()
        return value

    solver.step(closure)
    model = trainer.model
    return (lambda: objective(model.fc.weight, model.fc.bias).item()), objective(weight, bias).item()


def _evaluations_to_reach(trainer, objective, target, max_steps):
    used = 0
    for _ in range(max_steps):
        used += trainer.run_step().get("evaluations", 1)
        if objective() <= target:
            return used
    return None


def test_lbfgs_reaches_the_minimizer_with_far_fewer_evaluations_than_gradient_descent():
    lbfgs = build_trainer(compose_config([*PROBLEM, "hyp/optim=lbfgs"]))
    objective, minimum = _objective_and_minimum(lbfgs)
    tolerance = 1e-6 * abs(minimum)
    lbfgs_evaluations = _evaluations_to_reach(lbfgs, objective, minimum + tolerance, max_steps=10)
    assert lbfgs_evaluations is not None and objective() == pytest.approx(minimum, rel=1e-6)
    descent = build_trainer(compose_config([*PROBLEM, "hyp/optim=gd_linesearch", "hyp.optim.lr=4.0"]))
    descent_objective, same_minimum = _objective_and_minimum(descent)
    assert same_minimum == pytest.approx(minimum, rel=1e-9)  # same data, same strongly convex problem
    descent_evaluations = _evaluations_to_reach(descent, descent_objective, minimum + tolerance,
                                                max_steps=lbfgs_evaluations * 2)
    assert descent_evaluations is None or descent_evaluations > 3 * lbfgs_evaluations


def test_gradient_descent_with_armijo_decreases_the_objective_every_step():
    trainer = build_trainer(compose_config([*PROBLEM, "hyp/optim=gd_linesearch", "hyp.optim.lr=1000.0"]))
    objective, minimum = _objective_and_minimum(trainer)
    values = [objective()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(8):
            row = trainer.run_step()
            values.append(objective())
            assert row["step_size"] < 1000.0 and row["evaluations"] >= 2  # the huge first trial was rejected
    assert all(b < a for a, b in zip(values, values[1:])) and values[-1] > minimum - 1e-12
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]  # no false ordering alarm


def test_armijo_step_takes_the_first_step_that_decreases_enough():
    x = torch.tensor([3.0], dtype=torch.float64)
    curvature = 2.0

    def objective():
        return 0.5 * curvature * x.item() ** 2

    direction = [torch.tensor([-curvature * 3.0], dtype=torch.float64)]
    slope = -(curvature * 3.0) ** 2
    step, evaluations = armijo_step([x], direction, objective, initial=8.0, slope=slope, c=0.25)
    # f(3 - 6 t) <= 9 - 0.25 * 36 t  holds first for t = 0.5 (t = 8, 4, 2, 1 fail)
    assert step == 0.5 and evaluations == 1 + 5 and x.item() == pytest.approx(0.0)


def test_line_search_and_lbfgs_refuse_the_stochastic_mode():
    from fullbatch.run.validation import ConfigError, validate

    with pytest.raises(ConfigError, match="hyp.train_stochastic"):
        validate(compose_config(["hyp=base_sgd", "hyp/optim=lbfgs"]))
    with pytest.raises(ConfigError, match="hyp.optim.momentum"):
        validate(compose_config(["hyp=fb1", "hyp/optim=gd_linesearch", "hyp.optim.momentum=0.9"]))


@pytest.mark.parametrize("override, key", [
    ("hyp=fbclip", "hyp.grad_clip"), ("hyp.batch_clip=1.0", "hyp.batch_clip"),
    ("hyp.grad_reg.block_strength=0.5", "hyp.grad_reg.block_strength"),
    ("hyp.grad_reg.acc_strength=0.1", "hyp.grad_reg.acc_strength"),
    ("hyp.norm_bias.strength=0.1", "hyp.norm_bias.strength"), ("hyp/optim_modification=SAM", "hyp/optim_modification"),
])
def test_armijo_refuses_what_bends_the_step_away_from_the_objective_it_tests(override, key):
    """Its decrease test uses loss + weight decay and the slope -||grad F||^2: only right along -grad F."""
    from fullbatch.run.validation import ConfigError, validate

    cfg = compose_config(["hyp=fb1", override, "hyp/optim=gd_linesearch"])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(f"{key}=") and "line_search=armijo" in str(error.value)
    validate(compose_config(["hyp=fb1", override]))  # the same setting is fine with plain gradient descent


@pytest.mark.parametrize("optimizer", [["hyp/optim=gd", "hyp.optim.lr=0.5"],
                                       ["hyp/optim=gd_linesearch", "hyp.optim.lr=4.0"],
                                       ["hyp/optim=lbfgs"]])
def test_each_optimizer_converges_to_the_known_minimizer(optimizer):
    trainer = build_trainer(compose_config([*PROBLEM, *optimizer]))
    objective, minimum = _objective_and_minimum(trainer)
    assert _evaluations_to_reach(trainer, objective, minimum * (1 + 1e-4), max_steps=600) is not None


def test_lbfgs_step_at_lr_0_evaluates_once_and_stays_in_place():
    """Warmup's first step runs at lr 0, where L-BFGS's line search has no interval to search."""
    trainer = build_trainer(compose_config([*PROBLEM, "hyp/optim=lbfgs", "hyp.warmup=2"]))
    start = [p.detach().clone() for p in trainer.params]
    first = trainer.run_step()
    assert first["lr"] == 0 and first["evaluations"] == 1 and 0 < first["train_loss"] < 10
    assert all(torch.equal(p, s) for p, s in zip(trainer.params, start))
    second = trainer.run_step()
    assert second["lr"] == pytest.approx(0.5) and second["evaluations"] > 1
    assert not all(torch.equal(p, s) for p, s in zip(trainer.params, start))
