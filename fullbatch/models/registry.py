"""Models by name: the one place that maps `model.name` to a constructor(width, num_classes, image_size).

ResNets also take `downsample` (their shortcut type); `RESNETS` names the models that do."""
from functools import partial

from fullbatch.models.library_models import DENSENETS, VGG_LAYOUTS, densenet, linear, vgg
from fullbatch.models.resnet import CIFAR_DEPTHS, IMAGENET_DEPTHS, resnet

RESNETS = frozenset(f"resnet{depth}" for depth in (*IMAGENET_DEPTHS, *CIFAR_DEPTHS))
MODELS = {
    **{f"resnet{depth}": partial(resnet, depth) for depth in (*IMAGENET_DEPTHS, *CIFAR_DEPTHS)},
    **{f"vgg{depth}": partial(vgg, depth) for depth in VGG_LAYOUTS},
    **{f"densenet{depth}": partial(densenet, depth) for depth in DENSENETS},
    "linear": linear,
}


def build_model(name, width, num_classes, image_size=32, downsample=None):
    """`downsample=None` gives a ResNet the original's shortcut type for its depth; other models take none."""
    if name not in MODELS:
        raise KeyError(f"model.name={name!r} is not known: expected one of {sorted(MODELS)}")
    if name in RESNETS:
        return MODELS[name](width=width, num_classes=num_classes, image_size=image_size, downsample=downsample)
    if downsample is not None:
        raise ValueError(f"downsample={downsample!r} is not allowed for {name}: only ResNets have that shortcut")
    return MODELS[name](width=width, num_classes=num_classes, image_size=image_size)
