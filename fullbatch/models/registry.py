"""Models by name: the one place that maps `model.name` to a constructor(width, num_classes, image_size)."""
from functools import partial

from fullbatch.models.library_models import DENSENETS, VGG_LAYOUTS, densenet, linear, vgg
from fullbatch.models.resnet import CIFAR_DEPTHS, IMAGENET_DEPTHS, resnet

MODELS = {
    **{f"resnet{depth}": partial(resnet, depth) for depth in (*IMAGENET_DEPTHS, *CIFAR_DEPTHS)},
    **{f"vgg{depth}": partial(vgg, depth) for depth in VGG_LAYOUTS},
    **{f"densenet{depth}": partial(densenet, depth) for depth in DENSENETS},
    "linear": linear,
}


def build_model(name, width, num_classes, image_size=32):
    if name not in MODELS:
        raise KeyError(f"model.name={name!r} is not known: expected one of {sorted(MODELS)}")
    return MODELS[name](width=width, num_classes=num_classes, image_size=image_size)
