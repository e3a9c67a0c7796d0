"""Results tables for papers and READMEs: runs grouped by configuration, mean +- std over seeds.

    python -m fullbatch.results                                  # every table under tables/
    python -m fullbatch.results tables/CIFAR10_resnet18.csv outputs/fb_clip   # tables and/or run folders

Rows come from the tables the runs wrote (one row per run) or from the `summary.json` files below run folders.
A group is one run name and configuration (the command-line overrides without the seed); only finished runs
enter the statistics, the others are counted. Dry runs are left out unless --dryruns is given.
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

from fullbatch.outputs import read_table, table_row

METRICS = ("final_val_acc", "best_val_acc")
FINISHED = ("finished", "stopped_at_full_training_accuracy")


def rows_from(paths):
    """Table rows from CSV files and from run folders (their summary.json files, searched recursively)."""
    rows = []
    for path in paths:
        if os.path.isdir(path):
            for summary_path in sorted(glob.glob(os.path.join(glob.escape(path), "**", "summary.json"),
                                                 recursive=True)):
                with open(summary_path) as handle:
                    summary = json.load(handle)
                if "config" in summary and summary.get("status") != "preempted":
                    rows.append({key: str(value) for key, value in table_row(summary).items()})
        else:
            rows.extend(read_table(path)[0])
    return rows


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def mean_std(values, scale=100):
    """'mean +- std' of fractions in percent (std over seeds, n-1), or the single value, or '' without values;
    `scale=1` for values that are percentages already."""
    if not values:
        return ""
    mean = scale * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {scale * statistics.stdev(values):.2f}"


def group(rows, include_dryruns=False):
    """{(name, config): [rows]} in first-seen order; a requeued run reported twice counts once (its run_key)."""
    unique = {}
    for row in rows:
        if str(row.get("dryrun", "False")).lower() == "true" and not include_dryruns:
            continue
        unique[row.get("run_key") or id(row)] = row
    groups = {}
    for row in unique.values():
        groups.setdefault((row.get("name", ""), row.get("config", "")), []).append(row)
    return groups


def markdown(groups):
    lines = ["| run | configuration | seeds | final val. acc. (%) | best val. acc. (%) | steps | s/step | not finished |",
             "|---|---|---|---|---|---|---|---|"]
    for (name, config), members in groups.items():
        done = [row for row in members if row.get("status") in FINISHED]
        values = {metric: [v for v in (_number(row.get(metric)) for row in done) if v is not None] for metric in METRICS}
        steps = sorted({row.get("steps", "") for row in done})
        seconds = [v for v in (_number(row.get("seconds_per_step")) for row in done) if v is not None]
        others = [row.get("status", "?") for row in members if row.get("status") not in FINISHED]
        lines.append(f"| {name} | {config or '(defaults)'} | {len(done)} | {mean_std(values['final_val_acc'])} | "
                     f"{mean_std(values['best_val_acc'])} | {', '.join(steps)} | "
                     f"{f'{statistics.fmean(seconds):.3g}' if seconds else ''} | "
                     f"{', '.join(sorted(set(others))) + f' ({len(others)})' if others else ''} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Group results by configuration and print a markdown table.")
    parser.add_argument("paths", nargs="*", help="tables (CSV) or run folders; default: tables/*.csv")
    parser.add_argument("--dryruns", action="store_true", help="include dry runs")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(glob.glob(os.path.join("tables", "*.csv")))
    if not paths:
        print("fullbatch: no tables under tables/; give tables or run folders", file=sys.stderr)
        return 2
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        print(f"fullbatch: {missing[0]} does not exist", file=sys.stderr)
        return 2
    groups = group(rows_from(paths), args.dryruns)
    print(markdown(groups) if groups else "no runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
