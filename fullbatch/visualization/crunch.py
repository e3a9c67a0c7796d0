"""crunch(cfg): loss landscapes of saved models, written as data (landscape.npz, flatness.json) and figures."""
import logging
import os

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

from fullbatch.data import load_device_dataset
from fullbatch.models import build_model
from fullbatch.models.registry import RESNETS
from fullbatch.runtime import configure_backend
from fullbatch.errors import ConfigError
from fullbatch.validation import validate_data
from fullbatch.visualization.directions import NORMALIZATIONS, random_direction
from fullbatch.visualization.landscape import evaluate_grid
from fullbatch.config import DataConfig
from fullbatch.outputs import write_json
from fullbatch.progress import Progress
from fullbatch.visualization.flatness import flatness
from fullbatch.visualization.plots import QUANTITIES, plot_saved
from fullbatch.visualization.runs import distinguishing_labels, read_summary

log = logging.getLogger("fullbatch")


def validate_viz(viz):
    checks = [(viz.name in ("none", "1d", "2d"), "viz", "none, 1d or 2d", viz.name),
              (viz.resolution >= 2, "viz.resolution", "an integer >= 2", viz.resolution),
              (viz.xmin < viz.xmax and viz.ymin < viz.ymax, "viz.xmin/xmax/ymin/ymax", "min < max",
               (viz.xmin, viz.xmax, viz.ymin, viz.ymax)),
              (viz.normalization in NORMALIZATIONS, "viz.normalization", f"one of {NORMALIZATIONS}", viz.normalization),
              (viz.bn_mode in ("batch", "running"), "viz.bn_mode", "batch or running", viz.bn_mode),
              (viz.flatness_radius > 0, "viz.flatness_radius", "a number > 0", viz.flatness_radius)]
    for condition, key, allowed, value in checks:
        if not condition:
            raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def _run_config(path):
    """The training config saved beside a checkpoint (model.pt or checkpoints/step-N.pt): Hydra's
    .hydra/config.yaml, else the resolved config in summary.json (runs started in-process); or None."""
    folder = os.path.dirname(os.path.abspath(path))
    for run_dir in (folder, os.path.dirname(folder)):
        saved = os.path.join(run_dir, ".hydra", "config.yaml")
        if os.path.isfile(saved):
            with open(saved) as handle:
                return yaml.safe_load(handle)
        summary = read_summary(run_dir)
        if isinstance(summary.get("config"), dict):
            return summary["config"]
    return None


def load_model(path, cfg, device):
    """The model stored at `path`, built from its run's config (or cfg.model), with a one-line error if unusable."""
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint={path!r} is not allowed: no such file")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # unpickling errors have many types
        raise ConfigError(f"checkpoint={path!r} is not allowed: it cannot be read ({type(error).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint, not a bare state_dict
    run_cfg = _run_config(path)
    model_cfg = run_cfg["model"] if run_cfg else OmegaConf.to_container(cfg.model)
    classes = run_cfg["data"]["classes"] if run_cfg else cfg.data.classes
    image_size = run_cfg["data"].get("image_size", 32) if run_cfg else cfg.data.image_size
    # runs saved before model.downsample existed were built with type-B shortcuts
    downsample = model_cfg.get("downsample", "B" if model_cfg["name"] in RESNETS else None)
    model = build_model(model_cfg["name"], model_cfg["width"], classes, image_size, downsample)
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as error:
        first = str(error).strip().splitlines()[0][:200]
        raise ConfigError(f"checkpoint={path!r} is not allowed: it does not fit {model_cfg['name']} width "
                          f"{model_cfg['width']} (downsample {downsample}) with {classes} classes ({first})") from None
    return model.to(device), run_cfg.get("name", os.path.basename(path)) if run_cfg else os.path.basename(path)


def _run_dir(path):
    """The run folder of a model.pt or checkpoints/step-N.pt (the folder holding .hydra/), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    for run_dir in (folder, os.path.dirname(folder)):
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


def data_config(cfg, paths, explicit):
    """The data to evaluate on: the training runs' own data config, unless data was given on the command line;
    then it must be the data the models were trained on (name, classes, image size), or allow_other_data=true."""
    run_configs = [(path, _run_config(path)) for path in paths]
    trained = [(path, run["data"]) for path, run in run_configs if run and "data" in run]
    if not explicit:
        if not trained:
            return cfg.data
        first_path, first = trained[0]
        for path, other in trained[1:]:
            if any(other.get(key) != first.get(key) for key in DATA_IDENTITY):
                raise ConfigError(f"checkpoints={paths} is not allowed: {path} was trained on {other.get('name')} and "
                                  f"{first_path} on {first.get('name')}; crunch them separately")
        return OmegaConf.merge(OmegaConf.structured(DataConfig), first)
    if not cfg.get("allow_other_data", False):
        for path, trained_data in trained:
            for key in DATA_IDENTITY:
                wanted, given = trained_data.get(key), cfg.data[key]
                if wanted is not None and str(wanted) != str(given):
                    raise ConfigError(f"data.{key}={str(given)!r} is not allowed for {path}: its run was trained with "
                                      f"data.{key}={wanted!r}; leave data out to use the run's own, or set "
                                      "allow_other_data=true")
    return cfg.data


def _subset(images, labels, count, seed):
    """A seeded random subset of `count` examples (all when empty), in random order: per-block BatchNorm
    statistics must not depend on how the files happen to be sorted (some copies are sorted by class)."""
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
    validate_viz(cfg.viz)
    paths = list(cfg.checkpoints) + ([cfg.checkpoint] if cfg.checkpoint else [])
    if not paths:
        raise ConfigError("checkpoint= is not allowed to be empty: give checkpoint=PATH or checkpoints='[A, B]'")
    explicit = any(item.lstrip("+~").split("=")[0].split(".")[0].split("/")[0] == "data" for item in overrides)
    cfg.data = data_config(cfg, paths, explicit)
    validate_data(cfg.data)
    device = configure_backend(cfg.impl, cfg.seed)
    models = [load_model(path, cfg, device) for path in paths]
    labels = _labels(paths, cfg.labels)
    if len(labels) != len(models):
        raise ConfigError(f"labels={list(cfg.labels)} is not allowed: expected one label per checkpoint ({len(models)})")
    if cfg.viz.name == "none":
        log.info(f"viz=none: {len(models)} checkpoint(s) load; nothing to crunch")
        return None
    dataset = load_device_dataset(cfg.data, cfg.seed, device)
    datasets = {"train": _subset(dataset.train_images, dataset.train_labels, cfg.viz.train_examples, cfg.viz.seed),
                "val": _subset(dataset.test_images, dataset.test_labels, cfg.viz.val_examples, cfg.viz.seed)}
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
