"""Seconds per training step of the paper's presets on this machine, with the measured FLOP rate.

    python -m fullbatch.benchmark                 # CIFAR-10-sized synthetic data, ResNet-18, on the GPU
    python -m fullbatch.benchmark --quick         # tiny sizes on the CPU: checks that the benchmark runs

Each row builds the real Trainer, runs warm-up steps (compilation and cudnn autotuning happen there), then
times steps with CUDA events (wall clock on the CPU). FLOPs come from torch's FlopCounterMode over one step
on two blocks of the same configuration, scaled to the whole set. `outside model` is the fraction of step time
not spent in the bare forward+backward passes of the blocks; `overhead_ms_per_block` the same in ms per
forward pass (shown for presets without the regularizer, whose extra passes are model compute too).

Every argument, every row's configuration, the device and the --json file's folder are checked before the first
measurement: a bad one is one line on stderr and exit code 2.
"""
import argparse
import json
import os
import resource
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from fullbatch.cli import OneLineParser, count_problem
from fullbatch.config.limits import MAX_MODEL_WIDTH, SYNTHETIC_MAX
from fullbatch.config.paths import compose_config
from fullbatch.data.blocks import block_plan
from fullbatch.errors import ConfigError, ExitCode, report
from fullbatch.models.ghost_batchnorm import block_groups
from fullbatch.progress import Progress
from fullbatch.train import build_trainer
from fullbatch.training.full_batch import merge_blocks

SPREAD_LIMIT = 0.10
PRESETS = {  # name: overrides (docs/speed.md lists the original code's seconds per step on one H100 for each)
    "fbclip": ["hyp=fbclip"],
    "gradreg": ["hyp=gradreg"],
    "gradreg-b32": ["hyp=gradreg", "data.batch_size=32"],
    "base_sgd": ["hyp=base_sgd"],
}
SETTINGS = {  # name: impl overrides (and the regularizer's precision, which decides its cost under bf16)
    "fp32": ["impl.mixed_precision=false", "impl.memory=contiguous"],
    "bf16-cl": ["impl.mixed_precision=true", "impl.memory=channels_last"],
    "bf16-cl-regcompute": ["impl.mixed_precision=true", "impl.memory=channels_last", "hyp.grad_reg.precision=compute"],
    "bf16-cl-merge4": ["impl.mixed_precision=true", "impl.memory=channels_last", "impl.merge_blocks=4"],
    "bf16-cl-compiled": ["impl.mixed_precision=true", "impl.memory=channels_last", "impl.compile=true"],
}


@contextmanager
def timer(device):
    """Yields a dict that receives `seconds`; CUDA events on the GPU, a wall clock on the CPU."""
    result = {}
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield result
        end.record()
        torch.cuda.synchronize(device)
        result["seconds"] = start.elapsed_time(end) / 1000
    else:
        started = time.perf_counter()
        yield result
        result["seconds"] = time.perf_counter() - started


def flops_per_step(overrides, images):
    """FLOPs of one step, counted on two blocks of an uncompiled copy and scaled to `images`."""
    cfg = compose_config(overrides)
    small = 2 * cfg.data.batch_size
    cfg = compose_config([*overrides, f"data.size={small}", "impl.compile=false"])
    trainer = build_trainer(cfg)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.run_step()
    return counter.get_total_flops() * images / small


def model_compute_seconds(trainer, device):
    """Bare forward+backward over this step's (merged) blocks: the part of a step the model itself needs."""
    images, labels = trainer.dataset.training_set(trainer.step)
    blocks = block_plan(trainer.dataset.num_train, trainer.cfg.data.batch_size)
    pieces = list(merge_blocks(blocks, trainer.cfg.impl.merge_blocks))
    prepared = [(trainer.prepare(images[index]), labels[index], groups) for index, groups in pieces]
    with timer(device) as elapsed:
        for inputs, targets, groups in prepared:
            with block_groups(trainer.model, groups), (trainer.autocast() if trainer.autocast else nullcontext()):
                loss = trainer.loss_fn(trainer.forward_model(inputs), targets)
            torch.autograd.grad(loss, trainer.params)
    return elapsed["seconds"], len(pieces)


def regularized(cfg):
    return bool(cfg.hyp.grad_reg.block_strength or cfg.hyp.grad_reg.acc_strength)


def effective_merge(cfg):
    """Blocks per forward pass actually used: merging needs full batch without per-block gradients."""
    per_block = cfg.hyp.train_stochastic or regularized(cfg)
    return 1 if per_block or cfg.hyp.batch_clip is not None else cfg.impl.merge_blocks


def measure(preset, setting, args):
    overrides = row_overrides(preset, setting, args)
    cfg = compose_config(overrides)
    trainer = build_trainer(cfg)
    device = trainer.device
    for _ in range(args.warmup):
        trainer.run_step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        with timer(device) as elapsed:
            trainer.run_step()
        times.append(elapsed["seconds"])
    seconds = sorted(times)[len(times) // 2]
    spread = (max(times) - min(times)) / seconds  # above 10%: the machine was busy, or too few steps
    with timer(device) as validation:
        trainer.validate()["val_acc"].item()
    compute, blocks = model_compute_seconds(trainer, device)
    flops = flops_per_step(overrides, trainer.dataset.num_train)
    epochs_equivalent = trainer.dataset.num_train
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return dict(preset=preset, setting=setting, precision="bf16" if cfg.impl.mixed_precision else "fp32",
                memory=cfg.impl.memory, compiled=cfg.impl.compile, merge=effective_merge(cfg),
                block=cfg.data.batch_size, seconds_per_step=seconds, images_per_second=epochs_equivalent / seconds,
                tflops=flops / seconds / 1e12, outside_model=max(0.0, 1 - compute / seconds) if
                not regularized(cfg) else None,
                overhead_ms_per_block=max(0.0, seconds - compute) / blocks * 1e3 if
                not regularized(cfg) else None,
                validation_seconds=validation["seconds"], peak_memory_gb=peak / 2**30, spread=spread)


def format_table(rows):
    columns = ["preset", "setting", "precision", "memory", "compiled", "merge", "block", "seconds_per_step",
               "spread", "images_per_second", "tflops", "outside_model", "overhead_ms_per_block",
               "validation_seconds", "peak_memory_gb"]

    def cell(column, value):
        if value is None:
            return "-"
        if column == "spread":
            return f"{100 * value:.0f}%" + (" !" if value > SPREAD_LIMIT else "")
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    table = [columns] + [[cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table)


MAX_IMAGES = SYNTHETIC_MAX  # the synthetic set is drawn in memory (about 25 kB per image while it is drawn)
COUNTS = (("steps", 1, None), ("images", 1, MAX_IMAGES), ("test_images", 1, MAX_IMAGES), ("width", 1, MAX_MODEL_WIDTH),
          ("warmup", 0, None))  # (argument, least value, largest value or None)


def names_problem(flag, text, known):
    """Why the comma list `text` of --presets or --settings names something unknown (or nothing), or None."""
    unknown = next((name for name in text.split(",") if name not in known), None)
    if unknown is None:
        return None
    return f"{flag}={text!r} is not allowed: {unknown!r} is unknown; expected a comma list of {', '.join(known)}"


def json_problem(path):
    """Why the rows could not be written to --json `path` after the measurements, or None: found now, not after
    an hour of measuring."""
    from fullbatch.files.atomic import unwritable

    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"--json={path} is not allowed: it is a folder; expected a file name"
    if not os.path.isdir(folder):
        return f"--json={path} is not allowed: its folder {folder} does not exist"
    problem = unwritable(folder)
    return f"--json={path} is not allowed: {problem}" if problem else None


def models():
    """The model configs a run can choose (config/model/*.yaml)."""
    from fullbatch.config.paths import config_dir

    return sorted(name[:-5] for name in os.listdir(os.path.join(config_dir(), "model")) if name.endswith(".yaml"))


def argument_problem(args):
    """The first problem of the arguments themselves (names, counts, device, the --json file), or None."""
    from fullbatch.reproduce.parallel import device_problem

    problems = [names_problem("--presets", args.presets, PRESETS), names_problem("--settings", args.settings, SETTINGS)]
    if args.model not in models():
        problems.append(f"--model={args.model} is not allowed: expected one of {', '.join(models())}")
    problems.append(device_problem(args.device))
    problems += [count_problem(f"--{name.replace('_', '-')}", getattr(args, name), least, most) for name, least, most in COUNTS]
    problems.append(json_problem(args.json))
    return next((problem for problem in problems if problem), None)


def parse_args(argv=None):
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes on the CPU (checks the code, not a speed)")
    parser.add_argument("--presets", default=",".join(PRESETS), help=f"comma list of {list(PRESETS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {list(SETTINGS)}")
    parser.add_argument("--images", type=int, default=50_000, help=f"training images (1 to {MAX_IMAGES})")
    parser.add_argument("--test-images", type=int, default=10_000, help=f"validation images (1 to {MAX_IMAGES})")
    parser.add_argument("--model", default="resnet18", help="a model config of config/model/")
    parser.add_argument("--width", type=int, default=64, help=f"model width (1 to {MAX_MODEL_WIDTH})")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 0)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (>= 1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--json", help="also write the rows to this file (its folder must exist)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.test_images, args.width, args.warmup, args.steps = 256, 128, 4, 1, 2
        args.device = "cpu"
    problem = argument_problem(args)
    if problem:
        parser.error(problem)
    return args


def row_overrides(preset, setting, args):
    """The overrides of one measured row: synthetic data of the chosen sizes, the preset and the setting."""
    return [f"data.size={args.images}", f"data.test_size={args.test_images}", f"model.width={args.width}",
            f"model={args.model}", "data=synthetic", "hyp.steps=100000", "hyp.warmup=0",
            "impl.validate_every_nth_step=100000", f"impl.device={args.device}", *PRESETS[preset], *SETTINGS[setting]]


def trainer_problem(cfg, args):
    """What build_trainer would refuse after the rows before it were measured (more images per block than
    --images; merged blocks for a model whose BatchNorm cannot keep them apart), or None."""
    from fullbatch.models import build_model
    from fullbatch.models.ghost_batchnorm import supports_block_groups

    if cfg.data.batch_size > args.images:
        return (f"--images={args.images} is not allowed: the preset's blocks have {cfg.data.batch_size} images; "
                f"expected at least {cfg.data.batch_size}")
    if cfg.impl.merge_blocks > 1 and not supports_block_groups(
            build_model(cfg.model.name, 4, cfg.data.classes, cfg.data.image_size, cfg.model.downsample)):
        return f"--model={args.model} is not allowed with merged blocks: its BatchNorm cannot keep blocks apart"
    return None


def check_rows(pairs, args):
    """Compose and validate every row's config, and look for the device, before the first measurement: a size
    the preset cannot use or a GPU this machine lacks is one line now, not a traceback after the rows before."""
    from fullbatch.cli import composition_errors, one_line
    from fullbatch.reproduce.parallel import check_device
    from fullbatch.run.validation import validate

    if not pairs:
        raise ConfigError(f"--presets={args.presets!r} with --settings={args.settings!r} is not allowed: it leaves "
                          "no row to measure (merging and regcompute apply to some presets only; --quick leaves "
                          "compiled settings out)")
    check_device(args.device)
    for preset, setting in pairs:
        try:
            cfg = compose_config(row_overrides(preset, setting, args))
            validate(cfg)
        except composition_errors() as error:  # ConfigError is a ValueError
            message = str(error) if isinstance(error, ConfigError) else one_line(error)
            raise ConfigError(f"{message} (row {preset} {setting})") from None
        problem = trainer_problem(cfg, args)
        if problem:
            raise ConfigError(f"{problem} (row {preset} {setting})")


def planned_rows(args):
    """The (preset, setting) pairs to measure, without those that would repeat another row."""
    pairs = []
    for preset in args.presets.split(","):
        for setting in args.settings.split(","):
            if args.quick and setting.endswith("compiled"):
                continue  # compilation takes minutes on a CPU; the equivalence tests cover it
            if "merge" in setting and effective_merge(compose_config(PRESETS[preset] + SETTINGS[setting])) == 1:
                continue  # the preset needs per-block gradients: merging would not apply
            if "regcompute" in setting and not regularized(compose_config(PRESETS[preset])):
                continue  # no regularizer: the setting would repeat bf16-cl
            pairs.append((preset, setting))
    return pairs


def main(argv=None):
    """Measure every planned row and print the table; 0, or 2 (one line on stderr) for a bad argument."""
    args = parse_args(argv)
    try:
        pairs = planned_rows(args)
        check_rows(pairs, args)
    except ConfigError as error:
        return report(error)
    warnings.simplefilter("once")  # the same warning from every row's trainer would repeat otherwise
    rows, progress = [], Progress(len(pairs))
    for preset, setting in pairs:
        try:
            rows.append(measure(preset, setting, args))
        except ConfigError as error:  # what only the device can tell (bf16 support): one line, not a traceback
            return report(f"{error} (row {preset} {setting})", ExitCode.BAD_INPUT)
        print(f"measured {preset} {setting}: {rows[-1]['seconds_per_step']:.4g} s/step | {progress.tick()}",
              file=sys.stderr, flush=True)
    device = torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    print(f"{device}, torch {torch.__version__}, {args.images} images, {args.model} width {args.width}, "
          f"median of {args.steps} steps after {args.warmup} warm-up steps\n")
    print(format_table(rows))
    if any(row["spread"] > SPREAD_LIMIT for row in rows):
        print(f"\n! the measured steps of this row spread by more than {100 * SPREAD_LIMIT:.0f}% of their median "
              "(max - min): the machine was busy or the steps were too few (--steps); do not quote it")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(device=device, torch=torch.__version__, rows=rows), handle, indent=2)
    return ExitCode.DONE


if __name__ == "__main__":
    sys.exit(main())
