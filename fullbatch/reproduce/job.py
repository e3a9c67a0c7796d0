"""python -m fullbatch.reproduce.job '<json>': one row and seed of a scale in its own process (`--jobs N`).

The argument is {"root", "scale", "row", "seed", "extra"}; the exit codes are the entry script's: 0 ended
(finished or diverged: the summary says which), 2 configuration or data error (also a malformed argument: one
line on stderr), 4 stopped by a signal after a checkpoint (run it again to continue).
"""
import json
import logging
import sys

from fullbatch.errors import ConfigError, DatasetUnavailable, ExitCode, Stopped, report
from fullbatch.run.interruption import signals_held, stop_at_once_on_signals

FIELDS = dict(root=str, scale=str, row=str, seed=int, extra=list)
KINDS = {str: "a string", int: "an integer", list: "a list"}


def job_problem(arguments):
    """Why `arguments` are not one JSON job {"root", "scale", "row", "seed", "extra"} of a known scale and row, or
    None: the parent process writes them, but a hand-typed one must not end in a traceback."""
    from fullbatch.reproduce.scales import ROWS, SCALES

    if len(arguments) != 1:
        return f"expected one argument, the job as JSON; got {len(arguments)}"
    try:
        job = json.loads(arguments[0])
    except (ValueError, RecursionError) as error:
        return f"the job is not valid JSON ({error})"
    if not isinstance(job, dict) or set(job) != set(FIELDS):
        return f"the job is not allowed: expected a JSON object with keys {', '.join(FIELDS)}"
    wrong = next((key for key, kind in FIELDS.items() if not isinstance(job[key], kind)
                  or isinstance(job[key], bool)), None)
    if wrong:
        return f"the job's {wrong}={job[wrong]!r} is not allowed: expected {KINDS[FIELDS[wrong]]}"
    if job["scale"] not in SCALES or job["row"] not in ROWS:
        return f"the job's scale {job['scale']!r} or row {job['row']!r} is not allowed: no such scale or row"
    if job["seed"] < 0 or not all(isinstance(item, str) for item in job["extra"]):
        return "the job is not allowed: expected a seed >= 0 and extra overrides as strings"
    return None


def main(argv=None):
    stop_at_once_on_signals()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    arguments = argv if argv is not None else sys.argv[1:]
    try:
        problem = job_problem(arguments)
        if problem:
            return report(problem, ExitCode.BAD_INPUT)
        job = json.loads(arguments[0])
        with signals_held():  # PyTorch's import: a signal is delivered when it has finished
            import fullbatch.train  # noqa: F401
            from fullbatch.reproduce.runner import run_job
        summary = run_job(job["root"], job["scale"], job["row"], job["seed"], job["extra"])
    except (ConfigError, DatasetUnavailable, Stopped) as error:
        return report(error)
    return ExitCode.STOPPED if summary["status"] == "preempted" else ExitCode.DONE


if __name__ == "__main__":
    sys.exit(main())
