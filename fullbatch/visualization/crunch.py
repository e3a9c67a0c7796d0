"""crunch(cfg): loss landscapes of saved models, written as data (landscape.npz, flatness.json) and figures.

Everything crunch reads comes from the user (the command line) or from run folders that may be damaged or
were sent by someone else, so each is checked before any work starts and each problem is one ConfigError
naming the key or file and what is allowed; checkpoints are read without running code from them."""
import logging
import math
import os
import re
import warnings

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fullbatch.config.limits import MAX_MODEL_WIDTH, SEED_LIMIT, SEED_RANGE
from fullbatch.config.schema import DataConfig
from fullbatch.data import load_device_dataset
from fullbatch.errors import ConfigError, first_line, refusal, require
from fullbatch.files.run_json import DamagedRunFile, read_json_object
from fullbatch.files.safe_loading import load_weights
from fullbatch.models import build_model
from fullbatch.models.registry import MODELS, RESNETS
from fullbatch.progress import Progress
from fullbatch.run.outputs import write_json
from fullbatch.run.runtime import configure_backend
from fullbatch.run.validation import (finite_numbers, given_values, plain_file_name, seeds_in_range, validate_data,
                                      validate_impl)
from fullbatch.visualization.directions import NORMALIZATIONS, random_direction
from fullbatch.visualization.flatness import flatness
from fullbatch.visualization.landscape import evaluate_grid
from fullbatch.visualization.plots import QUANTITIES, plot_saved
from fullbatch.visualization.runs import distinguishing_labels

log = logging.getLogger("fullbatch")

MAX_RESOLUTION = 1001  # points per axis; a 2-D grid evaluates the data resolution**2 times


def validate_viz(viz):
    """Ranges of the landscape settings: an infinite extent gives an all-NaN landscape, no examples a division
    by zero, a flatness radius outside the grid a number read off its edge."""
    require(viz.name in ("none", "1d", "2d"), "viz", "none, 1d or 2d", viz.name)
    axes = ("x", "y") if viz.name == "2d" else ("x",)
    for key in ("xmin", "xmax", "ymin", "ymax"):
        require(math.isfinite(viz[key]), f"viz.{key}", "a finite number", viz[key])
    for axis in axes:
        low, high = viz[f"{axis}min"], viz[f"{axis}max"]
        require(low < high, f"viz.{axis}min/{axis}max", f"{axis}min < {axis}max", (low, high))
    require(2 <= viz.resolution <= MAX_RESOLUTION, "viz.resolution", f"an integer in [2, {MAX_RESOLUTION}]",
            viz.resolution)
    for key in ("train_examples", "val_examples"):
        require(viz[key] is None or viz[key] >= 1, f"viz.{key}", "empty (all) or an integer >= 1", viz[key])
    require(0 <= viz.seed < SEED_LIMIT, "viz.seed", SEED_RANGE, viz.seed)
    require(viz.normalization in NORMALIZATIONS, "viz.normalization", f"one of {NORMALIZATIONS}", viz.normalization)
    require(viz.bn_mode in ("batch", "running"), "viz.bn_mode", "batch or running", viz.bn_mode)
    radius = viz.flatness_radius
    require(math.isfinite(radius) and radius > 0, "viz.flatness_radius", "a finite number > 0", radius)
    for axis in axes:
        low, high = viz[f"{axis}min"], viz[f"{axis}max"]
        require(low <= -radius and radius <= high, "viz.flatness_radius",
                f"a number > 0 whose -radius and +radius lie in viz.{axis}min..{axis}max = [{low}, {high}]", radius)


def validate_crunch(cfg):
    """Everything of the crunch config that can be checked before a file is read."""
    validate_viz(cfg.viz)
    require(0 <= cfg.seed < SEED_LIMIT, "seed", SEED_RANGE, cfg.seed)
    plain_file_name(cfg.name, "name", "run name", "folder")
    validate_impl(cfg.impl)
    given_values(cfg)
    finite_numbers(cfg)
    seeds_in_range(cfg)
    paths = _checkpoint_paths(cfg)
    files = [os.path.abspath(path) for path in paths]
    repeated = sorted({path for path, file in zip(paths, files) if files.count(file) > 1})
    require(not repeated, "checkpoints", "each checkpoint once", repeated)
    require(not cfg.labels or len(cfg.labels) == len(paths), "labels",
            f"one label per checkpoint ({len(paths)})", list(cfg.labels))
    require(len(set(cfg.labels)) == len(cfg.labels), "labels", "distinct names (flatness.json is keyed by them)",
            list(cfg.labels))


def _checkpoint_paths(cfg):
    paths = list(cfg.checkpoints) + ([cfg.checkpoint] if cfg.checkpoint else [])
    if not paths:
        raise ConfigError("checkpoint= is not allowed to be empty: give checkpoint=PATH or checkpoints='[A, B]'")
    return paths


def _refuse(checkpoint, problem):
    return refusal("checkpoint", checkpoint, problem)


def _candidate_run_dirs(path):
    """A model.pt lies in its run folder, a checkpoints/step-N.pt one level below it."""
    folder = os.path.dirname(os.path.abspath(path))
    return folder, os.path.dirname(folder)


def _read_yaml(file, checkpoint):
    try:
        with open(file) as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise _refuse(checkpoint, f"its run file {file} is not valid YAML{where}") from None
    except (OSError, ValueError, RecursionError) as error:  # unreadable, not text, or nested thousands deep
        raise _refuse(checkpoint, f"its run file {file} cannot be read ({type(error).__name__})") from None


def _read_summary(run_dir, checkpoint):
    """summary.json as a dict ({} when there is none); a damaged one is an error, not a missing one."""
    file = os.path.join(run_dir, "summary.json")
    if not os.path.lexists(file):
        return {}
    try:
        return read_json_object(file)
    except DamagedRunFile as damaged:
        raise _refuse(checkpoint, f"its run file {file} {first_line(damaged.reason, 160)}") from None


def check_run_files(checkpoint):
    """The files of a checkpoint's run folder that labels are made of (summary.json, .hydra/overrides.yaml):
    damaged, they fail here in one line instead of deep in the label code."""
    for run_dir in _candidate_run_dirs(checkpoint):
        _read_summary(run_dir, checkpoint)
        file = os.path.join(run_dir, ".hydra", "overrides.yaml")
        if os.path.isfile(file):
            given = _read_yaml(file, checkpoint)
            if given is not None and not (isinstance(given, list) and all(isinstance(o, str) for o in given)):
                raise _refuse(checkpoint, f"its run file {file} is not a list of overrides")


def _run_config(path):
    """The training config saved beside a checkpoint (model.pt or checkpoints/step-N.pt): Hydra's
    .hydra/config.yaml, else the resolved config in summary.json (runs started in-process); or None.
    Returns (config, the file it came from)."""
    for run_dir in _candidate_run_dirs(path):
        saved = os.path.join(run_dir, ".hydra", "config.yaml")
        if os.path.isfile(saved):
            return _checked_run_config(_read_yaml(saved, path), saved, path), saved
        summary = _read_summary(run_dir, path)
        if "config" in summary:
            source = f"{os.path.join(run_dir, 'summary.json')} (its config)"
            return _checked_run_config(summary["config"], source, path), source
    return None, None


def _checked_run_config(run_cfg, source, checkpoint):
    """A run config is a mapping with a model and a data section."""
    if not isinstance(run_cfg, dict):
        kind = "nothing" if run_cfg is None else f"a {type(run_cfg).__name__}"
        raise _refuse(checkpoint, f"its run config {source} holds {kind}, not a mapping with model and data")
    for section in ("model", "data"):
        if not isinstance(run_cfg.get(section), dict):
            raise _refuse(checkpoint, f"its run config {source} has no {section} section (a mapping)")
    return run_cfg


_ABSENT = object()


def _model_spec(model_cfg, data_cfg, complain):
    """(name, width, downsample, classes, image_size) to build the model from; `complain(key, value, allowed)`
    raises for the first value that cannot build it."""
    def value(section, key, valid, allowed, default=_ABSENT):
        found = section.get(key, default)
        if found is _ABSENT or not valid(found):
            complain(key, found, allowed)
        return found

    def integer(x):
        return isinstance(x, int) and not isinstance(x, bool)

    name = value(model_cfg, "name", lambda x: isinstance(x, str) and x in MODELS, f"one of {sorted(MODELS)}")
    width = value(model_cfg, "width", lambda x: integer(x) and 1 <= x <= MAX_MODEL_WIDTH,
                  f"an integer in [1, {MAX_MODEL_WIDTH}]")
    if name in RESNETS:  # runs saved before model.downsample existed were built with type-B shortcuts
        downsample = value(model_cfg, "downsample", lambda x: x in (None, "B", "C"), "B or C for a ResNet",
                           None) or "B"
    else:
        downsample = value(model_cfg, "downsample", lambda x: x is None, f"empty for {name}", None)
    classes = value(data_cfg, "classes", lambda x: integer(x) and x >= 2, "an integer >= 2")
    image_size = value(data_cfg, "image_size", lambda x: x in (32, 64), "32 or 64", 32)
    return name, width, downsample, classes, image_size


def _spec_for(path, cfg):
    """What to build for the checkpoint at `path`: from its run config, else from the command line's model."""
    run_cfg, source = _run_config(path)
    if run_cfg is None:
        def complain(key, value, allowed):
            section = "data" if key in ("classes", "image_size") else "model"
            raise refusal(f"{section}.{key}", value, f"expected {allowed}")

        model_cfg = OmegaConf.to_container(cfg.model)
        data_cfg = {"classes": cfg.data.classes, "image_size": cfg.data.image_size}
        return _model_spec(model_cfg, data_cfg, complain), os.path.basename(path)

    def complain(key, value, allowed):
        section = "data" if key in ("classes", "image_size") else "model"
        has = f"no {section}.{key}" if value is _ABSENT else f"{section}.{key}={value!r}"
        raise _refuse(path, f"its run config {source} has {has}; expected {allowed}")

    spec = _model_spec(run_cfg["model"], run_cfg["data"], complain)
    return spec, str(run_cfg.get("name") or os.path.basename(path))


def _forbidden_global(error):
    """The global a refused pickle names ('posix.system'), or None when the file is damaged instead."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1).rstrip(".") if found else None


def _read_weights(path, device):
    """The checkpoint's contents through the weights-only loader: a file that names anything but tensors and
    plain containers is refused before any of it runs."""
    if not os.path.exists(path):
        raise _refuse(path, "no such file")
    if not os.path.isfile(path):
        raise _refuse(path, "it is not a file")
    try:
        with warnings.catch_warnings():  # e.g. on pickle protocols torch.save never writes: stderr stays one line
            warnings.simplefilter("ignore")
            return load_weights(path, device)
    except Exception as error:  # unpickling errors have many types (EOFError, KeyError, RuntimeError, ...)
        forbidden = _forbidden_global(error)
        if forbidden:
            raise _refuse(path, f"it refers to {forbidden}, which is not a tensor or plain container; it was not "
                                "loaded, since unpickling what a file names can run code") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
        reason = detail.group(1).strip()[:120] if detail else type(error).__name__
        raise _refuse(path, f"it cannot be read as a PyTorch file of weights ({reason})") from None


def load_model(path, cfg, device):
    """The model stored at `path`, built from its run's config (or cfg.model), with a one-line error if unusable."""
    state = _read_weights(path, device)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint, not a bare state_dict
    (name, width, downsample, classes, image_size), run_name = _spec_for(path, cfg)
    for key, built in (("classes", classes), ("image_size", image_size)):
        require(cfg.data[key] == built, f"data.{key}", f"{built}, as the model in {path} was built for", cfg.data[key])
    model = build_model(name, width, classes, image_size, downsample)
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError, ValueError, KeyError) as error:
        raise _refuse(path, f"it does not fit {name} width {width} (downsample {downsample}) with {classes} classes "
                            f"({first_line(error, 200) or type(error).__name__})") from None
    broken = next((key for key, value in model.state_dict().items()
                   if value.is_floating_point() and not torch.isfinite(value).all()), None)
    if broken:
        raise _refuse(path, f"its weights hold NaN or infinity ({broken}); every point of its landscape would too")
    return model.to(device), run_name


def _run_dir(path):
    """The run folder of a model.pt or checkpoints/step-N.pt (the folder holding .hydra/), or None."""
    for run_dir in _candidate_run_dirs(path):
        if os.path.isdir(os.path.join(run_dir, ".hydra")):
            return run_dir
    return None


def _labels(paths, given):
    """Legend names: as given, else what differs between the runs ('hyp=fbclip seed=1'), counted like the job
    folders when runs repeat; a checkpoint without a run folder is named by its file."""
    if given:
        return list(given)
    run_dirs = [_run_dir(path) for path in paths]
    if all(run_dirs):
        labels = distinguishing_labels(run_dirs)
        if len(set(labels)) == len(labels):
            return labels
    names = [os.path.relpath(path) for path in paths]
    return names


DATA_IDENTITY = ("name", "classes", "image_size")


def _merged_data(path, source, trained):
    """The saved data config in this version's schema; a key or value it does not know fails in one line."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DataConfig), trained)
    except (OmegaConfBaseException, ValueError) as error:
        raise _refuse(path, f"the data section of its run config {source} does not fit this version "
                            f"({first_line(error, 120)})") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise _refuse(path, f"the data section of its run config {source} has no {', '.join(missing)}")
    try:
        validate_data(merged)
    except ConfigError as error:  # said of the run's file, not of the command line
        raise _refuse(path, f"its run config {source} has {str(error).replace(' is not allowed: ', '; ')}") from None
    return merged


def data_config(cfg, paths, explicit):
    """The data to evaluate on: the training runs' own data config, unless data was given on the command line;
    then it must be the data the models were trained on (name, classes, image size), or allow_other_data=true."""
    run_configs = [(path, *_run_config(path)) for path in paths]
    trained = [(path, source, run["data"]) for path, run, source in run_configs if run]
    if not explicit:
        if not trained:
            return cfg.data
        first_path, first_source, first = trained[0]
        for path, _, other in trained[1:]:
            if any(other.get(key) != first.get(key) for key in DATA_IDENTITY):
                raise ConfigError(f"checkpoints={paths} is not allowed: {path} was trained on {other.get('name')} and "
                                  f"{first_path} on {first.get('name')}; crunch them separately")
        return _merged_data(first_path, first_source, first)
    if not cfg.get("allow_other_data", False):
        for path, _, trained_data in trained:
            for key in DATA_IDENTITY:
                wanted, given = trained_data.get(key), cfg.data[key]
                if wanted is not None and str(wanted) != str(given):
                    raise ConfigError(f"data.{key}={str(given)!r} is not allowed for {path}: its run was trained with "
                                      f"data.{key}={wanted!r}; leave data out to use the run's own, or set "
                                      "allow_other_data=true")
    return cfg.data


def _subset(images, labels, count, seed, key):
    """A seeded random subset of `count` examples (all when empty), in random order: per-block BatchNorm
    statistics must not depend on how the files happen to be sorted (some copies are sorted by class)."""
    require(count is None or count <= len(labels), key, f"empty (all) or an integer in [1, {len(labels)}] (the "
            "number of examples there are)", count)
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count].to(labels.device)
    return images[keep], labels[keep]


def _coordinates(viz):
    alphas = np.linspace(viz.xmin, viz.xmax, viz.resolution)
    if viz.name == "1d":
        return alphas, None, [(a,) for a in alphas]
    betas = np.linspace(viz.ymin, viz.ymax, viz.resolution)
    return alphas, betas, [(a, b) for a in alphas for b in betas]


def crunch(cfg, output_dir, overrides=()):
    """Evaluate every checkpoint along the same directions; save data, figure and flatness; return the data.
    `overrides` are the command line's: data given there is checked against the data the models were trained on."""
    validate_crunch(cfg)
    paths = _checkpoint_paths(cfg)
    for path in paths:
        check_run_files(path)
    explicit = any(item.lstrip("+~").split("=")[0].split(".")[0].split("/")[0] == "data" for item in overrides)
    cfg.data = data_config(cfg, paths, explicit)
    validate_data(cfg.data)
    device = configure_backend(cfg.impl, cfg.seed)
    models = [load_model(path, cfg, device) for path in paths]
    labels = _labels(paths, cfg.labels)
    if cfg.viz.name == "none":
        log.info(f"viz=none: {len(models)} checkpoint(s) load; nothing to crunch")
        return None
    dataset = load_device_dataset(cfg.data, cfg.seed, device)
    datasets = {"train": _subset(dataset.train_images, dataset.train_labels, cfg.viz.train_examples, cfg.viz.seed,
                                 "viz.train_examples"),
                "val": _subset(dataset.test_images, dataset.test_labels, cfg.viz.val_examples, cfg.viz.seed,
                               "viz.val_examples")}
    alphas, betas, points = _coordinates(cfg.viz)
    data = {key: [] for key in QUANTITIES}
    progress = Progress(len(models) * len(points))
    log.info(f"Crunching {len(models)} model(s) x {len(points)} points on {cfg.data.name} "
             f"({len(datasets['train'][1])} train, {len(datasets['val'][1])} validation examples)")
    for number, ((model, _), label) in enumerate(zip(models, labels)):
        def report(point, number=number, label=label):
            log.info(f"model {number + 1}/{len(models)} ({label}) point {tuple(round(float(c), 4) for c in point)}: "
                     f"{progress.tick()}")

        params = [p for p in model.parameters() if p.requires_grad]
        seeds = [cfg.viz.seed] if betas is None else [cfg.viz.seed, cfg.viz.seed + 1]
        directions = [random_direction(params, seed, cfg.viz.normalization, cfg.viz.perturb_bn) for seed in seeds]
        batch = cfg.data.batch_size if cfg.viz.bn_mode == "batch" else cfg.impl.eval_batch_size
        values = evaluate_grid(model, directions, points, datasets, dataset.normalize, batch, cfg.viz.bn_mode,
                               after_point=report)
        shape = (len(alphas),) if betas is None else (len(alphas), len(betas))
        for split in ("train", "val"):
            data[f"{split}_loss"].append(values[split][:, 0].reshape(shape))
            data[f"{split}_acc"].append(values[split][:, 1].reshape(shape))
    data = {key: np.stack(value) for key, value in data.items()}
    data.update(alphas=alphas, labels=np.array(labels))
    if betas is not None:
        data["betas"] = betas
    os.makedirs(output_dir, exist_ok=True)
    np.savez(os.path.join(output_dir, "landscape.npz"), config=OmegaConf.to_yaml(cfg), **data)
    plot_saved(os.path.join(output_dir, "landscape.npz"))
    summary = flatness(data, cfg.viz.flatness_radius)
    write_json(os.path.join(output_dir, "flatness.json"), summary)
    log.info(f"Wrote {output_dir}/landscape.npz, landscape.png, landscape.pdf and flatness.json")
    for label, values in summary.items():
        log.info(f"{label}: train loss {values['loss_at_model']:.4f} at the model, "
                 f"+{values['loss_increase']:.4f} at distance {values['radius']}")
    return data
