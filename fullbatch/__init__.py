"""fullbatch: image classifiers trained with exact full-batch gradients, beside an SGD baseline."""
from fullbatch.models.modules import GradRegularizer

__all__ = ["GradRegularizer"]
