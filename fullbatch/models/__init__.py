"""Model definitions, the registry, and the gradient regularizer."""
from fullbatch.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
