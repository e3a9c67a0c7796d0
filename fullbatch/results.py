"""Results tables for papers and READMEs: runs grouped by configuration, mean +- std over seeds.

    python -m fullbatch.results                                  # every table under tables/
    python -m fullbatch.results tables/CIFAR10_resnet18.csv outputs/fb_clip   # tables and/or run folders

Rows come from the tables the runs wrote (one row per run) or from the `summary.json` files below run folders.
A group is one run name and configuration (the command-line overrides without the seed); only finished runs
enter the statistics, the others are counted. Dry runs are left out unless --dryruns is given. A damaged file
(not a CSV table, a summary.json that is not a run's) and table rows that are not runs are skipped with a
warning naming the file; when nothing readable is left, that is the one-line error (exit 2).
"""
import glob
import math
import os
import statistics
import sys

from fullbatch.cli import OneLineParser
from fullbatch.errors import ExitCode, report
from fullbatch.files.run_json import read_json_object
from fullbatch.files.walk import find_files
from fullbatch.run.outputs import FINISHED, read_table, table_row

METRICS = ("final_val_acc", "best_val_acc")
RUN_COLUMNS = ("run_key", "name", "status")  # what every run's row has, a failed sweep job's too


def summary_row(path):
    """The table row of the run whose summary.json is `path` (all values as text, like a table's), or None for
    a summary that records no result (a failed sweep job has no config; a preempted run goes on). A damaged
    file raises a ValueError whose message names it and says what is wrong."""
    summary = read_json_object(path)
    if "config" not in summary or summary.get("status") == "preempted":
        return None
    try:
        row = table_row(summary)
    except KeyError as error:
        raise ValueError(f"{path} is not a run summary: it has no {error} entry") from None
    except (TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"{path} is not a run summary: an entry has the wrong type ({error})") from None
    return {key: str(value) for key, value in row.items()}


def run_rows(rows):
    """The rows that are runs (a run_key, name and status), missing cells as '', and the number of others (a
    garbage line, a hand-edited row): a row without them would be shown as a run of no name."""
    runs = [{key: value or "" for key, value in row.items() if key is not None} for row in rows
            if all(isinstance(row.get(key), str) and row[key].strip() for key in RUN_COLUMNS)]
    return runs, len(rows) - len(runs)


def table_rows(path):
    """(the runs of the CSV table at `path`, the problems found in it: one line each, naming the file)."""
    try:
        rows = read_table(path)[0]
    except OSError as error:
        return [], [str(error)]
    runs, others = run_rows(rows)
    if others:
        return runs, [f"{path}: {others} row(s) without a run_key, name and status are not runs"]
    return runs, []


def folder_rows(folder):
    """(the runs of the summary.json files below `folder`, one problem line per damaged one); a symlink loop
    below it is walked once."""
    rows, problems = [], []
    for path in sorted(find_files(folder, "summary.json")):
        try:
            row = summary_row(path)
        except ValueError as error:
            problems.append(str(error))
            continue
        if row is not None:
            rows.append(row)
    return rows, problems


def read_rows(paths):
    """(table rows from CSV files and from run folders, one line per damaged file or skipped rows)."""
    rows, problems = [], []
    for path in paths:
        found, trouble = folder_rows(path) if os.path.isdir(path) else table_rows(path)
        rows += found
        problems += trouble
    return rows, problems


def rows_from(paths):
    """Table rows from CSV files and from run folders (their summary.json files, searched recursively); damaged
    files and rows that are not runs are left out."""
    return read_rows(paths)[0]


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


def path_problem(path):
    """Why `path` cannot be read as a table or searched as a run folder, or None."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    if not (os.path.isfile(path) or os.path.isdir(path)):
        return f"{path} is not allowed: expected a CSV table or a run folder"
    return None


def main(argv=None):
    parser = OneLineParser(description="Group results by configuration and print a markdown table.")
    parser.add_argument("paths", nargs="*", help="tables (CSV) or run folders; default: tables/*.csv")
    parser.add_argument("--dryruns", action="store_true", help="include dry runs")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(glob.glob(os.path.join("tables", "*.csv")))
    if not paths:
        return report("no tables under tables/; give tables or run folders", ExitCode.BAD_INPUT)
    problem = next((problem for problem in map(path_problem, paths) if problem), None)
    if problem:
        return report(problem, ExitCode.BAD_INPUT)
    rows, problems = read_rows(paths)
    if problems and not rows:  # nothing left to show: the first problem is the error
        more = f" (and {len(problems) - 1} more damaged file(s) or row(s))" if len(problems) > 1 else ""
        return report(f"{problems[0]}{more}", ExitCode.BAD_INPUT)
    for problem in problems:
        print(f"fullbatch: warning: {problem}; skipped", file=sys.stderr)
    groups = group(rows, args.dryruns)
    print(markdown(groups) if groups else "no runs")
    return ExitCode.DONE


if __name__ == "__main__":
    sys.exit(main())
