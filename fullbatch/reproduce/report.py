"""The report of a scale (`reports/<scale>/`): README.md with the table, results.csv with one line per run, and
figures (PNG and PDF): validation accuracy per row, the training curves of every full-batch row, and 1-D loss
landscapes of every row's final model along directions drawn from one seed (filter-normalised per model)."""
import csv
import logging
import os
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fullbatch.files import atomic_write  # noqa: E402
from fullbatch.reproduce.runner import run_folder  # noqa: E402
from fullbatch.results import mean_std  # noqa: E402
from fullbatch.visualization.curves import plain_log_axis, save_figure  # noqa: E402
from fullbatch.visualization.runs import joined_metrics, read_summary  # noqa: E402

log = logging.getLogger("fullbatch")
PAPER_NOTE = ("The paper's own per-row accuracies are left blank: they could not be checked against the paper's "
              "text here. Its stated finding is that full batch with clipping and the regularizer matches SGD "
              "(about 95.5-96% for ResNet-18 on all of CIFAR-10).")


def collect(root, scale, rows, seeds):
    """{row name: [summary of each seed that ended]} in row order; rows without any are left out."""
    results = {}
    for row in rows:
        ended = [read_summary(run_folder(root, scale, row, seed)) for seed in range(seeds)]
        ended = [summary for summary in ended if summary.get("status") not in (None, "preempted")]
        if ended:
            results[row.name] = ended
    return results


def _accuracies(summaries, key="final_val_acc"):
    return [100 * s[key] for s in summaries if isinstance(s.get(key), (int, float))]


def write_csv(path, rows, results, root="."):
    columns = ["row", "paper_row", "seed", "status", "final_val_acc", "best_val_acc", "steps", "seconds_per_step",
               "wall_time", "device", "git_revision", "output_dir"]

    def write(handle):
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            for summary in results.get(row.name, []):
                values = {key: summary.get(key) for key in columns[3:]}
                values["output_dir"] = os.path.relpath(values["output_dir"], root)  # no machine's paths
                writer.writerow(dict(row=row.name, paper_row=row.label, seed=summary["config"]["seed"], **values))

    atomic_write(path, write, mode="w")


def _against(rows, results, references):
    """(row, reference label, difference of the mean final accuracies, apart) for each row named in `references`
    ({row name: the name of the row it is compared with}); apart: the seeds' accuracy ranges do not overlap, None
    with a single seed on either side, where there is no spread to compare with."""
    labels = {row.name: row.label for row in rows}
    lines = []
    for row in rows:
        other = references.get(row.name)
        if other is None or row.name not in results or other not in results:
            continue
        mine, theirs = _accuracies(results[row.name]), _accuracies(results[other])
        if not mine or not theirs:
            continue
        difference = statistics.fmean(mine) - statistics.fmean(theirs)
        apart = None if min(len(mine), len(theirs)) < 2 else (min(mine) > max(theirs) or max(mine) < min(theirs))
        lines.append((row, labels.get(other, other), difference, apart))
    return lines


def comparisons(rows, results):
    """Each row against the Baseline SGD row of its half (with / without augmentation)."""
    baseline = {True: "sgd", False: "sgd_noaug"}
    return _against(rows, results, {row.name: baseline[row.augmented] for row in rows
                                    if row.name != baseline[row.augmented]})


def ladder(rows, results):
    """Each full-batch row against the one before it in its half, from FB train longer on: what each of the
    paper's rows (longer, clipped, regularized, smaller blocks, shuffled blocks) changed here."""
    references = {}
    for augmented in (True, False):
        half = [row.name for row in rows if row.augmented == augmented and not row.optional]
        references.update(zip(half[2:], half[1:]))
    return _against(rows, results, references)


MATCH_SGD = ("fb_clip", "fb_reg", "fb_strong", "fb_practice", "fb_reg_noaug", "fb_strong_noaug")


def summary_sentences(rows, results):
    """Two plain sentences: the ordering measured, and where it disagrees with the paper's finding (the clipped
    and regularized full-batch rows match SGD; plain full batch falls short of it)."""
    means = {row.name: statistics.fmean(_accuracies(results[row.name])) for row in rows
             if row.name in results and _accuracies(results[row.name])}
    if not means:
        return "No run has ended yet."
    labels = {row.name: row.label for row in rows}
    ranked = sorted(means, key=means.get, reverse=True)
    first = "Ranked by mean final validation accuracy: " + ", ".join(f"{labels[n]} {means[n]:.1f}%" for n in ranked) + "."
    disagreements = []
    for row, baseline, difference, apart in comparisons(rows, results):
        beyond = "beyond the seed spread" if apart else ("one seed, no spread" if apart is None else None)
        if row.name in MATCH_SGD and beyond:
            disagreements.append(f"{row.label} is {abs(difference):.1f} points {'above' if difference > 0 else 'below'}"
                                 f" {baseline} ({beyond})")
        if row.name in ("fb", "fb_noaug") and difference >= 0:
            disagreements.append(f"{row.label} is not below {baseline} ({difference:+.1f} points)")
    second = ("Where this disagrees with the paper's finding (clipped and regularized full batch matches SGD, plain "
              "full batch falls short of it): " + "; ".join(disagreements) + "." if disagreements else
              "Nothing here disagrees with the paper's finding (clipped and regularized full batch matches SGD, "
              "plain full batch falls short of it) beyond the seed spread.")
    return f"{first} {second}"


def accuracy_figure(path, rows, results):
    names = [row for row in rows if row.name in results]
    figure, axis = plt.subplots(figsize=(7.5, 0.35 * len(names) + 1.2))
    for position, row in enumerate(names):
        values = _accuracies(results[row.name])
        if values:
            axis.barh(position, statistics.fmean(values), color="tab:blue" if row.augmented else "tab:orange")
            axis.plot(values, [position] * len(values), "k.", markersize=5)
    axis.set(yticks=range(len(names)), yticklabels=[row.label for row in names],
             xlabel="final validation accuracy (%); bars: mean over seeds, dots: seeds")
    axis.invert_yaxis()
    figure.tight_layout()
    return save_figure(figure, path)


def curves_figure(path, root, scale, rows):
    """Small multiples in the paper's Fig. 2/3 style: train, validation and full loss; clipped steps in black."""
    full_batch = [row for row in rows if "base_sgd" not in row.overrides[0]
                  and os.path.isfile(os.path.join(run_folder(root, scale, row, 0), "metrics.jsonl"))]
    if not full_batch:
        return None
    columns = 4
    lines = (len(full_batch) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines), squeeze=False)
    for axis, row in zip(axes.flat, full_batch):
        metrics = joined_metrics(run_folder(root, scale, row, 0))
        for key, style in (("train_loss", "-"), ("val_loss", "o--"), ("full_loss", ":")):
            points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
            if points:
                axis.plot(*zip(*points), style, markersize=3, label=key.replace("_", " "))
        clipped = [(m["step"], m["train_loss"]) for m in metrics if m.get("clipped") is True]
        if clipped:
            axis.scatter(*zip(*clipped), marker="x", s=10, color="black", zorder=3, label="clipped step")
        axis.set_title(row.label, fontsize=8)
        plain_log_axis(axis)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(full_batch):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    figure.supxlabel("step", fontsize=8)
    figure.supylabel("cross-entropy", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def landscape_figure(report_dir, root, scale, rows, device="auto", extra=()):
    """crunch_loss_landscape's 1-D landscape of every row's final model (seed 0); {label: flatness} or {}."""
    from fullbatch.paths import compose_config
    from fullbatch.visualization.crunch import crunch
    from fullbatch.visualization.flatness import flatness

    ended = [row for row in rows if os.path.isfile(os.path.join(run_folder(root, scale, row, 0), "model.pt"))]
    if not ended:
        return {}
    models = ",".join(os.path.join(run_folder(root, scale, row, 0), "model.pt") for row in ended)
    labels = ",".join(f"'{row.label}'" for row in ended)
    impl = [item for item in extra if item.startswith("impl.")]  # the data comes from the runs themselves
    cfg = compose_config(["viz=1d", f"checkpoints=[{models}]", f"labels=[{labels}]", *scale.landscape,
                          f"impl.device={device}", *impl], config_name="crunch")
    data_dir = os.path.join(root, "outputs", "reproduce", scale.name, "landscape")
    data = crunch(cfg, data_dir)
    rise = {label: values["loss_increase"] for label, values in flatness(data, cfg.viz.flatness_radius).items()}
    _landscape_panels(os.path.join(report_dir, "landscape.png"), data, ended, rise, cfg.viz.flatness_radius)
    return rise


def _landscape_panels(path, data, rows, rise, radius):
    """Train loss along the direction, one panel per half (with / without augmentation), one colour per row, the
    flatness number in each legend entry: 13 overlaid models with validation curves would not be readable."""
    halves = [[row for row in rows if row.augmented], [row for row in rows if not row.augmented]]
    halves = [half for half in halves if half]
    figure, axes = plt.subplots(1, len(halves), figsize=(6.2 * len(halves), 4.4), squeeze=False)
    index = {str(label): position for position, label in enumerate(data["labels"])}
    colours = plt.get_cmap("tab10")
    for axis, half in zip(axes[0], halves):
        for number, row in enumerate(half):
            axis.plot(data["alphas"], data["train_loss"][index[row.label]], color=colours(number),
                      label=f"{row.label}: +{rise[row.label]:.3g}")
        axis.set(xlabel="distance along the filter-normalised direction", ylabel="train loss (cross-entropy)",
                 title="with augmentation" if half[0].augmented else "without augmentation")
        plain_log_axis(axis)
        axis.legend(fontsize=7, title=f"train-loss rise at distance {radius}", title_fontsize=7)
    figure.suptitle("1-D loss landscapes of each row's final model (seed 0); one random direction, drawn from one "
                    "seed and filter-normalised per model", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def write_report(root, scale, rows, seeds, command, report_dir=None, device="auto", landscapes=True, extra=()):
    report_dir = report_dir or os.path.join(root, "reports", scale.name)
    os.makedirs(report_dir, exist_ok=True)
    results = collect(root, scale, rows, seeds)
    write_csv(os.path.join(report_dir, "results.csv"), rows, results, root)
    accuracy_figure(os.path.join(report_dir, "accuracy.png"), rows, results)
    curves_figure(os.path.join(report_dir, "curves.png"), root, scale, rows)
    rise = landscape_figure(report_dir, root, scale, rows, device, extra) if landscapes else {}
    lines = [f"# Reproduction at scale `{scale.name}`", "", f"{scale.description}.", "",
             f"Command: `{command}`", "", "| row | paper | final val. acc. (%) | best val. acc. (%) | seeds | steps | "
             "s/step (with validation) | wall time (s) | flatness | device | commit |", "|---" * 11 + "|"]
    for row in rows:
        ended = results.get(row.name, [])
        if not ended:
            lines.append(f"| {row.label} |  | not run yet |  | 0 |  |  |  |  |  |  |")
            continue
        seconds = [s["seconds_per_step"] for s in ended if s.get("seconds_per_step")]
        statuses = sorted({s["status"] for s in ended} - {"finished"})
        final = mean_std(_accuracies(ended), scale=1) + (f" ({', '.join(statuses)})" if statuses else "")
        lines.append(
            f"| {row.label} |  | {final} | {mean_std(_accuracies(ended, 'best_val_acc'), scale=1)} | {len(ended)} | "
            f"{ended[0]['steps']} | {f'{statistics.fmean(seconds):.3g}' if seconds else ''} | "
            f"{statistics.fmean(s['wall_time'] for s in ended):.0f} | "
            f"{f'{rise[row.label]:.3g}' if row.label in rise else ''} | {ended[0]['device']} | {str(ended[0]['git_revision'])[:8]} |")
    spread = {True: "larger than the seed-to-seed spread", False: "within the seed-to-seed spread",
              None: "a single seed: no spread to compare with"}
    comparison = [f"- {row.label} vs {baseline}: {diff:+.2f} points, {spread[apart]}"
                  for row, baseline, diff, apart in comparisons(rows, results)]
    steps = [f"- {row.label} vs {before}: {diff:+.2f} points, {spread[apart]}"
             for row, before, diff, apart in ladder(rows, results)]
    lines += ["", summary_sentences(rows, results), "", PAPER_NOTE, "",
              "Each row against the Baseline SGD row of its half (larger than the spread: the seeds' accuracy "
              "ranges do not overlap):", *comparison, "",
              "Each full-batch row against the row before it in the paper's table (a row may change more than "
              "one setting: FB train longer also raises the lr; the presets in config/hyp/ say what each "
              "row sets):", *steps, "",
              "Validation accuracy is measured on the test set; \"best\" is the best of the validations. "
              "s/step: the run's mean wall time per step, its validations included; Baseline SGD's steps and "
              "s/step count epochs. Flatness (seed-0 model): the train-loss rise at distance 0.5 along the row's "
              "filter-normalised direction (`landscape.png`). Figures: `accuracy.png`, `curves.png`, `landscape.png` (and PDFs)."]
    atomic_write(os.path.join(report_dir, "README.md"), lambda handle: handle.write("\n".join(lines) + "\n"), mode="w")
    log.info(f"Report written to {report_dir}")
    return report_dir
