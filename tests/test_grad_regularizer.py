"""GradRegularizer against independently computed numbers.

For a block with gradient g, Hessian H, lr = optimizer.param_groups[0]['lr'] (read at call time),
alpha = block_strength, beta = acc_strength and g_full = pre_grads the regularizer must return

    g + (lr / 4) * H v,    v = alpha * g + beta * g_full,

in place in the tensors it was given. The references below never call GradRegularizer: they use torch.func
(forward-over-reverse Hessian-vector products, and a dense Hessian for a 111-parameter model) on a copy of the
model whose BatchNorm layers keep no running statistics, so train-mode batch statistics are used exactly as in
the real model and the real model's buffers are never touched by the reference.

Measured once (torch 2.14 CPU, float64): the exact implementations agree with the references to ~1e-15;
forward differences err by ~0.5 * eps relative to the correction (error ratio 10.0 per decade of eps) and
central differences by ~2e-1 * eps**2 (ratio 100 per decade) on the smooth models. On the ReLU ResNet the
difference quotients cross activation kinks, so there they are checked against the exact difference quotient
at the same step instead of against H v.
"""
import copy
import os

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jvp

import fullbatch
from fullbatch.models import build_model
from fullbatch.training.regularizer import METHODS, GradRegularizer

ALL_IMPLEMENTATIONS = ["forward-differences", "finite_diff", "central-differences", "autograd", "autograd-pen"]
EXACT = ["autograd", "autograd-pen"]
# eps small enough that each difference scheme is accurate, with its bound on the error relative to the
# correction (measured: forward 5e-6 at eps 1e-5, central 2e-9 at eps 1e-4, exact ~1e-15)
ACCURATE = {"forward-differences": (1e-5, 1e-4), "finite_diff": (1e-5, 1e-4),
            "central-differences": (1e-4, 1e-6), "autograd": (1e-2, 1e-10), "autograd-pen": (1e-2, 1e-10)}
LOSS = nn.CrossEntropyLoss()


# ----------------------------------------------------------------------------------------------- models, data

def smooth_mlp(dtype=torch.float64, batch_norm=False):
    """5 -> 7 -> 6 -> 3 with tanh and softplus: a smooth loss with a nonzero Hessian (111 parameters)."""
    torch.manual_seed(0)
    layers = [nn.Linear(5, 7), *([nn.BatchNorm1d(7)] if batch_norm else []), nn.Tanh(), nn.Linear(7, 6),
              nn.Softplus(), nn.Linear(6, 3)]
    return nn.Sequential(*layers).to(dtype)


def smooth_conv_bn(dtype=torch.float64):
    """A tiny conv net with two BatchNorm2d layers and smooth activations (no ReLU kinks)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(),
                         nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.Softplus(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).to(dtype)


def resnet20(dtype=torch.float64):
    torch.manual_seed(0)
    return build_model("resnet20", 4, 10).to(dtype)


def data_for(name, dtype=torch.float64, size=None):
    generator = torch.Generator().manual_seed(1)
    shape, classes = {"mlp": ((16, 5), 3), "bn_mlp": ((16, 5), 3), "conv_bn": ((4, 3, 8, 8), 10),
                      "resnet20": ((2, 3, 32, 32), 10)}[name]
    shape = (size or shape[0], *shape[1:])
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, classes, (shape[0],), generator=generator)
    return inputs, labels


MODELS = {"mlp": smooth_mlp, "bn_mlp": lambda dtype=torch.float64: smooth_mlp(dtype, batch_norm=True),
          "conv_bn": smooth_conv_bn, "resnet20": resnet20}


def setup(name, lr=0.5, dtype=torch.float64):
    model = MODELS[name](dtype)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    inputs, labels = data_for(name, dtype)
    return model, optimizer, inputs, labels


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def block_gradient(model, inputs, labels):
    return torch.autograd.grad(LOSS(model(inputs), labels), trainable(model))


# ----------------------------------------------------------------------------------------------- references

def stateless_copy(model):
    """A deep copy whose BatchNorm layers hold no running statistics: in train mode they normalise with the
    batch statistics exactly as the original does, and torch.func transforms may run them (they mutate no
    captured buffer)."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return copied


class Reference:
    """The block loss as a pure function of the trainable parameters (a dict name -> tensor)."""

    def __init__(self, model, inputs, labels):
        self.model = stateless_copy(model)
        named = dict(model.named_parameters())
        self.names = [name for name, p in named.items() if p.requires_grad]
        self.frozen = {name: p.detach().clone() for name, p in named.items() if not p.requires_grad}
        self.point = {name: named[name].detach().clone() for name in self.names}
        self.inputs, self.labels = inputs, labels

    def loss(self, params):
        return LOSS(functional_call(self.model, {**params, **self.frozen}, (self.inputs,)), self.labels)

    def gradient(self, params=None):
        return grad(self.loss)(self.point if params is None else params)

    def hvp(self, vector):
        _, tangent = jvp(grad(self.loss), (self.point,), (vector,))
        return tangent

    def as_dict(self, tensors):
        return dict(zip(self.names, tensors))

    def as_list(self, tensors):
        return [tensors[name] for name in self.names]

    def regularized(self, lr, alpha, beta=0.0, pre_grads=None):
        """(g, g + (lr/4) H v) with v = alpha g + beta pre_grads, all from torch.func."""
        g = self.gradient()
        v = {name: alpha * g[name] for name in self.names}
        if beta:
            for name, full in zip(self.names, pre_grads):
                v[name] = v[name] + beta * full
        hv = self.hvp(v)
        return self.as_list(g), [g[name] + (lr / 4) * hv[name] for name in self.names]


def flat(tensors):
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def rel_err(actual, expected):
    return ((flat(actual) - flat(expected)).norm() / flat(expected).norm()).item()


def correction_err(result, base, expected):
    """Relative error of the correction result - base against expected - base."""
    return rel_err([r - b for r, b in zip(result, base)], [e - b for e, b in zip(expected, base)])


def run(model, optimizer, inputs, labels, implementation, alpha=0.5, beta=0.0, eps=1e-2, pre_grads=None,
        mixed_precision=False):
    """Return (g before the call, the regularizer's result, the regularizer); every call also checks that the
    model's parameters and buffers are exactly as the user's own forward left them."""
    regularizer = GradRegularizer(model, optimizer, LOSS, block_strength=alpha, acc_strength=beta, eps=eps,
                                  implementation=implementation, mixed_precision=mixed_precision)
    grads = block_gradient(model, inputs, labels)
    before, state = [g.clone() for g in grads], snapshot(model)
    result = regularizer(grads, inputs, labels, pre_grads=pre_grads)
    assert result is grads
    assert_unchanged(model, state)
    return before, result, regularizer


def snapshot(model):
    return ([p.detach().clone() for p in model.parameters()],
            {name: b.detach().clone() for name, b in model.named_buffers()})


def assert_unchanged(model, state):
    params, buffers = state
    for index, (p, saved) in enumerate(zip(model.parameters(), params)):
        assert torch.equal(p, saved), f"parameter {index} changed"
        assert p.grad is None, f"parameter {index} got a .grad"
    current = dict(model.named_buffers())
    assert current.keys() == buffers.keys()
    for name, saved in buffers.items():
        assert torch.equal(current[name], saved), f"buffer {name} changed"


# ----------------------------------------------------------------------------------------------- the public API

def test_usage_snippet_float32_returns_the_same_tensors_updated_in_place():
    model, optimizer, inputs, labels = setup("mlp", lr=0.4, dtype=torch.float32)
    loss_fn = LOSS

    from fullbatch.models.modules import GradRegularizer as FromModules
    assert fullbatch.GradRegularizer is FromModules
    gradreg = FromModules(model, optimizer, loss_fn, block_strength=0.5, acc_strength=0.0, eps=1e-2,
                          implementation='finite_diff', mixed_precision=False)
    grads = torch.autograd.grad(loss_fn(model(inputs), labels), model.parameters())
    passed, before = grads, [g.clone() for g in grads]
    grads = gradreg(grads, inputs, labels, pre_grads=None)

    assert grads is passed and isinstance(grads, tuple)
    assert len(grads) == len(before) and all(g.dtype == torch.float32 for g in grads)
    assert all(not torch.equal(g, b) for g, b in zip(grads, before))  # every tensor received its correction
    # the values: float64 reference of the same model; forward differences at eps 1e-2 err ~0.5e-2
    reference = Reference(model.double(), inputs.double(), labels)
    _, expected = reference.regularized(lr=0.4, alpha=0.5)
    assert correction_err(grads, before, expected) < 2e-2
    assert rel_err(grads, expected) < 2e-3


def test_construction_rejects_complex_step_unknown_names_and_other_norms():
    model, optimizer, _, _ = setup("mlp")
    valid = ["forward-differences", "central-differences", "autograd", "autograd-pen"]
    for name in ("complex-step", "exact", "finite-diff", ""):
        with pytest.raises(ValueError) as info:
            GradRegularizer(model, optimizer, LOSS, implementation=name)
        assert all(method in str(info.value) for method in valid), str(info.value)
    for norm in (1, float("inf"), "fro"):
        with pytest.raises(ValueError, match="norm"):
            GradRegularizer(model, optimizer, LOSS, norm=norm)
    with pytest.raises(ValueError, match="eps"):
        GradRegularizer(model, optimizer, LOSS, eps=0.0)
    assert GradRegularizer(model, optimizer, LOSS).implementation == "forward-differences"
    assert GradRegularizer(model, optimizer, LOSS, implementation="finite_diff").implementation == \
        "forward-differences"
    assert GradRegularizer(model, optimizer, LOSS, norm=2.0).implementation == "forward-differences"


# ----------------------------------------------------------------------------------------------- exact values

def test_reference_hvp_agrees_with_a_dense_hessian():
    """The torch.func reference itself, checked against H formed densely over the flattened parameters."""
    model, _, inputs, labels = setup("mlp")
    reference = Reference(model, inputs, labels)
    shapes = [reference.point[name].shape for name in reference.names]
    sizes = [s.numel() for s in shapes]

    def loss_of_vector(vector):
        pieces = torch.split(vector, sizes)
        return reference.loss({n: piece.reshape(s) for n, piece, s in zip(reference.names, pieces, shapes)})

    theta = flat(reference.as_list(reference.point))
    dense = hessian(loss_of_vector)(theta)
    assert dense.shape == (111, 111)
    assert torch.allclose(dense, dense.T, rtol=0, atol=1e-14)
    g = grad(loss_of_vector)(theta)
    full = torch.randn(111, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * g.norm()
    pre_grads = [t.reshape(s) for t, s in zip(torch.split(full, sizes), shapes)]
    _, expected = reference.regularized(0.5, 0.5, 0.3, pre_grads)
    assert rel_err([g + 0.125 * dense @ (0.5 * g + 0.3 * full)], [flat(expected)]) < 1e-13


@pytest.mark.parametrize("implementation", EXACT)
def test_exact_implementations_match_a_dense_hessian(implementation):
    model, optimizer, inputs, labels = setup("mlp", lr=0.7)
    params = trainable(model)
    theta = flat(params)
    sizes, shapes = [p.numel() for p in params], [p.shape for p in params]
    names = [name for name, _ in model.named_parameters()]
    copy_ = stateless_copy(model)

    def loss_of_vector(vector):
        pieces = [t.reshape(s) for t, s in zip(torch.split(vector, sizes), shapes)]
        return LOSS(functional_call(copy_, dict(zip(names, pieces)), (inputs,)), labels)

    dense, g = hessian(loss_of_vector)(theta), grad(loss_of_vector)(theta)
    before, result, _ = run(model, optimizer, inputs, labels, implementation, alpha=0.5)
    expected = g + (0.7 / 4) * dense @ (0.5 * g)
    assert rel_err([flat(before)], [g]) < 1e-13
    assert rel_err([flat(result)], [expected]) < 1e-10
    assert correction_err([flat(result)], [g], [expected]) < 1e-10


@pytest.mark.parametrize("name", ["mlp", "bn_mlp", "conv_bn", "resnet20"])
@pytest.mark.parametrize("implementation", EXACT)
def test_exact_implementations_match_torch_func(name, implementation):
    """BatchNorm models run in train mode: the reference uses the same batch statistics."""
    model, optimizer, inputs, labels = setup(name, lr=0.5)
    reference = Reference(model, inputs, labels)
    g, expected = reference.regularized(lr=0.5, alpha=0.5)
    before, result, _ = run(model, optimizer, inputs, labels, implementation, alpha=0.5)
    assert rel_err(before, g) < 1e-12  # the reference sees the same function as the model
    correction = (flat(expected) - flat(g)).norm() / flat(g).norm()
    assert correction > 1e-2, "test is vacuous: the correction is negligible"
    assert rel_err(result, expected) < 1e-10
    assert correction_err(result, before, expected) < 1e-9


@pytest.mark.parametrize("name", ["mlp", "conv_bn"])
def test_forward_differences_converge_linearly_in_eps(name):
    model, optimizer, inputs, labels = setup(name)
    _, expected = Reference(model, inputs, labels).regularized(lr=0.5, alpha=0.5)
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        before, result, _ = run(model, optimizer, inputs, labels, "forward-differences", eps=eps)
        errors.append(correction_err(result, before, expected))
        assert errors[-1] < 2 * eps, (eps, errors)  # O(eps), measured ~0.5 * eps
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(5 < r < 20 for r in ratios), (errors, ratios)


@pytest.mark.parametrize("name", ["mlp", "conv_bn"])
def test_central_differences_converge_quadratically_in_eps(name):
    model, optimizer, inputs, labels = setup(name)
    _, expected = Reference(model, inputs, labels).regularized(lr=0.5, alpha=0.5)
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        before, result, _ = run(model, optimizer, inputs, labels, "central-differences", eps=eps)
        errors.append(correction_err(result, before, expected))
        assert errors[-1] < eps ** 2, (eps, errors)  # O(eps^2), measured ~0.2 * eps^2
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    assert all(50 < r < 200 for r in ratios), (errors, ratios)
    # at the same eps central differences are far closer than forward differences
    before, forward, _ = run(model, optimizer, inputs, labels, "forward-differences", eps=1e-3)
    assert errors[1] < 1e-2 * correction_err(forward, before, expected)


@pytest.mark.parametrize("implementation", ["forward-differences", "central-differences"])
def test_differences_on_relu_resnet_equal_the_exact_difference_quotient(implementation):
    """On the ReLU ResNet (BatchNorm in train mode) the difference quotient is recomputed with torch.func at the
    original's definition and compared; kinks make it differ from H v (and make the step width visible), so
    H v is not the right target here."""
    eps, lr, alpha = 1e-2, 0.5, 0.5
    model, optimizer, inputs, labels = setup("resnet20", lr=lr)
    reference = Reference(model, inputs, labels)
    before, result, _ = run(model, optimizer, inputs, labels, implementation, alpha=alpha, eps=eps)
    v = [alpha * g for g in before]
    norm = flat(v).norm()
    unit = [d / norm for d in v]
    point = reference.as_list(reference.point)

    def gradient_at(offset):
        return reference.as_list(reference.gradient(reference.as_dict([p + offset * u for p, u in zip(point, unit)])))

    if implementation == "forward-differences":  # theta + eps v/||v||, divided by eps / ||v||
        quotient = [norm * (a - b) / eps for a, b in zip(gradient_at(eps), before)]
    else:  # the original's definition: theta +- (eps/2) v/||v||, divided by eps / ||v||: eps is the full width
        quotient = [norm * (a - b) / eps for a, b in zip(gradient_at(eps / 2), gradient_at(-eps / 2))]
        wider = [norm * (a - b) / (2 * eps) for a, b in zip(gradient_at(eps), gradient_at(-eps))]
        wide_expected = [b + (lr / 4) * q for b, q in zip(before, wider)]
        assert correction_err(result, before, wide_expected) > 1e-4  # a step of +-eps would be told apart
    expected = [b + (lr / 4) * q for b, q in zip(before, quotient)]
    assert correction_err(result, before, expected) < 1e-8
    assert rel_err(result, expected) < 1e-9


# ----------------------------------------------------------------------------------------------- acc_strength

@pytest.mark.parametrize("alpha", [0.5, 0.0])
@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
def test_acc_strength_with_pre_grads_matches_the_formula(implementation, alpha):
    beta, lr = 0.3, 0.5
    eps, tolerance = ACCURATE[implementation]
    model, optimizer, _, _ = setup("bn_mlp", lr=lr)
    all_inputs, all_labels = data_for("bn_mlp", size=48)
    inputs, labels = all_inputs[:16], all_labels[:16]
    pre_grads = [g.detach() for g in block_gradient(model, all_inputs, all_labels)]  # a "full" gradient
    _, expected = Reference(model, inputs, labels).regularized(lr, alpha, beta, pre_grads)
    before, result, regularizer = run(model, optimizer, inputs, labels, implementation, alpha=alpha, beta=beta,
                                      eps=eps, pre_grads=pre_grads)
    assert correction_err(result, before, expected) < tolerance
    # the pre_grads term matters: dropping it gives a clearly different answer
    _, without = Reference(model, inputs, labels).regularized(lr, alpha)
    assert correction_err(without, before, expected) > 1e-2
    penalty = (lr / 4) * (alpha / 2 * flat(before).pow(2).sum() + beta * flat(before) @ flat(pre_grads))
    assert torch.allclose(regularizer.last_penalty.double(), penalty, rtol=1e-12, atol=0)


@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
def test_acc_strength_without_pre_grads_raises_and_changes_nothing(implementation):
    model, optimizer, inputs, labels = setup("bn_mlp")
    regularizer = GradRegularizer(model, optimizer, LOSS, block_strength=0.5, acc_strength=0.3,
                                  implementation=implementation)
    grads = block_gradient(model, inputs, labels)
    before, state = [g.clone() for g in grads], snapshot(model)
    with pytest.raises(ValueError, match="pre_grads"):
        regularizer(grads, inputs, labels)
    assert all(torch.equal(g, b) for g, b in zip(grads, before))
    assert_unchanged(model, state)


# ----------------------------------------------------------------------------------------------- model state

@pytest.mark.parametrize("name", ["resnet20", "conv_bn"])
@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
def test_parameters_and_batchnorm_buffers_are_bit_for_bit_unchanged(name, implementation):
    model, optimizer, inputs, labels = setup(name)
    block_gradient(model, inputs, labels)  # running statistics away from their initial values
    assert any(b.abs().sum() > 0 for n, b in model.named_buffers() if "running_mean" in n)
    tracked = {n: b.item() for n, b in model.named_buffers() if n.endswith("num_batches_tracked")}
    assert tracked and all(count == 1 for count in tracked.values())
    grads = block_gradient(model, inputs, labels)
    state = snapshot(model)  # after the user's own forward, before the regularizer's
    regularizer = GradRegularizer(model, optimizer, LOSS, block_strength=0.5, acc_strength=0.2, eps=1e-2,
                                  implementation=implementation)
    regularizer(grads, inputs, labels, pre_grads=[g.detach().clone() for g in grads])
    assert_unchanged(model, state)
    assert model.training


@pytest.mark.parametrize("implementation", ["forward-differences", "central-differences", "autograd"])
def test_state_is_restored_when_the_loss_raises(implementation):
    """A loss that fails inside the regularizer (after the shifted forward ran) still leaves the model as it was."""
    model, optimizer, inputs, labels = setup("conv_bn")

    class FailingLoss(nn.Module):
        armed = False

        def forward(self, outputs, targets):
            if self.armed:
                raise RuntimeError("loss failed on purpose")
            return LOSS(outputs, targets)

    loss_fn = FailingLoss()
    grads = torch.autograd.grad(loss_fn(model(inputs), labels), model.parameters())
    state = snapshot(model)
    regularizer = GradRegularizer(model, optimizer, loss_fn, implementation=implementation)
    loss_fn.armed = True
    with pytest.raises(RuntimeError, match="on purpose"):
        regularizer(grads, inputs, labels)
    assert_unchanged(model, state)


# ----------------------------------------------------------------------------------------------- frozen layers

def freeze(model, name):
    if name == "mlp":  # the first layer
        for p in model[0].parameters():
            p.requires_grad_(False)
    elif name == "conv_bn":  # first convolution and the affine part of the second BatchNorm
        for p in (*model[0].parameters(), *model[4].parameters()):
            p.requires_grad_(False)
    else:  # resnet20: the stem and the classifier bias
        for p in model.stem.parameters():
            p.requires_grad_(False)
        model.fc.bias.requires_grad_(False)


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "resnet20"])
@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
def test_frozen_parameters_match_the_formula_over_trainable_ones(name, implementation):
    if name == "resnet20" and implementation not in EXACT:
        eps, tolerance = 1e-2, None  # ReLU kinks: only run and restore, see the difference-quotient test
    else:
        eps, tolerance = ACCURATE[implementation]
    model = MODELS[name]()
    freeze(model, name)
    frozen = [p.detach().clone() for p in model.parameters() if not p.requires_grad]
    assert frozen
    optimizer = torch.optim.SGD(trainable(model), lr=0.5)
    inputs, labels = data_for(name)
    reference = Reference(model, inputs, labels)
    assert len(reference.names) == len(trainable(model)) < len(list(model.parameters()))
    _, expected = reference.regularized(lr=0.5, alpha=0.5)
    before, result, _ = run(model, optimizer, inputs, labels, implementation, eps=eps)
    assert [r.shape for r in result] == [p.shape for p in trainable(model)]
    if tolerance is not None:
        assert correction_err(result, before, expected) < tolerance
    assert all(torch.equal(p, f) for p, f in zip([p for p in model.parameters() if not p.requires_grad], frozen))
    # one gradient per trainable parameter, no more and no fewer
    regularizer = GradRegularizer(model, optimizer, LOSS, implementation=implementation)
    grads = list(block_gradient(model, inputs, labels))
    for wrong in (grads[:-1], grads + [torch.zeros_like(frozen[0])]):
        with pytest.raises(ValueError, match="trainable"):
            regularizer(wrong, inputs, labels)


# ----------------------------------------------------------------------------------------------- switches

@pytest.mark.parametrize("implementation", ALL_IMPLEMENTATIONS)
def test_inactive_regularizer_returns_grads_unchanged_without_a_forward(implementation):
    model, optimizer, inputs, labels = setup("conv_bn")
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(1))
    grads = block_gradient(model, inputs, labels)
    assert len(calls) == 1
    before, state = [g.clone() for g in grads], snapshot(model)
    regularizer = GradRegularizer(model, optimizer, LOSS, block_strength=0.0, acc_strength=0.0,
                                  implementation=implementation)
    assert not regularizer.active
    result = regularizer(grads, inputs, labels, pre_grads=None)
    assert result is grads and all(torch.equal(g, b) for g, b in zip(result, before))
    assert len(calls) == 1 and regularizer.last_penalty is None
    assert_unchanged(model, state)
    # the same hook counts the extra forwards of an active regularizer: the design's cost per block
    regularizer.block_strength = 0.5
    regularizer(grads, inputs, labels)
    expected_forwards = 2 if implementation == "central-differences" else 1
    assert len(calls) == 1 + expected_forwards
    handle.remove()


@pytest.mark.parametrize("implementation", ["forward-differences", "central-differences", "autograd",
                                            "autograd-pen"])
def test_lr_is_read_from_the_optimizer_at_call_time(implementation):
    model, optimizer, inputs, labels = setup("mlp", lr=0.2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 + 2.0 * step)
    regularizer = GradRegularizer(model, optimizer, LOSS, block_strength=0.5, implementation=implementation)

    def correction():
        grads = block_gradient(model, inputs, labels)
        before = [g.clone() for g in grads]
        regularizer(grads, inputs, labels)
        return flat(grads) - flat(before), regularizer.last_penalty

    first, penalty_first = correction()
    optimizer.step()  # no .grad anywhere: moves nothing, keeps the scheduler's call order check quiet
    scheduler.step()  # lr 0.2 -> 0.6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6)
    second, penalty_second = correction()
    optimizer.param_groups[0]["lr"] = 0.05  # set by hand
    third, _ = correction()
    assert first.norm() > 0
    assert ((second - 3 * first).norm() / second.norm()).item() < 1e-12
    assert ((third - first / 4).norm() / third.norm()).item() < 1e-12
    assert (penalty_second / penalty_first).item() == pytest.approx(3.0, rel=1e-12)


def test_last_penalty_is_lr_alpha_over_8_times_squared_gradient_norm():
    lr, alpha = 0.7, 0.4
    for name in ("mlp", "resnet20"):
        model, optimizer, inputs, labels = setup(name, lr=lr)
        for implementation in ALL_IMPLEMENTATIONS:
            before, _, regularizer = run(model, optimizer, inputs, labels, implementation, alpha=alpha)
            expected = (lr * alpha / 8) * flat(before).pow(2).sum()
            assert regularizer.last_penalty.dim() == 0
            assert regularizer.last_penalty.dtype == torch.float64  # no rounding to float32 for a float64 model
            assert torch.allclose(regularizer.last_penalty, expected, rtol=1e-12, atol=0), implementation
    # a float32 model's penalty is float32 and equally consistent
    model, optimizer, inputs, labels = setup("mlp", lr=lr, dtype=torch.float32)
    before, _, regularizer = run(model, optimizer, inputs, labels, "autograd", alpha=alpha)
    assert regularizer.last_penalty.dtype == torch.float32
    assert regularizer.last_penalty.item() == pytest.approx((lr * alpha / 8) * flat(before).pow(2).sum().item(),
                                                            rel=1e-6)


# ----------------------------------------------------------------------------------------------- bf16 autocast

@pytest.mark.filterwarnings("ignore:GradRegularizer. with precision=.compute.:UserWarning")
@pytest.mark.parametrize("name", ["mlp", "conv_bn"])
def test_bf16_autocast_on_cpu_stays_close_to_float32(name):
    """mixed_precision=True with a float32 model; the block gradient comes from the same autocast, as in
    training. Measured (correction error relative to the float32 correction): exact implementations 3e-3 (mlp)
    and 6e-3 (conv_bn); the difference schemes are dominated by bf16 quantisation of the shifted weights:
    0.2-0.9 at the default eps 1e-2, 0.01-0.1 at eps 1e-1. Results stay within 3e-2 of float32 everywhere."""
    model, optimizer, inputs, labels = setup(name, lr=0.5, dtype=torch.float32)
    grads32 = block_gradient(model, inputs, labels)
    exact32 = GradRegularizer(model, optimizer, LOSS, 0.5, implementation="autograd")(
        [g.clone() for g in grads32], inputs, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads16 = block_gradient(model, inputs, labels)
    assert 1e-4 < rel_err(grads16, grads32) < 1e-2  # autocast really is in effect on this model
    state = snapshot(model)
    for implementation, eps, correction_tolerance in [
            ("autograd", 1e-2, 2e-2), ("autograd-pen", 1e-2, 2e-2),
            ("forward-differences", 1e-1, 0.25), ("central-differences", 1e-1, 0.15),
            ("forward-differences", 1e-2, None), ("central-differences", 1e-2, None)]:
        regularizer = GradRegularizer(model, optimizer, LOSS, 0.5, eps=eps, implementation=implementation,
                                      mixed_precision=True, precision="compute")
        result = regularizer([g.clone() for g in grads16], inputs, labels)
        assert all(r.dtype == torch.float32 for r in result)
        assert torch.isfinite(flat(result)).all()
        assert rel_err(result, exact32) < 5e-2, (implementation, eps)
        if correction_tolerance is not None:
            error = rel_err([r - g for r, g in zip(result, grads16)], [e - g for e, g in zip(exact32, grads32)])
            assert error < correction_tolerance, (implementation, eps, error)
        assert_unchanged(model, state)
    # bf16 really was used inside the regularizer: its exact correction differs from the float32 one
    regularizer = GradRegularizer(model, optimizer, LOSS, 0.5, implementation="autograd", mixed_precision=True,
                                  precision="compute")
    result = regularizer([g.clone() for g in grads32], inputs, labels)
    assert 1e-4 < correction_err(result, grads32, exact32) < 2e-2


@pytest.mark.parametrize("implementation", METHODS)
@pytest.mark.filterwarnings("ignore:GradRegularizer. with precision=.compute.:UserWarning")
@pytest.mark.parametrize("name", ["mlp", "conv_bn"])
def test_full_precision_regularizer_ignores_bf16_autocast(name, implementation):
    """precision='full' (the default) takes the regularizer's own passes in float32 even when training runs
    under bf16 autocast: given the same block gradient, the correction is exactly the float32 one. Forward
    differences re-evaluate the unshifted gradient in float32, so a bf16 block gradient passed in does not
    enter the difference quotient (its rounding error divided by the tiny step would swamp H v)."""
    model, optimizer, inputs, labels = setup(name, lr=0.5, dtype=torch.float32)
    grads32 = block_gradient(model, inputs, labels)
    plain = GradRegularizer(model, optimizer, LOSS, 0.5, implementation=implementation)
    full = GradRegularizer(model, optimizer, LOSS, 0.5, implementation=implementation, mixed_precision=True)
    assert full.precision == "full"
    expected = plain([g.clone() for g in grads32], inputs, labels)
    state = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(full([g.clone() for g in grads32], inputs, labels), expected))
    assert_unchanged(model, state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads16 = block_gradient(model, inputs, labels)
    coarse = GradRegularizer(model, optimizer, LOSS, 0.5, implementation=implementation, mixed_precision=True,
                             precision="compute")
    expected_correction = [e - g for e, g in zip(expected, grads32)]
    full_error = rel_err([r - g for r, g in zip(full([g.clone() for g in grads16], inputs, labels), grads16)],
                         expected_correction)
    coarse_error = rel_err([r - g for r, g in zip(coarse([g.clone() for g in grads16], inputs, labels), grads16)],
                           expected_correction)
    # with a bf16 block gradient only the direction v = alpha * g_b carries bf16 error (< 1e-2 on these nets)
    assert full_error < 2e-2, (implementation, full_error)
    if implementation.endswith("differences"):
        assert coarse_error > 5 * full_error, (implementation, coarse_error, full_error)


def test_unknown_precision_is_refused_at_construction():
    model, optimizer, _, _ = setup("mlp")
    with pytest.raises(ValueError, match="precision='half'.*'full', 'compute'"):
        GradRegularizer(model, optimizer, LOSS, 0.5, precision="half")


@pytest.mark.parametrize("document", ["README.md", "docs/regularizer.md"])
def test_documented_usage_snippet_runs_as_written(document, capsys):
    """The snippet in the README and in the regularizer's documentation runs verbatim in an empty namespace, and
    its penalty is (lr / 8) * block_strength * |g|^2 of the plain gradient its own set-up lines give."""
    import re

    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), document)).read()
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "GradRegularizer" in block]
    namespace = {}
    exec(snippet, namespace)
    assert capsys.readouterr().out.startswith("loss ")
    setup_lines = {}
    exec(snippet[:snippet.index("gradreg = ")], setup_lines)  # the same seed: the same model and data
    model, loss_fn = setup_lines["model"], setup_lines["loss_fn"]
    plain = torch.autograd.grad(loss_fn(model(setup_lines["inputs"]), setup_lines["labels"]), list(model.parameters()))
    expected = 0.1 * 0.5 / 8 * sum((g.double() ** 2).sum() for g in plain).item()
    assert namespace["gradreg"].last_penalty.item() == pytest.approx(expected, rel=1e-5)
    change = sum((g - p).norm() for g, p in zip(namespace["grads"], plain)).item()
    assert 0 < change < sum(p.norm() for p in plain).item()


def test_coarse_bf16_differences_warn_and_the_full_precision_default_does_not():
    import warnings

    model, optimizer, _, _ = setup("mlp", dtype=torch.float32)
    with pytest.warns(UserWarning, match="precision='compute' under bf16"):
        GradRegularizer(model, optimizer, LOSS, 0.5, mixed_precision=True, precision="compute")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GradRegularizer(model, optimizer, LOSS, 0.5, mixed_precision=True)
        GradRegularizer(model, optimizer, LOSS, 0.5, implementation="autograd", mixed_precision=True,
                        precision="compute")
