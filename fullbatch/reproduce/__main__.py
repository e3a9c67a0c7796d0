"""python -m fullbatch.reproduce --scale micro [--jobs N] [--launcher local|slurm] [--list] [--report-only]

Runs every row of the paper's Table 1 at the chosen scale (resumable: the same command skips what ended and
continues what was stopped), then writes reports/<scale>/. `--jobs N` runs N rows and seeds at once (one CPU
thread or one GPU each); `--launcher slurm` submits each as its own SLURM job through submitit and returns.
Exit codes: 0 done (or submitted), 1 a job failed, 2 bad arguments (one line on stderr, before any work),
4 stopped by a signal (run the same command again). `--seeds` is at most 100 per row, `--jobs` at most 256.
"""
import logging
import os
import shlex
import sys

from fullbatch.cli import count_problem
from fullbatch.errors import ConfigError, DatasetUnavailable, ExitCode, Stopped, last_line, report
from fullbatch.run.interruption import signals_held, stop_at_once_on_signals

ALLOWED_OVERRIDES = ("data.path=", "data.db.path=", "impl.")
CPU_WIDTH = 16  # --list measures a step on a CPU only up to this model width
MAX_SEEDS = 100  # per row: the paper runs 1 to 3; more is a typo, and a billion would make --list run for ever
MAX_JOBS = 256  # processes at once on one machine: one slot each is set up before the first starts


def rows_problem(text, rows):
    """Why the --rows list `text` does not name distinct rows of the table, or None."""
    names = text.split(",")
    unknown = next((name for name in names if name not in rows), None)
    if unknown is not None:
        return f"--rows={text!r} is not allowed: {unknown!r} is not a row; expected a comma list of {', '.join(rows)}"
    if len(set(names)) != len(names):
        return f"--rows={text!r} is not allowed: it names a row twice"
    return None


def jobs_problem(jobs):
    """Why --jobs is out of range, or None; below 1 in the words scripts and tests already look for."""
    if jobs < 1:
        return f"--jobs={jobs} is not allowed: --jobs must be at least 1 (one job at a time)"
    return count_problem("--jobs", jobs, 1, MAX_JOBS)


def root_problem(root, writes):
    """Why --root cannot hold outputs/ and reports/ (empty, a file, or not writable when the command `writes`)."""
    from fullbatch.files.atomic import unwritable

    if not root.strip():
        return "--root='' is not allowed: expected a folder"
    if os.path.exists(root) and not os.path.isdir(root):
        return f"--root={root} is not allowed: it is a file, not a folder"
    problem = unwritable(root) if writes else None
    return f"--root={root} is not allowed: {problem}" if problem else None


def argument_problem(args, rows):
    """The first problem of the arguments that needs neither PyTorch nor the config, or None."""
    from fullbatch.reproduce.parallel import device_problem

    problems = [rows_problem(args.rows, rows) if args.rows is not None else None,
                count_problem("--seeds", args.seeds, 1, MAX_SEEDS), jobs_problem(args.jobs),
                count_problem("--time", args.time, 1), count_problem("--gpus", args.gpus, 0),
                count_problem("--cpus", args.cpus, 1), device_problem(args.device)]
    first = next((problem for problem in problems if problem), None)
    return first or root_problem(args.root, writes=not args.list)


def parse(argv):
    from fullbatch.cli import OneLineParser
    from fullbatch.reproduce.scales import ROWS, SCALES

    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", required=True, choices=sorted(SCALES))
    parser.add_argument("--rows", help=f"comma list of {', '.join(ROWS)} (default: the scale's rows)")
    parser.add_argument("--seeds", type=int, help=f"seeds per row, 1 to {MAX_SEEDS} (default: the scale's)")
    parser.add_argument("--list", action="store_true", help="print the commands and the projected cost, run nothing")
    parser.add_argument("--no-measure", action="store_true", help="with --list: skip the measured step")
    parser.add_argument("--report-only", action="store_true", help="write the report from the runs that ended")
    parser.add_argument("--no-landscapes", action="store_true", help="leave the landscape figure out")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--root", default=".", help="where outputs/ and reports/ go (default: here)")
    parser.add_argument("--jobs", type=int, default=1, help="rows and seeds at once: one CPU thread each, or one "
                        f"GPU each on a multi-GPU node, at most {MAX_JOBS} (default 1: one after the other in this "
                        "process)")
    parser.add_argument("--launcher", choices=("none", "local", "slurm"), default="none",
                        help="slurm: submit every row and seed as a SLURM job through submitit and return; local: "
                        "the same jobs with submitit's local executor, --jobs at a time (default none)")
    cluster = parser.add_argument_group("SLURM (with --launcher slurm; options win over --slurm-config)")
    cluster.add_argument("--slurm-config", help="a YAML file with any of partition, time, gpus, cpus, account")
    cluster.add_argument("--partition")
    cluster.add_argument("--time", type=int, help="minutes per job (default 1440); a job past it is requeued")
    cluster.add_argument("--gpus", type=int, help="GPUs per job (default 1)")
    cluster.add_argument("--cpus", type=int, help="CPUs per job (default 8)")
    cluster.add_argument("--account")
    parser.add_argument("overrides", nargs="*", help="where data is and how to run, for every row: data.path=..., "
                        "data.db.path=..., impl.* (nothing that changes what the scale trains)")
    args = parser.parse_args(argv)
    for item in args.overrides:
        if not item.startswith(ALLOWED_OVERRIDES) or "=" not in item:
            parser.error(f"{item} is not allowed: give only {', '.join(ALLOWED_OVERRIDES)}... (a scale's rows "
                         "are fixed)")
    problem = argument_problem(args, ROWS)
    if problem:
        parser.error(problem)
    scale = SCALES[args.scale]
    rows = [ROWS[name] for name in args.rows.split(",")] if args.rows is not None else scale.rows()
    return args, scale, rows, args.seeds


def list_rows(args, scale, rows, seeds):
    from fullbatch.progress import duration
    from fullbatch.reproduce.cost import projected
    from fullbatch.reproduce.runner import command_line
    from fullbatch.run.runtime import resolve_device

    device = resolve_device(args.device).type
    total_here, total_gpu, total_paper, runs = 0.0, 0.0, 0.0, 0
    print(f"# scale {scale.name}: {scale.description}")
    measure = not args.no_measure
    if measure and device == "cpu" and scale.width > CPU_WIDTH:
        measure = False
        print(f"# not measured here: a CPU needs hours per row for ResNet-18 at width {scale.width}; the GPU "
              "projections below stand (--device cuda on a GPU machine measures)")
    say = lambda text: print(f"# {text}", file=sys.stderr, flush=True)  # noqa: E731
    for row, steps, seconds, hours, paper in projected(scale, rows, seeds, device, measure=measure, say=say):
        count = scale.seeds_for(row, seeds)
        here = f"{duration(seconds)} per seed on this {device}" if seconds is not None else "not measured here"
        print(f"# {row.label}: {steps} steps, {count} seed(s), {here}; one H100: {duration(3600 * hours)} at this "
              f"scale, {paper:.1f} GPU-hours at paper scale, per seed (projected)")
        for seed in range(count):
            print(command_line(args.root, scale, row, seed, args.overrides))
        total_here += (seconds or 0.0) * count
        total_gpu += hours * count
        total_paper += paper * count
        runs += count
    if measure:
        print(f"# total on this {device}, {runs} runs one after the other: {duration(total_here)} (measured step, "
              "projected run)")
    print(f"# total on one H100 for these {runs} runs: {duration(3600 * total_gpu)} at this scale, {total_paper:.0f} "
          "GPU-hours at paper scale with the same seeds (projected from plain PyTorch fp32 throughput, see "
          "fullbatch/reproduce/cost.py)")


def job_results(jobs):
    """True when every submitit job finished; each failure or stopped job is logged with its reason."""
    log, good = logging.getLogger("fullbatch"), True
    for job in jobs:
        try:
            status = job.result()
        except Exception as error:  # submitit re-raises the job's error, whatever its type
            log.error(f"job {job.job_id} failed: {last_line(error) or repr(error)}")
            good = False
            continue
        if status == "preempted":
            log.warning(f"job {job.job_id} stopped after a checkpoint; run the same command again to continue it")
            good = False
    return good


def check_overrides(args, scale, rows):
    """The extra overrides, composed and validated with the first row's: a misspelt impl. key or a bad value is
    one line now, not an error in every row's job (or a listed command that cannot run)."""
    from fullbatch.cli import composition_errors, one_line
    from fullbatch.config.paths import compose_config
    from fullbatch.reproduce.runner import job_overrides
    from fullbatch.run.validation import validate

    if not args.overrides or not rows:
        return
    overrides, _ = job_overrides(os.path.abspath(args.root), scale, rows[0], 0, args.overrides)
    try:
        cfg = compose_config(overrides)
    except composition_errors() as error:
        raise ConfigError(one_line(error)) from None
    validate(cfg)


def check_arguments(args, scale, rows):
    """What can be refused only with PyTorch and the config loaded, before any work: the extra overrides, the
    device here (a SLURM job's device is the cluster's), the launcher's package and the slots of --jobs."""
    check_overrides(args, scale, rows)
    if args.launcher == "slurm" and not args.report_only:
        from fullbatch.reproduce.launchers import slurm_options

        slurm_options(args)  # --slurm-config: read and checked now
    elif not args.list and not args.report_only:
        check_launch(args)
    if args.launcher != "slurm" or args.report_only:
        from fullbatch.reproduce.parallel import check_device

        check_device(args.device)


def check_launch(args):
    """What can be refused before any work: the launcher's package and the slots of --jobs."""
    if args.launcher != "none":
        from fullbatch.reproduce.launchers import import_submitit

        import_submitit()
    if args.launcher != "slurm" and (args.jobs > 1 or args.launcher == "local"):
        from fullbatch.reproduce.parallel import slots

        slots(args.device, args.jobs)


def run_all(args, root, scale, rows, seeds):
    """Every row and seed that has not ended, on this machine; 'done', 'preempted' or 'failed'."""
    if args.launcher == "local":
        from fullbatch.reproduce.launchers import run_local

        jobs, stopped = run_local(root, scale, rows, seeds, {"time": args.time or 24 * 60}, args.jobs, args.device,
                                  args.overrides)
        good = job_results(jobs)
        return "preempted" if stopped else ("done" if good else "failed")
    if args.jobs > 1:
        from fullbatch.reproduce.parallel import run_parallel

        return run_parallel(root, scale, rows, seeds, args.jobs, args.device, args.overrides)
    from fullbatch.reproduce.runner import run_rows

    return run_rows(root, scale, rows, seeds, args.device, args.overrides)


def timed(args, root, scale, rows, seeds):
    """run_all, with its wall time recorded for the report (also when a signal ends it, and up to its last
    heartbeat when a kill does)."""
    from fullbatch.reproduce.wall_time import piece

    with piece(root, scale, args.jobs, args.launcher) as this:
        this.outcome = "stopped"
        try:
            this.outcome = run_all(args, root, scale, rows, seeds)
        except (ConfigError, DatasetUnavailable):
            this.outcome = None  # refused before anything ran
            raise
    return this.outcome


def submit_to_slurm(args, root, scale, rows, seeds):
    from fullbatch.reproduce.launchers import slurm_options, submit_slurm

    jobs = submit_slurm(root, scale, rows, seeds, slurm_options(args), extra=args.overrides)
    then = shlex.join(["python", "-m", "fullbatch.reproduce", "--scale", scale.name, "--report-only",
                         "--root", args.root, *(["--rows", args.rows] if args.rows else []),
                         *(["--seeds", str(seeds)] if args.seeds else []), *args.overrides])
    print(f"fullbatch: submitted {len(jobs)} job(s); when they have ended: {then}")
    return ExitCode.DONE


def main(argv=None):
    stop_at_once_on_signals()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    command = shlex.join(["python", "-m", "fullbatch.reproduce", *(argv if argv is not None else sys.argv[1:])])
    try:
        args, scale, rows, seeds = parse(argv)
        with signals_held():  # NumPy's and PyTorch's imports: a signal is delivered when they have finished
            import fullbatch.train  # noqa: F401  (imported here, inside the hold, rather than by the first row)
            from fullbatch.reproduce.report import write_report
        check_arguments(args, scale, rows)
        if args.list:
            list_rows(args, scale, rows, seeds)
            return ExitCode.DONE
        root = os.path.abspath(args.root)
        if args.launcher == "slurm" and not args.report_only:
            check_launch(args)
            return submit_to_slurm(args, root, scale, rows, seeds)
        outcome = "done" if args.report_only else timed(args, root, scale, rows, seeds)
        if outcome == "preempted":
            return report("stopped by a signal; run the same command again to continue", ExitCode.STOPPED)
        if outcome == "failed":
            return report("a job failed (see the log above); run the same command again after fixing it",
                          ExitCode.FAILED)
        write_report(os.path.abspath(args.root), scale, rows, seeds, command.replace(" --report-only", ""),
                     device=args.device, landscapes=not args.no_landscapes, extra=args.overrides)
    except (ConfigError, DatasetUnavailable, Stopped) as error:
        return report(error)
    return ExitCode.DONE


if __name__ == "__main__":
    sys.exit(main())
