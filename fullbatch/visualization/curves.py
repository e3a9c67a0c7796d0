"""Training curves in the style of the paper's Fig. 2/3: train, validation and full loss over the steps with
clipped steps in black, train and validation accuracy, and (when measured by analysis=sharpness/full) the top
Hessian eigenvalue against 2/lr. A run resumed from another is drawn as one curve; runs are labelled by what
differs between them. Saved as PNG and PDF.

    python -m fullbatch.visualization.curves outputs/fb/2026-11-23/10-00-00-pid1/ [more run folders] [--out c.png]
"""
import logging
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from fullbatch.cli import OneLineParser  # noqa: E402
from fullbatch.errors import ExitCode, report  # noqa: E402
from fullbatch.visualization.runs import distinguishing_labels, joined_metrics, newest_of_chains  # noqa: E402


def _values(rows, key, scale=1.0):
    points = [(row["step"], scale * row[key]) for row in rows if isinstance(row.get(key), (int, float))
              and not isinstance(row.get(key), bool)]
    return [p[0] for p in points], [p[1] for p in points]


class _PlainLogFormatter(LogFormatter):
    """Matplotlib's choice of which log ticks to label, written as plain numbers (0.3, 2) not 3e-01 or 2x10^0."""

    def __call__(self, value, pos=None):
        return f"{value:g}" if super().__call__(value, pos) else ""


def plain_log_axis(axis):
    """A log y-axis whose ticks read as plain numbers; minor ticks are labelled only over short spans."""
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    axis.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def save_figure(figure, out):
    """PNG for reading, PDF (vector) beside it for papers; returns the PNG path."""
    figure.savefig(out, dpi=120)
    figure.savefig(os.path.splitext(out)[0] + ".pdf")
    plt.close(figure)
    return out


def plot_curves(run_dirs, out, title=None):
    """Loss and accuracy panels for every run (one curve per resume chain), and sharpness when measured."""
    run_dirs = newest_of_chains(list(run_dirs))
    runs = list(zip([joined_metrics(run_dir) for run_dir in run_dirs], distinguishing_labels(run_dirs)))
    sharpness = any("top_eigenvalue" in row for rows, _ in runs for row in rows)
    panels = 3 if sharpness else 2
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5), squeeze=False)
    loss_axis, acc_axis = axes[0][0], axes[0][1]
    for rows, label in runs:
        line, = loss_axis.plot(*_values(rows, "train_loss"), label=f"{label}: train")
        color = line.get_color()
        loss_axis.plot(*_values(rows, "val_loss"), "o--", markersize=3, color=color, label=f"{label}: validation")
        loss_axis.plot(*_values(rows, "full_loss"), ":", color=color, label=f"{label}: full loss")
        clipped = [(row["step"], row["train_loss"]) for row in rows
                   if row.get("clipped") is True and isinstance(row.get("train_loss"), (int, float))]
        if clipped:
            loss_axis.scatter(*zip(*clipped), marker="x", s=16, color="black", zorder=3,
                              label=f"{label}: clipped step")
        acc_axis.plot(*_values(rows, "train_acc", 100), color=color, label=f"{label}: train")
        acc_axis.plot(*_values(rows, "val_acc", 100), "o--", markersize=3, color=color, label=f"{label}: validation")
        if sharpness:
            eigen, = axes[0][2].plot(*_values(rows, "top_eigenvalue"), "o-", markersize=3, color=color,
                                     label=f"{label}: top Hessian eigenvalue")
            axes[0][2].plot(*_values(rows, "two_over_lr"), "--", color=eigen.get_color(), label=f"{label}: 2 / lr")
    loss_axis.set(xlabel="step", ylabel="cross-entropy", title="loss")
    plain_log_axis(loss_axis)
    acc_axis.set(xlabel="step", ylabel="accuracy (%)", ylim=(0, 100), title="accuracy")
    for axis in axes[0][:2]:
        axis.legend(fontsize=7)
    if sharpness:
        axes[0][2].set(xlabel="step", ylabel="sharpness", yscale="symlog", title="sharpness")
        axes[0][2].legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, out)


def run_folder_problem(run_dir):
    """Why `run_dir` cannot be drawn (no folder, no metrics.jsonl file), or None."""
    if not os.path.isdir(run_dir):
        return f"{run_dir} is not allowed: expected a run folder" + ("" if os.path.exists(run_dir) else
                                                                      " (it does not exist)")
    if not os.path.isfile(os.path.join(run_dir, "metrics.jsonl")):
        return f"{run_dir} is not allowed: expected a run folder holding a metrics.jsonl file"
    return None


def out_problem(out):
    """Why the figure cannot be written to `out` (its folder is missing or is a file, or `out` is a folder)."""
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        return f"--out={out} is not allowed: expected a file name, not a folder"
    if not os.path.isdir(folder):
        return f"--out={out} is not allowed: its folder {folder} does not exist"
    return None


def main(argv=None):
    parser = OneLineParser(description="Plot the training curves of run folders.")
    parser.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    parser.add_argument("--out", help="PNG path (default: curves.png in the first run folder); a PDF goes beside it")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.runs[0], "curves.png")
    problem = next((p for p in map(run_folder_problem, args.runs) if p), None) or out_problem(out)
    if problem:
        return report(problem, ExitCode.BAD_INPUT)
    logging.basicConfig(format="fullbatch: warning: %(message)s")  # a damaged metrics.jsonl: one line naming it
    print(plot_curves(args.runs, out, args.title))
    return ExitCode.DONE


if __name__ == "__main__":
    sys.exit(main())
