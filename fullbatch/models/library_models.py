"""VGG and DenseNet from torchvision, adapted to 32x32 inputs, and a linear baseline.

VGG (11/13/16/19 with BatchNorm): torchvision's convolutional stack, whose five max-pools take 32x32 to 1x1,
and a single linear CIFAR head. DenseNet (121/161/169/201): torchvision's network with a CIFAR stem (3x3
convolution, no max-pool). `width` scales channels relative to the standard 64 (VGG's first stage, DenseNet's
stem; DenseNet's growth rate scales alike). Their BatchNorm layers become BlockBatchNorm2d, so merged blocks
keep per-block statistics for them too.
"""
import torch
from torch import nn
from torchvision.models import DenseNet
from torchvision.models.vgg import cfgs as vgg_layouts
from torchvision.models.vgg import make_layers

from fullbatch.models.ghost_batchnorm import BlockBatchNorm2d

VGG_LAYOUTS = {11: "A", 13: "B", 16: "D", 19: "E"}
DENSENETS = {  # depth: (growth rate, blocks, stem features) of the standard networks
    121: (32, (6, 12, 24, 16), 64),
    161: (48, (6, 12, 36, 24), 96),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
}


def with_block_batchnorm(module):
    """Replace every nn.BatchNorm2d below `module` by a BlockBatchNorm2d with the same settings and values."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = BlockBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                           child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            with_block_batchnorm(child)
    return module


def _scaled(channels, width):
    return max(1, round(channels * width / 64))


class VGG(nn.Module):
    def __init__(self, depth, width=64, num_classes=10):
        super().__init__()
        layout = [v if v == "M" else _scaled(v, width) for v in vgg_layouts[VGG_LAYOUTS[depth]]]
        self.features = with_block_batchnorm(make_layers(layout, batch_norm=True))
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1x1 already for 32x32 inputs; averages larger ones
        self.classifier = nn.Linear(layout[-2], num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg(depth, width, num_classes, image_size=32):
    return VGG(depth, width, num_classes)


def densenet(depth, width, num_classes, image_size=32):
    growth, blocks, stem = DENSENETS[depth]
    model = DenseNet(_scaled(growth, width), blocks, _scaled(stem, width), num_classes=num_classes)
    model.features.conv0 = nn.Conv2d(3, _scaled(stem, width), 3, 1, 1, bias=False)
    model.features.pool0 = nn.Identity()
    return with_block_batchnorm(model)


class Linear(nn.Module):
    """Logistic regression on the pixels: a sanity baseline with a convex loss."""

    def __init__(self, num_classes=10, image_size=32):
        super().__init__()
        self.fc = nn.Linear(3 * image_size * image_size, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


def linear(width, num_classes, image_size=32):
    return Linear(num_classes, image_size)
