"""Reading files without running code from them.

Pickle files can execute anything when they are read, and researchers load data and checkpoints they
downloaded or were sent. CIFAR's python batches are read with an unpickler that only rebuilds dicts, lists,
strings, bytes, numbers and NumPy arrays; checkpoints and models with PyTorch's `weights_only` loader, which
rebuilds tensors and plain containers only (everything this project's checkpoints hold)."""
import pickle

# the globals a NumPy array's pickle names (NumPy 1 and 2 spell its module differently), and the one Python 3
# uses for bytes in protocol 2 files
ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                 ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                 ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class ForbiddenContent(pickle.UnpicklingError):
    """A pickle names a global outside the allowed data types: reading it further could run its code."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ARRAY_GLOBALS:
            raise ForbiddenContent(f"it refers to {module}.{name}, which plain data never needs; it was not loaded")
        return super().find_class(module, name)


def load_data_pickle(handle, encoding="latin1"):
    """pickle.load for data files: only plain containers, numbers, strings, bytes and NumPy arrays."""
    return _DataUnpickler(handle, encoding=encoding).load()


def load_weights(path, map_location):
    """torch.load with `weights_only=True`: tensors, numbers, strings and containers; anything else raises
    pickle.UnpicklingError before any of it runs."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)
