"""Figures from saved landscape data: 1D curves of several models overlaid, 2D contour plots.

    python -m fullbatch.visualization.plots outputs/landscape/.../landscape.npz   # re-plot, no recomputation
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

QUANTITIES = ("train_loss", "train_acc", "val_loss", "val_acc")


def plot_1d(data, path):
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    alphas = data["alphas"]
    for index, label in enumerate(data["labels"]):
        line, = loss_axis.plot(alphas, data["train_loss"][index], label=f"{label} (train)")
        loss_axis.plot(alphas, data["val_loss"][index], "--", color=line.get_color(), label=f"{label} (validation)")
        acc_axis.plot(alphas, 100 * data["train_acc"][index], color=line.get_color(), label=f"{label} (train)")
        acc_axis.plot(alphas, 100 * data["val_acc"][index], "--", color=line.get_color())
    loss_axis.set(xlabel="step along the normalized direction", ylabel="cross-entropy", yscale="log")
    acc_axis.set(xlabel="step along the normalized direction", ylabel="accuracy (%)", ylim=(0, 100))
    loss_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_2d(data, path):
    count = len(data["labels"])
    figure, axes = plt.subplots(1, count, figsize=(5 * count, 4.2), squeeze=False)
    grid_x, grid_y = np.meshgrid(data["alphas"], data["betas"], indexing="ij")
    for axis, label, loss in zip(axes[0], data["labels"], data["train_loss"]):
        contours = axis.contour(grid_x, grid_y, np.log10(loss), levels=20)
        axis.clabel(contours, fontsize=6)
        axis.plot([0], [0], "k+")
        axis.set(title=f"{label}: log10 train loss", xlabel="direction 1", ylabel="direction 2")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_saved(npz_path, out=None):
    """Draw the figure for a saved landscape.npz; return the PNG path."""
    data = dict(np.load(npz_path, allow_pickle=False))
    data["labels"] = [str(label) for label in data["labels"]]
    out = out or os.path.join(os.path.dirname(npz_path), "landscape.png")
    (plot_2d if "betas" in data else plot_1d)(data, out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Re-plot a saved loss landscape.")
    parser.add_argument("landscape", help="landscape.npz written by crunch_loss_landscape.py")
    parser.add_argument("--out", help="PNG path (default: landscape.png beside the data)")
    args = parser.parse_args(argv)
    print(plot_saved(args.landscape, args.out))


if __name__ == "__main__":
    main()
