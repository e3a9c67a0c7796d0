"""Named limits that more than one check enforces, and the device names a run accepts, defined once."""

SEED_LIMIT = 2**32          # torch and NumPy seeds lie in [0, 2**32)
SEED_RANGE = "an integer in [0, 2**32)"
MAX_MODEL_WIDTH = 4096      # model.width; wider gives no CIFAR model that fits a GPU
SYNTHETIC_MAX = 100_000     # images of the synthetic set: it is drawn in memory (about 25 kB per image meanwhile)
MAX_CLASSES = 100_000       # data.classes; more is a typo, and the output layer alone would not fit
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def is_device_name(device):
    """Whether `device` names a device a run accepts (auto, cpu, cuda, cuda:N): impl.device and the tools'
    --device are checked by this one rule."""
    index = device[5:] if device.startswith("cuda:") else None
    return device in ("auto", "cpu", "cuda") or (bool(index) and index.isascii() and index.isdecimal())
