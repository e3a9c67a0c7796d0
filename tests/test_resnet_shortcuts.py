"""ResNet downsampling shortcuts: type B (strided 1x1 conv, BN) and type C (AvgPool, 1x1 conv, BN), with the
original code's choice per depth as the default, in the registry and in the model configs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import compose_config
from fullbatch.models import build_model
from fullbatch.models.registry import RESNETS
from fullbatch.models.resnet import BasicBlock, Bottleneck

ORIGINAL_TYPES = {"resnet18": "C", "resnet34": "C", "resnet50": "C", "resnet101": "C", "resnet152": "C",
                  "resnet20": "B", "resnet32": "C", "resnet56": "C", "resnet110": "C"}


def _shortcuts(model):
    return [m.shortcut for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))
            and not isinstance(m.shortcut, nn.Identity)]


def _kinds(shortcut):
    return [type(layer).__name__ for layer in shortcut]


def test_model_configs_and_registry_default_to_the_original_types():
    assert set(ORIGINAL_TYPES) == RESNETS
    for name, expected in ORIGINAL_TYPES.items():
        assert compose_config([f"model={name}"]).model.downsample == expected, name
        default = _shortcuts(build_model(name, 4, 10))
        explicit = _shortcuts(build_model(name, 4, 10, downsample=expected))
        assert [_kinds(s) for s in default] == [_kinds(s) for s in explicit], name


@pytest.mark.parametrize("name, strided_stages", [("resnet18", 3), ("resnet20", 2), ("resnet50", 3)])
def test_structure_of_each_type(name, strided_stages):
    for downsample in ("B", "C"):
        shortcuts = _shortcuts(build_model(name, 8, 10, downsample=downsample))
        pooled = [s for s in shortcuts if isinstance(s[0], nn.AvgPool2d)]
        assert len(pooled) == (strided_stages if downsample == "C" else 0)
        for shortcut in shortcuts:
            conv = shortcut[-2]
            assert conv.kernel_size == (1, 1) and conv.bias is None
            if downsample == "B":
                assert _kinds(shortcut) == ["Conv2d", "BlockBatchNorm2d"]
            elif any(shortcut is s for s in pooled):
                assert _kinds(shortcut) == ["AvgPool2d", "Conv2d", "BlockBatchNorm2d"]
                assert shortcut[0].kernel_size == shortcut[0].stride == 2 and conv.stride == (1, 1)
            else:  # the first bottleneck stage widens without striding: there is nothing to pool
                assert _kinds(shortcut) == ["Conv2d", "BlockBatchNorm2d"] and conv.stride == (1, 1)


@pytest.mark.parametrize("name", sorted(ORIGINAL_TYPES))
def test_both_types_have_equal_parameter_counts(name):
    count = {d: sum(p.numel() for p in build_model(name, 4, 10, downsample=d).parameters()) for d in "BC"}
    assert count["B"] == count["C"]


def test_resnet18_type_c_has_11_17_million_parameters_and_three_pooled_shortcuts():
    model = build_model("resnet18", 64, 10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert [_kinds(s)[0] for s in _shortcuts(model)] == ["AvgPool2d"] * 3


def test_type_c_block_equals_avgpool_conv_bn_by_hand_in_float64():
    torch.manual_seed(0)
    block = BasicBlock(4, 8, stride=2, downsample="C").double().train()
    for module in block.modules():  # non-trivial affine BatchNorm parameters
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    x = torch.randn(6, 4, 16, 16, dtype=torch.float64)

    def batchnorm(t, bn):  # train mode: batch statistics, biased variance
        mean, var = t.mean((0, 2, 3), keepdim=True), t.var((0, 2, 3), unbiased=False, keepdim=True)
        return (t - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)

    pooled = (x[:, :, 0::2, 0::2] + x[:, :, 1::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 1::2]) / 4
    shortcut_conv, shortcut_bn = block.shortcut[1], block.shortcut[2]
    shortcut = batchnorm(torch.einsum("oi,bihw->bohw", shortcut_conv.weight[:, :, 0, 0], pooled), shortcut_bn)
    main = torch.relu(batchnorm(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    main = batchnorm(F.conv2d(main, block.conv2.weight, padding=1), block.bn2)
    expected = torch.relu(main + shortcut)
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    # type B on the same weights reads one pixel of four instead: a different function
    typed_b = BasicBlock(4, 8, stride=2, downsample="B").double().train()
    state = {k.replace("shortcut.1.", "shortcut.0.").replace("shortcut.2.", "shortcut.1."): v
             for k, v in block.state_dict().items()}
    typed_b.load_state_dict(state)
    assert (typed_b(x) - expected).abs().max() > 1e-3


def test_unknown_type_and_non_resnets_are_refused():
    with pytest.raises(ValueError, match="expected one of"):
        build_model("resnet18", 4, 10, downsample="A")
    with pytest.raises(ValueError, match="only ResNets"):
        build_model("vgg11", 4, 10, downsample="C")
