"""What a run leaves behind: metrics.jsonl, summary.json, model.pt and a row in tables/<template>.csv."""
import csv
import functools
import json
import logging
import math
import os
import subprocess

from fullbatch.errors import ExitCode
from fullbatch.files.atomic import atomic_write, locked_file
from fullbatch.files.run_json import DamagedRunFile, read_json_object

log = logging.getLogger("fullbatch")
FINISHED = ("finished", "stopped_at_full_training_accuracy")  # the statuses of a run that trained to its end
STATUS_EXIT_CODES = {  # a run's or sweep job's status -> the exit code its entry script ends with
    **{status: ExitCode.DONE for status in FINISHED}, "diverged": ExitCode.DIVERGED, "preempted": ExitCode.STOPPED,
    "unfinished": ExitCode.STOPPED, "config_error": ExitCode.BAD_INPUT, "crashed": ExitCode.FAILED}


def _plain(value):
    """JSON-safe, recursively: NaN and infinities become strings instead of invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class MetricsLog:
    """Appends one JSON object per line and flushes, so a crash loses at most the current step. A row that
    cannot be written (full disk) is logged and skipped: it must not end hours of training."""

    def __init__(self, path, tracker=None):
        self.handle, self.tracker = open(path, "a"), tracker

    def write(self, row):
        try:
            self.handle.write(json.dumps(_plain(row)) + "\n")
            self.handle.flush()
        except OSError as error:
            log.error(f"Could not write the metrics of step {row.get('step')} ({error}); training goes on")
        if self.tracker:
            try:
                self.tracker.write(row)
            except Exception as error:  # a tracker's network or disk fault must not end hours of training
                log.error(f"The tracker could not take the metrics of step {row.get('step')} ({error}); "
                          "metrics.jsonl has them")

    def close(self):
        self.handle.close()
        if self.tracker:
            self.tracker.close()


# overrides that say where things are or how often something is written, not what was trained
WHERE_KEYS = ("name=", "data.path", "data.db.path", "tables", "impl.checkpoint", "hydra.", "impl.threads",
              "impl.device", "impl.validate_every_nth_step", "impl.eval_batch_size")


def compact_overrides(overrides, keep_seed=False):
    """The command-line overrides that make a configuration: without the name, paths and cadences, and
    (unless `keep_seed`) without the seed, so that the seeds of one configuration group together."""
    dropped = WHERE_KEYS if keep_seed else WHERE_KEYS + ("seed=",)
    return [item for item in overrides if not item.lstrip("+~").startswith(dropped)]


def table_row(summary):
    """A run's row in the results table: what tells it apart from other runs, and what it measured."""
    cfg = summary["config"]
    data, impl = cfg["data"], cfg["impl"]
    precision = impl["dtype"] + ("+bf16" if impl["mixed_precision"] else "")
    return dict(run_key=f"{summary['name']}/{summary.get('config_hash', '')}", name=summary["name"],
                hyp=summary.get("choices", {}).get("hyp", ""),
                config=" ".join(compact_overrides(summary.get("overrides", []))), seed=cfg["seed"],
                dryrun=cfg["dryrun"], stochastic=cfg["hyp"]["train_stochastic"], steps=summary["steps"],
                lr=cfg["hyp"]["optim"]["lr"], batch_size=data["batch_size"], model=cfg["model"]["name"],
                width=cfg["model"]["width"], data=data["name"], data_size=data["size"], test_size=data["test_size"],
                augmentations=_joined(data["augmentations_train"]), precision=precision, status=summary["status"],
                final_val_acc=summary["final_val_acc"], best_val_acc=summary["best_val_acc"],
                final_train_loss=summary["final_train_loss"], final_train_acc=summary["final_train_acc"],
                seconds_per_step=summary.get("seconds_per_step"), wall_time=round(summary["wall_time"], 1),
                output_dir=summary["output_dir"], timestamp=summary.get("finished_at", ""))


MEASURED = ("final_train_loss", "final_train_acc", "seconds_per_step", "wall_time", "output_dir", "finished_at")


def refill_measured(summary, resume_path):
    """A finished run started again trains no step and only reports its accuracy. Its training measurements (train
    loss and accuracy, time per step, wall time) and the folder that holds them are those of the run that wrote
    the checkpoint: they come from that run's summary, so the table row keeps them. `reported_in` names the new
    folder. Unchanged when that summary is missing, damaged, or of another config or step."""
    producer = os.path.dirname(os.path.dirname(resume_path))
    try:
        earlier = read_json_object(os.path.join(producer, "summary.json"))
    except DamagedRunFile:
        return summary
    if (earlier.get("config_hash"), earlier.get("steps")) != (
            summary.get("config_hash"), summary.get("steps")):
        return summary
    refilled = dict(summary, reported_in=summary["output_dir"])
    refilled.update({key: earlier[key] for key in MEASURED if earlier.get(key) is not None})
    return refilled


def _joined(augmentations):
    if isinstance(augmentations, (list, tuple)):
        return "+".join(augmentations) or "none"
    return str(augmentations or "none")


def table_path(tables, template, dryrun):
    """Dry runs go to their own table, so pipeline checks never land beside real results."""
    return os.path.join(tables, "dryrun", f"{template}.csv") if dryrun else os.path.join(tables, f"{template}.csv")


def write_json(path, content):
    atomic_write(path, lambda handle: json.dump(_plain(content), handle, indent=2, default=str), mode="w")


@functools.lru_cache(maxsize=None)
def git_revision(folder):
    """The commit checked out in `folder`, read once per process: a process keeps running the code it loaded,
    whatever is committed later."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def record_table_row(path, row, key="run_key"):
    """Put `row` into a CSV table: it replaces an earlier row with the same `key` (a re-run or a requeue of the
    same run reports again), else it is appended. The file is rewritten atomically under a lock file, so
    concurrent sweep jobs never lose or interleave rows, and columns that older rows lack stay empty. The lock
    files live in a hidden `.locks/` beside the table: removing one after use would let two writers hold locks
    on different files."""
    folder = os.path.dirname(path) or "."
    os.makedirs(os.path.join(folder, ".locks"), exist_ok=True)
    row = {name: _plain(value) for name, value in row.items()}
    with locked_file(os.path.join(folder, ".locks", os.path.basename(path) + ".lock"), "a"):
        rows, columns = read_table(path)
        if any(None in old or None in old.values() for old in rows):  # csv's marks of too many or too few fields
            raise OSError(f"{path} has a line whose fields do not match its header; the table is left as it is")
        rows = [old for old in rows if old.get(key) != str(row[key])] + [row]
        columns += [name for name in row if name not in columns]

        def write(handle):
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

        atomic_write(path, write, mode="w")


def read_table(path):
    """(rows as dicts, column names) of a CSV table; ([], []) if it does not exist yet. A path that is not a CSV
    text file (a folder, a pipe, a binary file such as model.pt, NUL bytes, unreadable) raises an OSError naming
    it: a run logs that instead of overwriting the file with its row, and `fullbatch.results` skips the file."""
    if not os.path.exists(path):
        return [], []
    if not os.path.isfile(path):  # a folder, or a pipe that open() would wait on for ever
        raise OSError(f"{path} is not a CSV table: it is not a regular file")

    def lines(handle):
        for number, line in enumerate(handle, 1):
            if "\x00" in line:  # csv takes NUL bytes silently since Python 3.11
                raise OSError(f"{path} is not a CSV table: line {number} holds a NUL byte (a binary file?)")
            yield line

    try:
        handle = open(path, newline="")
    except OSError as error:
        raise OSError(f"{path} cannot be read: {error.strerror or error}") from None
    with handle:
        try:
            reader = csv.DictReader(lines(handle))
            return list(reader), list(reader.fieldnames or [])
        except UnicodeDecodeError:
            raise OSError(f"{path} is not a CSV table: it is not text (a binary file?)") from None
        except csv.Error as error:
            raise OSError(f"{path} is not a CSV table: {error}") from None
