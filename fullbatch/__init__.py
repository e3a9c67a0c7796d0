"""fullbatch: image classifiers trained with exact full-batch gradients, beside an SGD baseline.

`from fullbatch import GradRegularizer` loads the regularizer (and PyTorch) on first use, so that tools which
only compose or check a config start in a second."""

__all__ = ["GradRegularizer"]


def __getattr__(name):
    if name == "GradRegularizer":
        from fullbatch.training.regularizer import GradRegularizer

        return GradRegularizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
