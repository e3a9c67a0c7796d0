"""The original repository's import path for the regularizer: `from fullbatch.models.modules import
GradRegularizer`. It lives in `fullbatch.training.regularizer`; this alias only forwards to it, and nothing in
the package imports through here."""


def __getattr__(name):
    if name == "GradRegularizer":
        from fullbatch.training.regularizer import GradRegularizer

        return GradRegularizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
