"""Model definitions (CIFAR ResNets, VGG, DenseNet, linear), the registry and per-block BatchNorm. May import:
errors, progress, config, files, data."""
from fullbatch.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
