"""Start-up checks of the composed config: every failure is one line naming the key and what is allowed.

Types and key names are already checked by Hydra against `fullbatch.config.schema`; this covers ranges, choices and
combinations, so a bad sweep entry fails in seconds instead of after an hour of training.
"""
import math
import os

from omegaconf import DictConfig, OmegaConf

from fullbatch.config.choices import Database, Dataset, Dtype, LineSearch, Modification, Optimizer, Setup
from fullbatch.config.limits import (DEVICE_NAMES, MAX_CLASSES, MAX_MODEL_WIDTH, SEED_LIMIT, SEED_RANGE, SYNTHETIC_MAX,
                                     is_device_name)
from fullbatch.data.augmentation import AUGMENTATIONS, augmentation_names
from fullbatch.errors import ConfigError, first_line, refusal, require
from fullbatch.files.atomic import unsafe_folder
from fullbatch.models.registry import MODELS, RESNETS


def _optional_positive(value, key):
    require(value is None or value > 0, key, "empty (off) or a number > 0", value)


def validate_hyp(hyp):
    require(hyp.steps >= 1, "hyp.steps", "an integer >= 1", hyp.steps)
    require(0 <= hyp.warmup, "hyp.warmup", "an integer >= 0", hyp.warmup)
    require(hyp.cosine_horizon is None or (hyp.cosine_horizon >= 1 and str(hyp.scheduler) == "cosine-4000"),
            "hyp.cosine_horizon", "empty, or an integer >= 1 with hyp.scheduler=cosine-4000", hyp.cosine_horizon)
    require(hyp.optim.lr > 0, "hyp.optim.lr", "a number > 0", hyp.optim.lr)
    require(hyp.optim.weight_decay >= 0, "hyp.optim.weight_decay", "a number >= 0", hyp.optim.weight_decay)
    require(0 <= hyp.optim.momentum < 1, "hyp.optim.momentum", "a number in [0, 1)", hyp.optim.momentum)
    validate_optimizer_settings(hyp.optim)
    validate_exact_optimizers(hyp)
    modification = hyp.optim_modification
    require(modification.rho > 0 and modification.trust > 0, "hyp.optim_modification.rho/trust", "numbers > 0",
            (modification.rho, modification.trust))
    require(modification.name == Modification.none or hyp.optim.name != Optimizer.LBFGS, "hyp/optim_modification",
            "none with L-BFGS", modification.name)
    require(modification.name == Modification.none or not hyp.train_stochastic, "hyp/optim_modification",
            "none in stochastic mode (the modifications act on the exact full gradient)", modification.name)
    _optional_positive(hyp.grad_clip, "hyp.grad_clip")
    _optional_positive(hyp.batch_clip, "hyp.batch_clip")
    require(hyp.grad_clip_norm == 2 or hyp.grad_clip_norm == math.inf, "hyp.grad_clip_norm", "2 or inf",
            hyp.grad_clip_norm)
    require(0 <= hyp.label_smoothing < 1, "hyp.label_smoothing", "a number in [0, 1)", hyp.label_smoothing)
    for kind in ("additive", "multiplicative"):
        value = hyp.grad_noise[kind]
        require(value is None or value >= 0, f"hyp.grad_noise.{kind}", "empty (off) or a number >= 0", value)
    require(hyp.sub_batch >= 1, "hyp.sub_batch", "an integer >= 1", hyp.sub_batch)
    require(hyp.norm_bias.strength >= 0, "hyp.norm_bias.strength", "a number >= 0", hyp.norm_bias.strength)
    require(hyp.norm_bias.norm_type in (1, 2), "hyp.norm_bias.norm_type", "1 or 2", hyp.norm_bias.norm_type)
    require(0 < hyp.eval_ema_momentum < 1, "hyp.eval_ema_momentum", "a number in (0, 1)", hyp.eval_ema_momentum)
    require(hyp.stop_at_full_training_accuracy >= 0, "hyp.stop_at_full_training_accuracy",
            "an integer >= 0 (0: never stop early)", hyp.stop_at_full_training_accuracy)
    validate_grad_reg(hyp)


def validate_optimizer_settings(optim):
    """What torch's optimizers would refuse with a traceback at the first step, refused here in one line."""
    require(0 <= optim.dampening < 1, "hyp.optim.dampening", "a number in [0, 1)", optim.dampening)
    if optim.name == Optimizer.SGD and optim.nesterov:
        require(optim.momentum > 0, "hyp.optim.momentum", "a number > 0 with hyp.optim.nesterov=true (Nesterov "
                "needs momentum; add hyp.optim.nesterov=false for plain gradient descent)", optim.momentum)
        require(optim.dampening == 0, "hyp.optim.dampening", "0 with hyp.optim.nesterov=true", optim.dampening)
    if optim.name == Optimizer.AdamW:
        require(len(optim.betas) == 2 and all(0 <= beta < 1 for beta in optim.betas), "hyp.optim.betas",
                "two numbers in [0, 1)", list(optim.betas))
        require(optim.eps > 0, "hyp.optim.eps", "a number > 0", optim.eps)
    require(optim.max_backtracks >= 0, "hyp.optim.max_backtracks", "an integer >= 0", optim.max_backtracks)
    require(0 < optim.armijo_c < 1, "hyp.optim.armijo_c", "a number in (0, 1)", optim.armijo_c)


def given_values(cfg):
    """Every value is given and every interpolation resolves: a `???` left for the command line or an unset
    environment variable otherwise fails later, with a traceback, wherever the value is first read."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"{missing[0]}='???' is not allowed: expected a value (??? marks one that must be "
                              f"given on the command line, e.g. {missing[0]}=...)")
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "a value"
        raise ConfigError(f"{key} is not allowed: it cannot be resolved ({first_line(error)})") from None


def seeds_in_range(cfg, maximum=SEED_LIMIT):
    """Every seed is a valid NumPy and PyTorch seed; negative ones fail deep inside data loading otherwise."""
    def walk(node, path):
        for key, value in node.items():
            dotted = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict):
                walk(value, dotted)
            elif str(key).endswith("seed") and isinstance(value, int) and not 0 <= value < maximum:
                raise refusal(dotted, value, f"expected {SEED_RANGE}")

    walk(OmegaConf.to_container(cfg, resolve=True), "")


def plain_file_name(value, key, label, names):
    """A run name or table template becomes one folder or file name: never a path, never empty, and short
    enough in bytes for every file system (255 bytes; an accented letter takes two)."""
    text = str(value)
    require(text.strip() not in ("", ".", "..") and not any(c in text for c in ("/", "\\", "\0")), key,
            f"a {label} that is not empty, '.' or '..' and has no path separators (it names a {names})", value)
    require(len(text.encode("utf-8", "surrogatepass")) <= 200, key, f"at most 200 bytes in UTF-8 (it names a {names})",
            text[:40] + "...")


def existing_or_creatable_folder(folder, key):
    """A folder path that is empty, a dangling link or a link loop fails at the first read of the data."""
    text = "" if folder is None else str(folder)
    require(text.strip() != "", key, "a folder (an empty path names none)", folder)
    path = os.path.expanduser(text)
    require(not os.path.isfile(path), key, "a folder (it names a file)", folder)
    require(not (os.path.islink(path) and not os.path.exists(path)), key,
            "a folder (it is a dangling link or a link loop)", folder)


def finite_numbers(cfg):
    """Every float in the config is finite (NaN and infinity train into a divergence hours later), except the
    clipping norm's type, where inf means the max-norm."""
    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for value in node:
                walk(value, path)
        elif isinstance(node, float) and not math.isfinite(node) and path != "hyp.grad_clip_norm":
            raise ConfigError(f"{path}={node!r} is not allowed: expected a finite number")

    walk(OmegaConf.to_container(cfg, resolve=True), "")


def validate_exact_optimizers(hyp):
    """L-BFGS and line searches evaluate the exact full-batch objective: they need full-batch mode."""
    optim = hyp.optim
    allowed = {Optimizer.SGD: (None, LineSearch.armijo), Optimizer.AdamW: (None,),
               Optimizer.LBFGS: (None, LineSearch.strong_wolfe)}[optim.name]
    require(optim.line_search in allowed, "hyp.optim.line_search", f"one of {allowed} for {optim.name}",
            optim.line_search)
    exact = optim.name == Optimizer.LBFGS or optim.line_search is not None
    require(not exact or not hyp.train_stochastic, "hyp.train_stochastic",
            "false with L-BFGS or a line search (they need exact full-batch gradients)", hyp.train_stochastic)
    require(optim.line_search != LineSearch.armijo or optim.momentum == 0, "hyp.optim.momentum",
            "0 with line_search=armijo (backtracking moves along the gradient itself)", optim.momentum)
    require(not exact or not (hyp.grad_noise.additive or hyp.grad_noise.multiplicative), "hyp.grad_noise",
            "off with L-BFGS or a line search (noise breaks their curvature and decrease tests)",
            dict(hyp.grad_noise))
    if optim.line_search == LineSearch.armijo:  # it tests loss + weight decay along -grad F: nothing may bend the direction
        bending = {"hyp.grad_clip": hyp.grad_clip, "hyp.batch_clip": hyp.batch_clip,
                   "hyp.grad_reg.block_strength": hyp.grad_reg.block_strength or None,
                   "hyp.grad_reg.acc_strength": hyp.grad_reg.acc_strength or None,
                   "hyp.norm_bias.strength": hyp.norm_bias.strength or None}
        for key, value in bending.items():
            require(value is None, key, "off with line_search=armijo (its decrease test sees only the loss and "
                    "weight decay, so the step must follow their gradient)", value)
        require(hyp.optim_modification.name == Modification.none, "hyp/optim_modification",
                "none with line_search=armijo (SAM and LARS change the step's direction)", hyp.optim_modification.name)
    require(0 < optim.backtrack < 1, "hyp.optim.backtrack", "a number in (0, 1)", optim.backtrack)
    require(optim.max_iter >= 1 and optim.history_size >= 1, "hyp.optim.max_iter/history_size", "integers >= 1",
            (optim.max_iter, optim.history_size))


def validate_grad_reg(hyp):
    reg = hyp.grad_reg
    require(reg.norm == 2, "hyp.grad_reg.norm", "2 (the only norm implemented)", reg.norm)
    require(reg.eps > 0, "hyp.grad_reg.eps", "a number > 0", reg.eps)
    require(reg.block_strength >= 0, "hyp.grad_reg.block_strength", "a number >= 0", reg.block_strength)
    require(reg.acc_strength >= 0, "hyp.grad_reg.acc_strength", "a number >= 0", reg.acc_strength)


def validate_data(data):
    require(data.batch_size >= 1, "data.batch_size", "an integer >= 1", data.batch_size)
    for key, value in (("data.size", data.size), ("data.test_size", data.test_size)):
        require(value is None or value >= 1, key, "empty (all) or an integer >= 1", value)
        if data.name == Dataset.synthetic:  # generated in memory, about 25 kB per image while it is drawn
            require(value is None or value <= SYNTHETIC_MAX, key,
                    f"at most {SYNTHETIC_MAX} for data.name=synthetic (it is generated in memory)", value)
    require(0 <= data.crop_padding <= data.image_size, "data.crop_padding",
            f"an integer in [0, {data.image_size}] (the image size)", data.crop_padding)
    require(data.image_size == (64 if data.name == Dataset.TinyImageNet else 32), "data.image_size",
            f"{64 if data.name == 'TinyImageNet' else 32} for data.name={data.name}", data.image_size)
    require(2 <= data.classes <= MAX_CLASSES, "data.classes", f"an integer in [2, {MAX_CLASSES}]", data.classes)
    require(len(data.mean) == 3 and len(data.std) == 3 and min(data.std) > 0, "data.mean/data.std",
            "three channel values, std > 0", (list(data.mean), list(data.std)))
    online = augmentation_names(data.augmentations_train)
    validate_database(data.db, online, data.image_size)
    if data.name != Dataset.synthetic:
        existing_or_creatable_folder(data.path, "data.path")
    if data.db.name != Database.none:
        existing_or_creatable_folder(data.db.path, "data.db.path")


def validate_database(db, online_augmentations, image_size=32):
    require(db.name == Database.none or image_size == 32, "data/db", "none for images other than 32x32 (N x CIFAR)",
            db.name)
    require(db.rounds >= 1, "data.db.rounds", "an integer >= 1", db.rounds)
    require(db.map_size is None or db.map_size > 0, "data.db.map_size", "empty or a number of bytes > 0",
            db.map_size)
    for name in db.augmentations:
        require(name in AUGMENTATIONS, "data.db.augmentations", f"a list drawn from {AUGMENTATIONS}", name)
    require(str(db.in_memory).lower() in ("auto", "true", "false"), "data.db.in_memory", "auto, true or false",
            db.in_memory)
    require(str(db.in_memory).lower() != "false" or not online_augmentations, "data.db.in_memory",
            "auto or true while data.augmentations_train is set (host-resident data is not augmented online)",
            db.in_memory)


def validate_impl(impl):
    require(is_device_name(impl.device), "impl.device", DEVICE_NAMES, impl.device)
    require(not (impl.mixed_precision and impl.dtype == Dtype.float64), "impl.mixed_precision",
            "false with impl.dtype=float64 (bf16 autocast is for float32 models)", impl.mixed_precision)
    require(0 <= impl.threads <= 1024, "impl.threads", "an integer in [0, 1024] (0: PyTorch's default)",
            impl.threads)
    require(impl.merge_blocks >= 1, "impl.merge_blocks", "an integer >= 1 (1: one block per forward pass)",
            impl.merge_blocks)
    require(impl.validate_every_nth_step >= 1, "impl.validate_every_nth_step", "an integer >= 1",
            impl.validate_every_nth_step)
    require(impl.eval_batch_size >= 1, "impl.eval_batch_size", "an integer >= 1", impl.eval_batch_size)
    validate_setup(impl.setup)
    ckpt = impl.checkpoint
    require(ckpt.save_every_nth_step >= 0, "impl.checkpoint.save_every_nth_step", "an integer >= 0 (0: off)",
            ckpt.save_every_nth_step)
    require(ckpt.keep >= 1, "impl.checkpoint.keep", "an integer >= 1", ckpt.keep)
    require(isinstance(ckpt.resume, (bool, str)), "impl.checkpoint.resume", "auto, true, false or a checkpoint path",
            ckpt.resume)
    require(ckpt.max_restores >= 0, "impl.checkpoint.max_restores", "an integer >= 0", ckpt.max_restores)
    problem = unsafe_folder(ckpt.search_dir)
    require(problem is None, "impl.checkpoint.search_dir", problem and problem.removeprefix("expected "),
            ckpt.search_dir)


def validate_analysis(analysis):
    require(analysis.save_models_every_nth_step >= 0, "analysis.save_models_every_nth_step",
            "an integer >= 0 (0: never)", analysis.save_models_every_nth_step)
    require(analysis.check_every_nth_step >= 1, "analysis.check_every_nth_step", "an integer >= 1",
            analysis.check_every_nth_step)
    require(analysis.power_iterations >= 1, "analysis.power_iterations", "an integer >= 1",
            analysis.power_iterations)
    require(analysis.trace_samples >= 0, "analysis.trace_samples", "an integer >= 0", analysis.trace_samples)
    require(analysis.blocks is None or analysis.blocks >= 1, "analysis.blocks", "empty or an integer >= 1",
            analysis.blocks)


def validate_setup(setup):
    require(setup.timeout_seconds > 0, "impl.setup.timeout_seconds", "an integer > 0", setup.timeout_seconds)
    require(setup.check_every_nth_step >= 1, "impl.setup.check_every_nth_step", "an integer >= 1",
            setup.check_every_nth_step)
    require(setup.batch_shards is None or setup.batch_shards >= 1, "impl.setup.batch_shards",
            "empty or an integer >= 1", setup.batch_shards)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    require(world_size == 1 or "RANK" in os.environ, "WORLD_SIZE", "unset, or set together with RANK (as "
            "torchrun does)", os.environ.get("WORLD_SIZE"))
    require(world_size == 1 or setup.name == Setup.distributed, "impl/setup",
            f"distributed when launched by torchrun (WORLD_SIZE={world_size}); add impl/setup=distributed",
            setup.name)
    require(world_size == 1 or setup.batch_shards in (None, world_size), "impl.setup.batch_shards",
            f"empty or the world size {world_size} under torchrun", setup.batch_shards)


def validate(cfg: DictConfig):
    """Check the whole config; raise ConfigError on the first problem."""
    from fullbatch.run.trackers import check_installed

    given_values(cfg)
    # the run name is a folder under outputs/ and the scope of resume=auto: '', '.' or '..' would widen it
    plain_file_name(cfg.name, "name", "run name", "folder")
    plain_file_name(cfg.template, "template", "table name", "file")
    finite_numbers(cfg)
    seeds_in_range(cfg)
    if "logger" in cfg:  # the crunch config has none
        check_installed(cfg.logger.name)
    validate_data(cfg.data)
    require(not cfg.hyp.train_semi_stochastic or cfg.data.db.name == Database.LMDB, "hyp.train_semi_stochastic",
            "false unless data/db=LMDB (it trains on one stored round per step)", cfg.hyp.train_semi_stochastic)
    require(cfg.model.name in MODELS, "model.name", f"one of {sorted(MODELS)}", cfg.model.name)
    require(1 <= cfg.model.width <= MAX_MODEL_WIDTH, "model.width", f"an integer in [1, {MAX_MODEL_WIDTH}]",
            cfg.model.width)
    require(0 <= cfg.seed < SEED_LIMIT, "seed", SEED_RANGE, cfg.seed)
    if cfg.model.name in RESNETS:
        require(cfg.model.downsample is not None, "model.downsample", "B or C for a ResNet", cfg.model.downsample)
    else:
        require(cfg.model.downsample is None, "model.downsample",
                f"empty for {cfg.model.name} (only ResNets have a downsampling shortcut)", cfg.model.downsample)
    validate_hyp(cfg.hyp)
    validate_impl(cfg.impl)
    validate_analysis(cfg.analysis)
    table = os.path.join(str(cfg.tables), f"{cfg.template}.csv")
    require(not os.path.isdir(table), "template", f"a name whose table {table} is not a folder", cfg.template)
