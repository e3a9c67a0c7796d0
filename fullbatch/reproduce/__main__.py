"""python -m fullbatch.reproduce --scale micro [--list] [--rows a,b] [--seeds N] [--report-only]

Runs every row of the paper's Table 1 at the chosen scale (resumable: the same command skips what ended and
continues what was stopped), then writes reports/<scale>/. Exit codes: 0 done, 2 bad arguments, 4 stopped by
a signal (run the same command again).
"""
import argparse
import logging
import os
import shlex
import sys

from fullbatch.errors import ConfigError, DatasetUnavailable
from fullbatch.interruption import Stopped, signals_held, stop_at_once_on_signals

ALLOWED_OVERRIDES = ("data.path=", "data.db.path=", "impl.")


def parse(argv):
    from fullbatch.reproduce.scales import ROWS, SCALES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", required=True, choices=sorted(SCALES))
    parser.add_argument("--rows", help=f"comma list of {', '.join(ROWS)} (default: the scale's rows)")
    parser.add_argument("--seeds", type=int, help="seeds per row (default: the scale's)")
    parser.add_argument("--list", action="store_true", help="print the commands and the projected cost, run nothing")
    parser.add_argument("--no-measure", action="store_true", help="with --list: skip the measured step")
    parser.add_argument("--report-only", action="store_true", help="write the report from the runs that ended")
    parser.add_argument("--no-landscapes", action="store_true", help="leave the landscape figure out")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--root", default=".", help="where outputs/ and reports/ go (default: here)")
    parser.add_argument("overrides", nargs="*", help="where data is and how to run, for every row: data.path=..., "
                        "data.db.path=..., impl.* (nothing that changes what the scale trains)")
    args = parser.parse_args(argv)
    for item in args.overrides:
        if not item.startswith(ALLOWED_OVERRIDES) or "=" not in item:
            parser.error(f"{item} is not allowed: give only {', '.join(ALLOWED_OVERRIDES)}... (a scale's rows "
                         "are fixed)")
    scale = SCALES[args.scale]
    if args.rows:
        unknown = [name for name in args.rows.split(",") if name not in ROWS]
        if unknown:
            parser.error(f"--rows {unknown[0]} is not a row; rows: {', '.join(ROWS)}")
        rows = [ROWS[name] for name in args.rows.split(",")]
    else:
        rows = scale.rows()
    seeds = args.seeds or scale.seeds
    if seeds < 1:
        parser.error("--seeds must be at least 1")
    return args, scale, rows, seeds


def list_rows(args, scale, rows, seeds):
    from fullbatch.progress import duration
    from fullbatch.reproduce.cost import projected
    from fullbatch.reproduce.runner import command_line
    from fullbatch.runtime import resolve_device

    device = resolve_device(args.device).type
    total_here, total_gpu, total_paper = 0.0, 0.0, 0.0
    print(f"# scale {scale.name}: {scale.description}; {seeds} seed(s) per row")
    for row, steps, seconds, hours, paper in projected(scale, rows, seeds, device, measure=not args.no_measure):
        here = f"{duration(seconds)} per seed on this {device}" if seconds is not None else "not measured here"
        print(f"# {row.label}: {steps} steps, {here}; one H100: {duration(3600 * hours)} at this scale, "
              f"{paper:.1f} GPU-hours at paper scale, per seed (projected)")
        for seed in range(seeds):
            print(command_line(args.root, scale, row, seed, args.overrides))
        total_here += (seconds or 0.0) * seeds
        total_gpu += hours * seeds
        total_paper += paper * seeds
    if not args.no_measure:
        print(f"# total on this {device}: {duration(total_here)} (measured step, projected run)")
    print(f"# total on one H100: {duration(3600 * total_gpu)} at this scale, {total_paper:.0f} GPU-hours at paper "
          "scale (projected from plain PyTorch fp32 throughput, see fullbatch/reproduce/cost.py)")


def main(argv=None):
    stop_at_once_on_signals()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    command = shlex.join(["python", "-m", "fullbatch.reproduce", *(argv if argv is not None else sys.argv[1:])])
    try:
        args, scale, rows, seeds = parse(argv)
        with signals_held():  # NumPy's and PyTorch's imports: a signal is delivered when they have finished
            from fullbatch.reproduce.report import write_report
            from fullbatch.reproduce.runner import run_rows
            import fullbatch.train  # noqa: F401  (imported here, inside the hold, rather than by the first row)
        if args.list:
            list_rows(args, scale, rows, seeds)
            return 0
        if not args.report_only and run_rows(os.path.abspath(args.root), scale, rows, seeds, args.device,
                                            args.overrides) == "preempted":
            print("fullbatch: stopped by a signal; run the same command again to continue", file=sys.stderr)
            return 4
        write_report(os.path.abspath(args.root), scale, rows, seeds, command.replace(" --report-only", ""),
                     device=args.device, landscapes=not args.no_landscapes, extra=args.overrides)
    except (ConfigError, DatasetUnavailable) as error:
        print(f"fullbatch: {error}", file=sys.stderr)
        return 2
    except Stopped as stop:
        print(f"fullbatch: {stop}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
