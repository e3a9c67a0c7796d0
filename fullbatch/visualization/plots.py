"""Figures from saved landscape data: 1-D curves of several models overlaid (Fig. 1/4 style), 2-D contour plots
with a colorbar; the flatness number of each model in its legend entry or title; PNG and PDF.

    python -m fullbatch.visualization.plots outputs/landscape/.../landscape.npz   # re-plot, no recomputation
"""
import os
import sys
import zipfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from fullbatch.cli import OneLineParser  # noqa: E402
from fullbatch.errors import ConfigError, ExitCode, refusal, report  # noqa: E402
from fullbatch.visualization.curves import plain_log_axis, save_figure  # noqa: E402
from fullbatch.visualization.flatness import flatness  # noqa: E402

QUANTITIES = ("train_loss", "train_acc", "val_loss", "val_acc")


def _saved_config(data):
    try:
        config = yaml.safe_load(str(data["config"]))
    except (KeyError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _section(data, name):
    section = _saved_config(data).get(name)
    return section if isinstance(section, dict) else {}


def _title(data, kind):
    viz, dataset = _section(data, "viz"), _section(data, "data").get("name", "?")
    counts = f"train {viz.get('train_examples') or 'all'}, validation {viz.get('val_examples') or 'all'} examples"
    return (f"{kind} loss landscape on {dataset} ({counts}), {viz.get('normalization', 'filter')}-normalized "
            f"direction{'s' if kind == '2-D' else ''}")


def _radius(data):
    radius = _section(data, "viz").get("flatness_radius", 0.5)
    return float(radius) if isinstance(radius, (int, float)) else 0.5


def plot_1d(data, path):
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(12, 4.6))
    alphas, radius = data["alphas"], _radius(data)
    rise = flatness(data, radius)
    for index, label in enumerate(data["labels"]):
        number = rise[str(label)]["loss_increase"]
        line, = loss_axis.plot(alphas, data["train_loss"][index], label=f"{label} (train; +{number:.3g} at {radius})")
        loss_axis.plot(alphas, data["val_loss"][index], "--", color=line.get_color(), label=f"{label} (validation)")
        acc_axis.plot(alphas, 100 * data["train_acc"][index], color=line.get_color(), label=f"{label} (train)")
        acc_axis.plot(alphas, 100 * data["val_acc"][index], "--", color=line.get_color(), label=f"{label} (validation)")
    loss_axis.set(xlabel="distance along the normalized direction", ylabel="cross-entropy")
    plain_log_axis(loss_axis)
    acc_axis.set(xlabel="distance along the normalized direction", ylabel="accuracy (%)", ylim=(0, 100))
    loss_axis.legend(fontsize=7, title=f"flatness: train-loss rise at distance {radius}", title_fontsize=7)
    acc_axis.legend(fontsize=7)
    figure.suptitle(_title(data, "1-D"), fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def plot_2d(data, path):
    count = len(data["labels"])
    figure, axes = plt.subplots(1, count, figsize=(5.6 * count, 4.8), squeeze=False, layout="constrained")
    grid_x, grid_y = np.meshgrid(data["alphas"], data["betas"], indexing="ij")
    radius = _radius(data)
    rise = flatness(data, radius)
    for axis, label, loss in zip(axes[0], data["labels"], data["train_loss"]):
        filled = axis.contourf(grid_x, grid_y, np.log10(loss), levels=20, cmap="viridis")
        axis.contour(grid_x, grid_y, np.log10(loss), levels=10, colors="white", linewidths=0.5)
        axis.plot([0], [0], "w+", markersize=10)
        figure.colorbar(filled, ax=axis, label="log10 train loss")
        axis.set(title=f"{label}\n+{rise[str(label)]['loss_increase']:.3g} at distance {radius}",
                 xlabel="direction 1", ylabel="direction 2")
    figure.suptitle(_title(data, "2-D"), fontsize=10)
    save_figure(figure, path)


def _refuse(npz_path, problem):
    return refusal("landscape", npz_path, problem)


def load_landscape(npz_path):
    """The arrays of a saved landscape.npz, checked against each other: a damaged or foreign file fails in one
    line instead of somewhere in matplotlib. Nothing pickled is read."""
    if os.path.exists(npz_path) and not os.path.isfile(npz_path):  # a pipe would make np.load wait for ever
        raise _refuse(npz_path, "it is not a regular file")
    try:
        with np.load(npz_path, allow_pickle=False) as saved:
            data = dict(saved)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _refuse(npz_path, f"it cannot be read as a .npz file ({type(error).__name__})") from None
    except (AttributeError, TypeError):  # a plain .npy array: no context manager, no named arrays
        raise _refuse(npz_path, "it is not a .npz file of named arrays") from None
    missing = [key for key in ("alphas", "labels", *QUANTITIES) if key not in data]
    if missing:
        raise _refuse(npz_path, f"it lacks {', '.join(missing)}: expected a landscape.npz of crunch_loss_landscape.py")
    if data["labels"].ndim != 1:
        raise _refuse(npz_path, "its labels are not a list of names")
    axes = (data["alphas"], data["betas"]) if "betas" in data else (data["alphas"],)
    if any(axis.ndim != 1 or len(axis) < 2 or not np.issubdtype(axis.dtype, np.number) for axis in axes):
        raise _refuse(npz_path, "its coordinates (alphas, betas) are not lists of at least two numbers")
    shape = (len(data["labels"]), *(len(axis) for axis in axes))
    wrong = [key for key in QUANTITIES if data[key].shape != shape or not np.issubdtype(data[key].dtype, np.number)]
    if wrong:
        raise _refuse(npz_path, f"{', '.join(wrong)} do not match its labels and coordinates {shape}")
    data["labels"] = [str(label) for label in data["labels"]]
    return data


def plot_saved(npz_path, out=None):
    """Draw the figure for a saved landscape.npz; return the PNG path (a PDF is written beside it)."""
    data = load_landscape(npz_path)
    out = out or os.path.join(os.path.dirname(npz_path), "landscape.png")
    (plot_2d if "betas" in data else plot_1d)(data, out)
    return out


def main(argv=None):
    parser = OneLineParser(description="Re-plot a saved loss landscape.")
    parser.add_argument("landscape", help="landscape.npz written by crunch_loss_landscape.py")
    parser.add_argument("--out", help="PNG path (default: landscape.png beside the data); a PDF goes beside it")
    args = parser.parse_args(argv)
    try:
        print(plot_saved(args.landscape, args.out))
    except ConfigError as error:
        _fail(error)
    except OSError as error:  # the figure cannot be written there
        key, value = ("--out", args.out) if args.out else ("landscape", args.landscape)
        _fail(f"{key}={value!r} is not allowed: the figure cannot be written there "
              f"({error.strerror or type(error).__name__})")


def _fail(message):
    sys.exit(report(message, ExitCode.BAD_INPUT))


if __name__ == "__main__":
    main()
