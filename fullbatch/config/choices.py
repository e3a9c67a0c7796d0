"""Every named choice of the config, defined once, as the types of the schema's fields.

Hydra and OmegaConf check a value against these while composing, so `hyp.scheduler=cosine` fails with the
allowed values in the message before any work; the code that acts on a choice dispatches on the same Enum
(registries keyed by its members), so a name cannot be added to one place and forgotten in the other.
Members are strings named exactly as in the YAML files (`Scheduler("cosine-4000") == "cosine-4000"`).
"""
from enum import Enum


class Choice(str, Enum):
    """A str Enum that prints as its value, so messages, tables and JSON show `cosine-4000`."""

    def __str__(self):
        return str.__str__(self)

    def __repr__(self):
        return repr(str.__str__(self))

    def __format__(self, spec):
        return str.__format__(self, spec)


def _choice(name, values, doc):
    choice = Choice(name, {value: value for value in values}, module=__name__)
    choice.__doc__ = doc
    return choice


Scheduler = _choice("Scheduler", ("cosine-decay", "cosine-4000", "linear", "none"), "hyp.scheduler")
Optimizer = _choice("Optimizer", ("SGD", "AdamW", "LBFGS"), "hyp.optim.name")
LineSearch = _choice("LineSearch", ("armijo", "strong_wolfe"), "hyp.optim.line_search (SGD / LBFGS)")
Modification = _choice("Modification", ("none", "SAM", "LARS", "LARC"), "hyp/optim_modification")
RegularizerMethod = _choice("RegularizerMethod", ("forward-differences", "central-differences", "autograd",
                                                  "autograd-pen", "finite_diff"),
                            "hyp.grad_reg.implementation (finite_diff: forward-differences)")
RegularizerPrecision = _choice("RegularizerPrecision", ("full", "compute"), "hyp.grad_reg.precision")
Dataset = _choice("Dataset", ("CIFAR10", "CIFAR100", "TinyImageNet", "synthetic"), "data.name")
Database = _choice("Database", ("none", "LMDB"), "data/db")
Subset = _choice("Subset", ("first", "balanced"), "data.subset")
Tracker = _choice("Tracker", ("none", "tensorboard", "wandb"), "logger")
Downsample = _choice("Downsample", ("B", "C"), "model.downsample (ResNets)")
Dtype = _choice("Dtype", ("float32", "float64"), "impl.dtype")
MemoryFormat = _choice("MemoryFormat", ("contiguous", "channels_last"), "impl.memory")
CompileMode = _choice("CompileMode", ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                      "impl.compile_mode")
Setup = _choice("Setup", ("single", "distributed"), "impl/setup")
Backend = _choice("Backend", ("auto", "nccl", "gloo"), "impl.setup.backend")
OnDivergence = _choice("OnDivergence", ("stop", "restore"), "impl.checkpoint.on_divergence")
Objective = _choice("Objective", ("final_val_acc", "best_val_acc", "final_val_loss", "final_train_acc",
                                  "final_train_loss"), "objective")
AnalysisPreset = _choice("AnalysisPreset", ("none", "final", "limited", "full", "sharpness"), "analysis")
