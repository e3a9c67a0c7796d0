"""crunch(cfg): loss landscapes of saved models, written as data (landscape.npz, flatness.json) and figures."""
import json
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
from fullbatch.visualization.plots import QUANTITIES, plot_saved

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
    """The training config saved beside a checkpoint (model.pt or checkpoints/step-N.pt), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    for run_dir in (folder, os.path.dirname(folder)):
        saved = os.path.join(run_dir, ".hydra", "config.yaml")
        if os.path.isfile(saved):
            with open(saved) as handle:
                return yaml.safe_load(handle)
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


def _unique(labels):
    """Legend names must tell models apart: repeated names get a number."""
    return [label if labels.count(label) == 1 else f"{label} #{labels[:i].count(label) + 1}"
            for i, label in enumerate(labels)]


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


def flatness(data, radius):
    """Mean train-loss increase at distance `radius` from the model along each direction axis."""
    result = {}
    for index, label in enumerate(data["labels"]):
        loss = data["train_loss"][index]
        if "betas" in data:
            middle = len(data["betas"]) // 2
            rows, columns = loss[:, middle], loss[len(data["alphas"]) // 2, :]
            centre = np.interp(0.0, data["alphas"], rows)
            around = [np.interp(r, data["alphas"], rows) for r in (-radius, radius)]
            around += [np.interp(r, data["betas"], columns) for r in (-radius, radius)]
        else:
            centre = np.interp(0.0, data["alphas"], loss)
            around = [np.interp(r, data["alphas"], loss) for r in (-radius, radius)]
        result[label] = dict(loss_at_model=float(centre), loss_increase=float(np.mean(around) - centre),
                             radius=radius)
    return result


def crunch(cfg, output_dir):
    """Evaluate every checkpoint along the same directions; save data, figure and flatness; return the data."""
    validate_viz(cfg.viz)
    validate_data(cfg.data)
    paths = list(cfg.checkpoints) + ([cfg.checkpoint] if cfg.checkpoint else [])
    if not paths:
        raise ConfigError("checkpoint= is not allowed to be empty: give checkpoint=PATH or checkpoints='[A, B]'")
    device = configure_backend(cfg.impl, cfg.seed)
    models = [load_model(path, cfg, device) for path in paths]
    labels = _unique(list(cfg.labels) or [label for _, label in models])
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
    for model, _ in models:
        params = [p for p in model.parameters() if p.requires_grad]
        seeds = [cfg.viz.seed] if betas is None else [cfg.viz.seed, cfg.viz.seed + 1]
        directions = [random_direction(params, seed, cfg.viz.normalization, cfg.viz.perturb_bn) for seed in seeds]
        batch = cfg.data.batch_size if cfg.viz.bn_mode == "batch" else cfg.impl.eval_batch_size
        values = evaluate_grid(model, directions, points, datasets, dataset.normalize, batch, cfg.viz.bn_mode)
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
    with open(os.path.join(output_dir, "flatness.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    for label, values in summary.items():
        log.info(f"{label}: train loss {values['loss_at_model']:.4f} at the model, "
                 f"+{values['loss_increase']:.4f} at distance {values['radius']}")
    return data
