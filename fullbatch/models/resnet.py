"""ResNets with the CIFAR stem (3x3 convolution, no max-pool) and a configurable base width.

Two families: the ImageNet depths (18/34 with basic blocks, 50/101/152 with bottlenecks; four stages of
width w, 2w, 4w, 8w) and the CIFAR depths of He et al. (20/32/56/110; three stages of w, 2w, 4w).
Shortcuts change shape through a 1x1 convolution with BatchNorm.
"""
import torch
from torch import nn

from fullbatch.models.ghost_batchnorm import BlockBatchNorm2d


def _shortcut(in_planes, out_planes, stride):
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), BlockBatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = BlockBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = BlockBatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = BlockBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = BlockBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = BlockBatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """`stage_blocks[i]` blocks at width `width * 2**i`; the first stage keeps resolution, the others halve it."""

    def __init__(self, block, stage_blocks, width=64, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), BlockBatchNorm2d(width), nn.ReLU())
        stages, in_planes = [], width
        for index, count in enumerate(stage_blocks):
            planes = width * 2**index
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                stages.append(block(in_planes, planes, stride))
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


def resnet(depth, width, num_classes, image_size=32):
    """Build a ResNet of one of the depths above (any image size: the head pools adaptively)."""
    if depth in IMAGENET_DEPTHS:
        block, stage_blocks = IMAGENET_DEPTHS[depth]
        return ResNet(block, stage_blocks, width, num_classes)
    if depth in CIFAR_DEPTHS:
        per_stage = (depth - 2) // 6
        return ResNet(BasicBlock, (per_stage,) * 3, width, num_classes)
    raise ValueError(f"no ResNet of depth {depth}; known: {sorted(IMAGENET_DEPTHS) + list(CIFAR_DEPTHS)}")
