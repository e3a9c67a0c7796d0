"""ResNets with the CIFAR stem (3x3 convolution, no max-pool) and a configurable base width.

Two families: the ImageNet depths (18/34 with basic blocks, 50/101/152 with bottlenecks; four stages of
width w, 2w, 4w, 8w) and the CIFAR depths of He et al. (20/32/56/110; three stages of w, 2w, 4w).
A shortcut that changes shape is one of two types (`downsample`), as in the original code's model configs:
  B: a 1x1 convolution with the block's stride, then BatchNorm (He et al. 2016);
  C: AvgPool2d(stride), then a 1x1 convolution with stride 1, then BatchNorm ("ResNet-D", He et al. 2019),
     which averages the 2x2 window instead of reading one pixel of four.
The original builds type C for every depth except ResNet-20, which gets type B; the parameter counts agree.
"""
import torch
from torch import nn

from fullbatch.config.choices import Downsample
from fullbatch.models.ghost_batchnorm import BlockBatchNorm2d

DOWNSAMPLE_TYPES = tuple(choice.value for choice in Downsample)


def default_downsample(depth):
    """The original's shortcut type for this depth: B for ResNet-20 only, C for all others."""
    return "B" if depth == 20 else "C"


def _shortcut(in_planes, out_planes, stride, downsample):
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if downsample == "B":
        return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), BlockBatchNorm2d(out_planes))
    pool = [nn.AvgPool2d(stride)] if stride > 1 else []  # a 1x1 pool is the identity: leave it out
    return nn.Sequential(*pool, nn.Conv2d(in_planes, out_planes, 1, 1, bias=False), BlockBatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, downsample="B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = BlockBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = BlockBatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride, downsample)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1, downsample="B"):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = BlockBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = BlockBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = BlockBatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride, downsample)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """`stage_blocks[i]` blocks at width `width * 2**i`; the first stage keeps resolution, the others halve it."""

    def __init__(self, block, stage_blocks, width=64, num_classes=10, downsample="B"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), BlockBatchNorm2d(width), nn.ReLU())
        stages, in_planes = [], width
        for index, count in enumerate(stage_blocks):
            planes = width * 2**index
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                stages.append(block(in_planes, planes, stride, downsample))
                in_planes = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        features = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(features, 1))


IMAGENET_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
CIFAR_DEPTHS = (20, 32, 56, 110)


def resnet(depth, width, num_classes, image_size=32, downsample=None):
    """Build a ResNet of one of the depths above (any image size: the head pools adaptively).

    `downsample` is the shortcut type, B or C; None takes the original's choice for the depth."""
    downsample = default_downsample(depth) if downsample is None else str(downsample)
    if downsample not in DOWNSAMPLE_TYPES:
        raise ValueError(f"downsample={downsample!r} is not known: expected one of {DOWNSAMPLE_TYPES}")
    if depth in IMAGENET_DEPTHS:
        block, stage_blocks = IMAGENET_DEPTHS[depth]
        return ResNet(block, stage_blocks, width, num_classes, downsample)
    if depth in CIFAR_DEPTHS:
        per_stage = (depth - 2) // 6
        return ResNet(BasicBlock, (per_stage,) * 3, width, num_classes, downsample)
    raise ValueError(f"no ResNet of depth {depth}; known: {sorted(IMAGENET_DEPTHS) + list(CIFAR_DEPTHS)}")
