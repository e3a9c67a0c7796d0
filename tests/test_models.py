"""The ResNet registry: parameter counts of the standard variants, every model runs at a tiny width."""
import pytest
import torch

from fullbatch.models import MODELS, build_model


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet18_at_width_64_has_11_17_million_parameters():
    assert _count(build_model("resnet18", 64, 10)) == 11_173_962


def test_cifar_resnets_have_their_known_sizes():
    assert round(_count(build_model("resnet20", 16, 10)) / 1e6, 2) == 0.27
    assert round(_count(build_model("resnet56", 16, 10)) / 1e6, 2) == 0.86
    assert round(_count(build_model("resnet110", 16, 10)) / 1e6, 1) == 1.7


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_forward_and_backward_at_a_tiny_width(name):
    model = build_model(name, 4, 100)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_stem_keeps_resolution():
    model = build_model("resnet18", 8, 10)
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_unknown_model_is_refused():
    with pytest.raises(KeyError, match="resnet18"):
        build_model("resnet19", 8, 10)


def test_vgg_densenet_and_linear_have_the_standard_cifar_sizes():
    assert _count(build_model("vgg11", 64, 10)) == 9_231_114
    assert _count(build_model("vgg16", 64, 10)) == 14_728_266
    assert abs(_count(build_model("densenet121", 64, 10)) - 6_956_298) < 0.0001 * 6_956_298
    assert _count(build_model("linear", 1, 10)) == 3072 * 10 + 10


@pytest.mark.parametrize("name", ["vgg11", "densenet121"])
def test_library_models_keep_per_block_batchnorm_when_blocks_are_merged(name):
    from fullbatch.data.blocks import block_plan
    from fullbatch.models.ghost_batchnorm import BlockBatchNorm2d, supports_block_groups
    from fullbatch.training.full_batch import BlockRule, StepInputs, full_batch_gradient

    torch.manual_seed(0)
    model = build_model(name, 8, 10).double()
    assert supports_block_groups(model) and any(isinstance(m, BlockBatchNorm2d) for m in model.modules())
    images, labels = torch.randn(48, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (48,))
    step = StepInputs(model, torch.nn.CrossEntropyLoss(), list(model.parameters()), images, labels, lambda x: x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain, _ = full_batch_gradient(step, block_plan(48, 16))
    model.load_state_dict(state)
    merged, _ = full_batch_gradient(step, block_plan(48, 16), BlockRule(merge=3))
    for a, b in zip(plain, merged):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["vgg11", "densenet121", "linear"])
def test_new_models_train_a_regularized_full_batch_step(name):
    from conftest import TINY, compose_config
    from fullbatch.train import build_trainer

    trainer = build_trainer(compose_config([*TINY, f"model={name}", "model.width=8", "hyp=gradreg", "hyp.warmup=0",
                                            "hyp.steps=2", "hyp.optim.lr=0.1"]))
    start = [p.detach().clone() for p in trainer.params]
    rows = [trainer.run_step() for _ in range(2)]
    assert all(row["full_loss"] > row["train_loss"] > 0 for row in rows)  # the regularizer's penalty is in
    assert all(0 < row["grad_norm"] <= 0.25 * (1 + 1e-6) for row in rows)  # clipped to hyp.grad_clip
    assert all(not torch.equal(p, s) for p, s in zip(trainer.params, start))
