"""Training curves of one or more runs: train and validation cross-entropy and the full loss over the steps,
with clipped steps marked, and (when measured by analysis=sharpness/full) the top Hessian eigenvalue against 2/lr.

    python -m fullbatch.visualization.curves outputs/fb/2026-11-23/10-00-00/ [more run folders] [--out curves.png]
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _label(run_dir):
    summary = os.path.join(run_dir, "summary.json")
    if os.path.isfile(summary):
        with open(summary) as handle:
            return json.load(handle).get("name", run_dir)
    return os.path.basename(os.path.normpath(run_dir))


def _values(rows, key):
    points = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(run_dirs, out):
    """Losses of every run; a second panel with sharpness against 2/lr when the runs measured it."""
    runs = [(read_metrics(run_dir), _label(run_dir)) for run_dir in run_dirs]
    sharpness = any("top_eigenvalue" in row for rows, _ in runs for row in rows)
    figure, axes = plt.subplots(1, 2 if sharpness else 1, figsize=(14 if sharpness else 8, 5), squeeze=False)
    axis = axes[0][0]
    for rows, label in runs:
        steps, train = _values(rows, "train_loss")
        line, = axis.plot(steps, train, label=f"{label}: train")
        axis.plot(*_values(rows, "val_loss"), "--", color=line.get_color(), label=f"{label}: validation")
        axis.plot(*_values(rows, "full_loss"), ":", color=line.get_color(), label=f"{label}: full loss")
        clipped = [(row["step"], row["train_loss"]) for row in rows
                   if row.get("clipped") is True and isinstance(row.get("train_loss"), (int, float))]
        if clipped:
            axis.scatter(*zip(*clipped), marker="x", s=14, color=line.get_color(), label=f"{label}: clipped step")
        if sharpness:
            line2, = axes[0][1].plot(*_values(rows, "top_eigenvalue"), "o-", label=f"{label}: top Hessian eigenvalue")
            axes[0][1].plot(*_values(rows, "two_over_lr"), "--", color=line2.get_color(), label=f"{label}: 2 / lr")
    axis.set(xlabel="step", ylabel="cross-entropy", yscale="log")
    axis.legend(fontsize=8)
    if sharpness:
        axes[0][1].set(xlabel="step", ylabel="sharpness", yscale="symlog")
        axes[0][1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="Plot the training curves of run folders.")
    parser.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    parser.add_argument("--out", help="PNG path (default: curves.png in the first run folder)")
    args = parser.parse_args(argv)
    print(plot_curves(args.runs, args.out or os.path.join(args.runs[0], "curves.png")))


if __name__ == "__main__":
    main()
