"""Figures from saved landscape data: 1-D curves of several models overlaid (Fig. 1/4 style), 2-D contour plots
with a colorbar; the flatness number of each model in its legend entry or title; PNG and PDF.

    python -m fullbatch.visualization.plots outputs/landscape/.../landscape.npz   # re-plot, no recomputation
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from fullbatch.visualization.curves import plain_log_axis, save_figure  # noqa: E402
from fullbatch.visualization.flatness import flatness  # noqa: E402

QUANTITIES = ("train_loss", "train_acc", "val_loss", "val_acc")


def _saved_config(data):
    try:
        return yaml.safe_load(str(data["config"])) or {}
    except (KeyError, yaml.YAMLError):
        return {}


def _title(data, kind):
    config = _saved_config(data)
    viz, dataset = config.get("viz", {}), config.get("data", {}).get("name", "?")
    counts = f"train {viz.get('train_examples') or 'all'}, validation {viz.get('val_examples') or 'all'} examples"
    return (f"{kind} loss landscape on {dataset} ({counts}), {viz.get('normalization', 'filter')}-normalized "
            f"direction{'s' if kind == '2-D' else ''}")


def _radius(data):
    return float(_saved_config(data).get("viz", {}).get("flatness_radius", 0.5))


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


def plot_saved(npz_path, out=None):
    """Draw the figure for a saved landscape.npz; return the PNG path (a PDF is written beside it)."""
    data = dict(np.load(npz_path, allow_pickle=False))
    data["labels"] = [str(label) for label in data["labels"]]
    out = out or os.path.join(os.path.dirname(npz_path), "landscape.png")
    (plot_2d if "betas" in data else plot_1d)(data, out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Re-plot a saved loss landscape.")
    parser.add_argument("landscape", help="landscape.npz written by crunch_loss_landscape.py")
    parser.add_argument("--out", help="PNG path (default: landscape.png beside the data); a PDF goes beside it")
    args = parser.parse_args(argv)
    print(plot_saved(args.landscape, args.out))


if __name__ == "__main__":
    main()
