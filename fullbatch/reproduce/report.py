"""The report of a scale (`reports/<scale>/`): README.md with the table, results.csv with one line per run, and
figures (PNG and PDF): validation accuracy per row, the training curves of every full-batch row, and 1-D loss
landscapes of every row's final model along directions drawn from one seed (filter-normalised per model)."""
import csv
import logging
import math
import os
import statistics
from dataclasses import dataclass
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fullbatch.files.atomic import atomic_write  # noqa: E402
from fullbatch.reproduce import wall_time  # noqa: E402
from fullbatch.reproduce.intervals import Interval, mean_interval, welch_difference  # noqa: E402
from fullbatch.reproduce.runner import run_folder  # noqa: E402
from fullbatch.visualization.curves import plain_log_axis, save_figure  # noqa: E402
from fullbatch.visualization.runs import joined_metrics, read_summary, warn_once  # noqa: E402

log = logging.getLogger("fullbatch")
PAPER_NOTE = ("The paper's own per-row accuracies are left blank: they could not be checked against the paper's "
              "text here. Its stated finding is that full batch with clipping and the regularizer matches SGD "
              "(about 95.5-96% for ResNet-18 on all of CIFAR-10).")


FITTED = 0.99  # mean final train accuracy of a row that has fitted its training set


def usable(summary):
    """Whether a run's summary has what the report reads from it: its status as a word and the config's seed."""
    config = summary.get("config")
    return isinstance(summary.get("status"), str) and isinstance(config, dict) and isinstance(config.get("seed"), int)


def ended_summary(root, scale, row, seed):
    """The summary of a run of this row and seed that ended, or None; a damaged one is left out with a warning
    naming it (the report is written from the others)."""
    folder = run_folder(root, scale, row, seed)
    summary = read_summary(folder)
    if not summary or summary.get("status") == "preempted":
        return None
    if not usable(summary):
        warn_once(os.path.join(folder, "summary.json"), "is not a run summary (no status or config seed); the report "
                  "leaves it out")
        return None
    return summary


def collect(root, scale, rows, seeds=None):
    """{row name: [summary of each seed that ended]} in row order; rows without any are left out."""
    from fullbatch.reproduce.runner import ended as check_design

    results = {}
    for row in rows:
        seeds_of_row = range(scale.seeds_for(row, seeds))
        for seed in seeds_of_row:
            check_design(root, scale, row, seed)  # a run of another design of the scale is an error
        ended = [ended_summary(root, scale, row, seed) for seed in seeds_of_row]
        ended = [summary for summary in ended if summary is not None]
        if ended:
            results[row.name] = ended
    return results


def _accuracies(summaries, key="final_val_acc"):
    return [100 * s[key] for s in summaries if isinstance(s.get(key), (int, float))]


def _numbers(summaries, key):
    return [s[key] for s in summaries if isinstance(s.get(key), (int, float)) and math.isfinite(s[key])]


def regime(row, summaries):
    """'fitted' when the seeds' mean final train accuracy is at least FITTED; otherwise 'unfitted by design'
    for Baseline FB (it shows what plain full batch reaches in SGD's budget) and 'missed' for every other row,
    which fits its training set at paper scale."""
    accuracies = _numbers(summaries, "final_train_acc")
    if accuracies and statistics.fmean(accuracies) >= FITTED:
        return "fitted"
    return "missed" if row.must_fit else "unfitted by design"


def write_csv(path, rows, results, root="."):
    columns = ["row", "paper_row", "seed", "status", "final_train_acc", "final_train_loss", "fitted",
               "final_val_acc", "best_val_acc", "steps", "seconds_per_step", "wall_time", "device", "git_revision",
               "output_dir"]

    def write(handle):
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            for summary in results.get(row.name, []):
                values = {key: summary.get(key) for key in columns[3:]}
                train = summary.get("final_train_acc")
                values["fitted"] = isinstance(train, (int, float)) and train >= FITTED
                if isinstance(values["output_dir"], str):
                    values["output_dir"] = os.path.relpath(values["output_dir"], root)  # no machine's paths
                writer.writerow(dict(row=row.name, paper_row=row.label, seed=summary["config"]["seed"], **values))

    atomic_write(path, write, mode="w")


@dataclass(frozen=True)
class Comparison:
    row: object
    reference: str  # the label of the row it is compared with
    difference: Optional[Interval]  # final validation accuracy, points; None when not compared
    skipped: str = ""  # why no comparison is drawn

    def verdict(self):
        if self.difference is None:
            return f"not compared: {self.skipped}"
        if self.difference.excludes_zero is None:
            return f"{self.difference.text()} points; a single seed on one side: no interval, no verdict"
        words = "excludes 0: a difference" if self.difference.excludes_zero else "includes 0: no difference resolved"
        return f"{self.difference.text()} points (95% interval), {words}"


def _against(rows, results, references):
    """A Comparison for each row named in `references` ({row name: the name of the row it is compared with})
    whose runs and reference's runs have ended. No comparison is drawn from a row that missed its regime."""
    by_name = {row.name: row for row in rows}
    lines = []
    for row in rows:
        other = references.get(row.name)
        if other is None or row.name not in results or other not in results:
            continue
        mine, theirs = _accuracies(results[row.name]), _accuracies(results[other])
        if not mine or not theirs:
            continue
        label = by_name[other].label if other in by_name else other
        missed = [item.label for item in (row, by_name.get(other)) if item is not None
                  and regime(item, results[item.name]) == "missed"]
        if missed:
            lines.append(Comparison(row, label, None, f"{' and '.join(missed)} missed its regime (mean final train "
                                    f"accuracy below {FITTED})"))
            continue
        lines.append(Comparison(row, label, welch_difference(mine, theirs)))
    return lines


def comparisons(rows, results):
    """Each row against the Baseline SGD row of its half (with / without augmentation)."""
    baseline = {True: "sgd", False: "sgd_noaug"}
    return _against(rows, results, {row.name: baseline[row.augmented] for row in rows
                                    if row.name != baseline[row.augmented]})


def ladder(rows, results):
    """Each full-batch row against the one before it in its half of the paper's table, from FB train longer on:
    what each of the paper's rows (longer, clipped, regularized, smaller blocks, shuffled blocks) changed here.
    The pairs come from the table's order, whatever rows were asked for."""
    from fullbatch.reproduce.scales import ROWS

    references = {}
    for augmented in (True, False):
        half = [row.name for row in ROWS.values() if row.augmented == augmented and not row.optional]
        references.update(zip(half[2:], half[1:]))
    return _against(rows, results, references)


def resolution_sentence(compared):
    """How large a difference these seeds resolve: the half-widths of the comparisons' intervals (a zero width,
    from seeds that agree exactly, says nothing about resolution and is left out)."""
    widths = sorted(c.difference.half_width for c in compared
                    if c.difference is not None and c.difference.half_width)
    if not widths:
        return "No comparison has two or more differing seeds on both sides, so none has an interval to judge by."
    return (f"How large a difference these seeds resolve: a comparison's difference must exceed the half-width of "
            f"its interval, which here runs from {widths[0]:.1f} to {widths[-1]:.1f} points (median "
            f"{statistics.median(widths):.1f}); smaller true differences are not resolved. With {len(widths)} "
            f"comparisons at 95% each, about {0.05 * len(widths):.1f} would exclude 0 by chance alone if no row "
            "differed from any other.")


MATCH_SGD = ("fb_clip", "fb_reg", "fb_strong", "fb_practice", "fb_reg_noaug", "fb_strong_noaug")


def summary_sentences(rows, results):
    """Two plain sentences: the ordering measured (rows that missed their regime apart), and where it disagrees
    with the paper's finding (the clipped and regularized full-batch rows match SGD; plain full batch falls short
    of it), counting only differences whose 95% interval excludes 0."""
    means = {row.name: statistics.fmean(_accuracies(results[row.name])) for row in rows
             if row.name in results and _accuracies(results[row.name])}
    if not means:
        return "No run has ended yet."
    by_name = {row.name: row for row in rows}
    missed = [name for name in means if regime(by_name[name], results[name]) == "missed"]
    ranked = sorted((name for name in means if name not in missed), key=means.get, reverse=True)
    first = ("Ranked by mean final validation accuracy: " +
             ", ".join(f"{by_name[n].label} {means[n]:.1f}%" for n in ranked) + "." if ranked else "")
    if missed:
        first += (" Not ranked, as they missed their regime: " + ", ".join(by_name[n].label for n in missed) + ".")
    disagreements, skipped = [], []
    for comparison in comparisons(rows, results):
        row, interval = comparison.row, comparison.difference
        if interval is None:
            skipped.append(row.label)
            continue
        if not interval.excludes_zero:
            continue
        if row.name in MATCH_SGD:
            disagreements.append(f"{row.label} is {abs(interval.centre):.1f} points "
                                 f"{'above' if interval.centre > 0 else 'below'} {comparison.reference} "
                                 f"(95% interval {interval.text(1)})")
        if row.name in ("fb", "fb_noaug") and interval.centre > 0:
            disagreements.append(f"{row.label} is above {comparison.reference} (95% interval {interval.text(1)})")
    finding = ("the paper's finding (clipped and regularized full batch matches SGD, plain full batch falls short "
               "of it)")
    if disagreements:
        second = (f"Where this disagrees with {finding}, counting only differences whose 95% interval excludes 0: "
                  + "; ".join(disagreements) + ".")
    else:
        second = f"No difference whose 95% interval excludes 0 disagrees with {finding}."
    if skipped:
        second += " Not compared with SGD (a row missed its regime): " + ", ".join(skipped) + "."
    return f"{first} {second}".strip()


def accuracy_figure(path, rows, results):
    names = [row for row in rows if row.name in results]
    figure, axis = plt.subplots(figsize=(7.5, 0.35 * len(names) + 1.2))
    for position, row in enumerate(names):
        values = _accuracies(results[row.name])
        if values:
            interval = mean_interval(values)
            axis.barh(position, interval.centre, color="tab:blue" if row.augmented else "tab:orange",
                      xerr=interval.half_width, error_kw=dict(ecolor="grey", capsize=3))
            axis.plot(values, [position] * len(values), "k.", markersize=5)
    axis.set(yticks=range(len(names)), yticklabels=[row.label for row in names],
             xlabel="final validation accuracy (%)\nbars: mean over seeds with 95% interval; dots: seeds")
    axis.invert_yaxis()
    figure.tight_layout()
    return save_figure(figure, path)


SERIES = (("train_loss", "-", "train loss"), ("val_loss", "o--", "validation loss"), ("full_loss", ":", "full loss"))


def curves_figure(path, root, scale, rows):
    """Small multiples in the paper's Fig. 2/3 style: train, validation and full loss on a log axis, clipped
    steps in black; one legend for every panel, below them; runs of a step or two drawn as markers."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    full_batch = [row for row in rows if "base_sgd" not in row.overrides[0]
                  and os.path.isfile(os.path.join(run_folder(root, scale, row, 0), "metrics.jsonl"))]
    if not full_batch:
        return None
    columns = 4
    lines = (len(full_batch) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines + 0.6), squeeze=False)
    for axis, row in zip(axes.flat, full_batch):
        metrics = joined_metrics(run_folder(root, scale, row, 0))
        last_step = max([m["step"] for m in metrics] or [1])
        for key, style, _ in SERIES:
            points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
            if points:
                axis.plot(*zip(*points), style if len(points) > 2 else "o",  # a line of one point is invisible
                          markersize=3, color=_series_colour(key))
        clipped = [(m["step"], m["train_loss"]) for m in metrics
                   if m.get("clipped") is True and isinstance(m.get("train_loss"), (int, float))]
        if clipped:
            axis.scatter(*zip(*clipped), marker="x", s=10, color="black", zorder=3)
        axis.set_title(row.label, fontsize=8)
        axis.set_xlim(0, last_step + 1)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        plain_log_axis(axis)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(full_batch):]:
        axis.set_visible(False)
    handles = [Line2D([], [], linestyle=style.lstrip("o") or "-", marker="o" if style.startswith("o") else None,
                      markersize=3, color=_series_colour(key), label=label) for key, style, label in SERIES]
    handles.append(Line2D([], [], linestyle="", marker="x", color="black", label="clipped step"))
    figure.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=7,
                  frameon=False)
    figure.supxlabel("step", fontsize=8, y=0.05)
    figure.supylabel("cross-entropy (log scale)", fontsize=8)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(figure, path)


def _series_colour(key):
    return {"train_loss": "tab:blue", "val_loss": "tab:orange", "full_loss": "tab:green"}[key]


def landscape_figure(report_dir, root, scale, rows, device="auto", extra=()):
    """crunch_loss_landscape's 1-D landscape of every row's final model (seed 0); {label: flatness} or {}."""
    from fullbatch.config.paths import compose_config
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
    flatness number in each legend entry, the legend beside the panel: 13 overlaid models with validation
    curves would not be readable. A curve equal to one drawn before it is dashed and says so."""
    import numpy as np

    halves = [[row for row in rows if row.augmented], [row for row in rows if not row.augmented]]
    halves = [half for half in halves if half]
    figure, axes = plt.subplots(1, len(halves), figsize=(8.4 * len(halves), 4.6), squeeze=False)
    index = {str(label): position for position, label in enumerate(data["labels"])}
    colours = plt.get_cmap("tab10")
    for axis, half in zip(axes[0], halves):
        drawn = []
        for number, row in enumerate(half):
            curve = np.asarray(data["train_loss"][index[row.label]])
            twin = next((label for label, other in drawn if np.allclose(curve, other, rtol=1e-6, atol=1e-9)), None)
            label = f"{row.label}: +{rise[row.label]:.3g}" + (f" (same curve as {twin})" if twin else "")
            axis.plot(data["alphas"], curve, color=colours(number), linestyle="--" if twin else "-", label=label)
            drawn.append((row.label, curve))
        axis.set(xlabel="distance along the filter-normalised direction", ylabel="train loss (log scale)",
                 title="with augmentation" if half[0].augmented else "without augmentation")
        plain_log_axis(axis)
        axis.legend(fontsize=7, title=f"train-loss rise at distance {radius}", title_fontsize=7,
                    loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.suptitle("1-D loss landscapes of each row's final model (seed 0); one random direction, drawn from one "
                    "seed and filter-normalised per model", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


PIPELINE_NOTE = ("This scale is a pipeline check, not a result: it runs every row end to end on a few synthetic "
                 "images for 1 to 10 steps (the baseline rows take one step at lr 0 and never move), and checks that "
                 "training, resuming, the table, the figures and the landscapes work. No verdicts are drawn from it.")


def _interval_text(values):
    return mean_interval(values).text() if values else ""


def table_lines(rows, results, rise, planned=None):
    """The table's lines; `planned` ({row name: seeds}) marks a row whose seeds have not all ended ("2 of 3")."""
    planned = planned or {}

    def seeds(row, count):
        return f"{count} of {planned[row.name]}" if planned.get(row.name, count) > count else f"{count}"

    lines = ["| row | seeds | final train acc. | final train loss | regime | final val. acc. (%) | best val. acc. (%) "
             "| steps | s/step (with validation) | wall time per seed (s) | row's cost (h) | flatness | device | "
             "commits |", "|---" * 14 + "|"]
    for row in rows:
        ended = results.get(row.name, [])
        if not ended:
            lines.append(f"| {row.label} | {seeds(row, 0)} |  |  | not run yet |  |  |  |  |  |  |  |  |  |")
            continue
        seconds = [value for value in _numbers(ended, "seconds_per_step") if value]
        wall = _numbers(ended, "wall_time")
        statuses = sorted({s["status"] for s in ended} - {"finished"})
        train_acc, train_loss = _numbers(ended, "final_train_acc"), _numbers(ended, "final_train_loss")
        final = _interval_text(_accuracies(ended)) + (f" ({', '.join(statuses)})" if statuses else "")
        best = _interval_text(_accuracies(ended, "best_val_acc"))
        lines.append(
            f"| {row.label} | {seeds(row, len(ended))} | {f'{statistics.fmean(train_acc):.3f}' if train_acc else ''} | "
            f"{f'{statistics.fmean(train_loss):.3g}' if train_loss else ''} | {regime(row, ended)} | {final} | {best} | "
            f"{ended[0].get('steps', '')} | {f'{statistics.fmean(seconds):.3g}' if seconds else ''} | "
            f"{f'{statistics.fmean(wall):.0f}' if wall else ''} | {f'{sum(wall) / 3600:.2f}' if wall else ''} | "
            f"{f'{rise[row.label]:.3g}' if row.label in rise else ''} | {ended[0].get('device', '')} | "
            f"{commits(ended)} |")
    return lines


def commits(ended):
    """The commits a row's seeds ran (8 hex digits each, in seed order, each once): a row run in pieces across
    changes of the code shows every version that contributed."""
    seen = [str(summary.get("git_revision") or "unknown")[:8] for summary in ended]
    return ", ".join(dict.fromkeys(seen))


def verdict_lines(rows, results):
    against_sgd, steps = comparisons(rows, results), ladder(rows, results)
    return ["", summary_sentences(rows, results), "", PAPER_NOTE, "",
            "Each row against the Baseline SGD row of its half: the difference of mean final validation accuracy "
            "with its 95% interval (Welch); a verdict only where the interval excludes 0:",
            *[f"- {c.row.label} vs {c.reference}: {c.verdict()}" for c in against_sgd], "",
            "Each full-batch row against the row before it in the paper's table (a row may change more than one "
            "setting: FB train longer also raises the lr; the presets in config/hyp/ say what each row sets):",
            *[f"- {c.row.label} vs {c.reference}: {c.verdict()}" for c in steps], "",
            resolution_sentence(against_sgd + steps)]


def write_report(root, scale, rows, seeds, command, report_dir=None, device="auto", landscapes=True, extra=()):
    report_dir = report_dir or os.path.join(root, "reports", scale.name)
    os.makedirs(report_dir, exist_ok=True)
    results = collect(root, scale, rows, seeds)
    write_csv(os.path.join(report_dir, "results.csv"), rows, results, root)
    accuracy_figure(os.path.join(report_dir, "accuracy.png"), rows, results)
    curves_figure(os.path.join(report_dir, "curves.png"), root, scale, rows)
    rise = landscape_figure(report_dir, root, scale, rows, device, extra) if landscapes else {}
    lines = [f"# Reproduction at scale `{scale.name}`", "", f"{scale.description}.", "", f"Command: `{command}`", "",
             wall_time.sentence(root, scale), ""]
    if scale.pipeline_check:
        lines += [PIPELINE_NOTE, ""]
    lines += table_lines(rows, results, rise, {row.name: scale.seeds_for(row, seeds) for row in rows})
    if not scale.pipeline_check:
        lines += verdict_lines(rows, results)
    lines += ["", f"Regime: a row has fitted when the mean final train accuracy of its seeds is at least {FITTED} "
              "(measured on the step's own training batch, augmented where the row augments). Every row but "
              "Baseline FB fits at paper scale; a row marked `missed` is not compared with any other. Final "
              "validation accuracy: mean ± half-width of the 95% interval over seeds (t-distribution); a single "
              "seed has no interval. Validation accuracy is measured on the test set; \"best\" is the best of the "
              "validations. Seeds: those that ended (\"2 of 3\": the others have not). s/step: the run's mean "
              "wall time per step, its validations included; Baseline SGD's "
              "steps and s/step count epochs. Row's cost: the wall time of all its seeds, one after the other; "
              "with --jobs N about N of them ran at once. Commits: the code each seed ran (results.csv has one per "
              "run). Flatness (seed-0 model): the train-loss rise at distance 0.5 along "
              "the row's filter-normalised direction (`landscape.png`). Figures: `accuracy.png`, `curves.png`, "
              "`landscape.png` (and PDFs)."]
    atomic_write(os.path.join(report_dir, "README.md"), lambda handle: handle.write("\n".join(lines) + "\n"), mode="w")
    log.info(f"Report written to {report_dir}")
    return report_dir
