"""Typed schemas for the Hydra config, registered in the ConfigStore.

The YAML files under `config/` hold the values; these dataclasses hold the types, so Hydra rejects a
misspelt key, a wrong type or an unknown choice (the Enums of `fullbatch.config.choices`) while composing, before
any work. Range and combination checks that a type cannot express live in `fullbatch.run.validation`.
"""
import functools
import os
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from fullbatch.config.choices import (AnalysisPreset, Backend, CompileMode, Database, Dataset, Downsample, Dtype,
                                      LineSearch, MemoryFormat, Modification, Objective, OnDivergence, Optimizer,
                                      RegularizerMethod, RegularizerPrecision, Scheduler, Setup, Subset, Tracker)


@dataclass
class OptimConfig:
    name: Optimizer = MISSING
    lr: float = MISSING
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    line_search: Optional[LineSearch] = None  # SGD: armijo (needs momentum 0) | LBFGS: strong_wolfe | empty: none
    armijo_c: float = 1e-4  # sufficient-decrease constant of the Armijo condition
    backtrack: float = 0.5  # step-size factor per backtracking step
    max_backtracks: int = 20
    max_iter: int = 20  # LBFGS: evaluations (full-batch passes) per training step, at most
    history_size: int = 10  # LBFGS: curvature pairs kept


@dataclass
class OptimModificationConfig:
    name: Modification = Modification.none
    rho: float = 0.05  # SAM radius
    trust: float = 0.02  # LARS/LARC trust coefficient (the original's default)


@dataclass
class GradNoiseConfig:
    additive: Optional[float] = None  # std of Gaussian noise added to the full gradient
    multiplicative: Optional[float] = None  # std of elementwise (1 + noise) factor


@dataclass
class GradRegConfig:
    block_strength: float = MISSING
    acc_strength: float = MISSING
    eps: float = MISSING
    implementation: RegularizerMethod = MISSING
    norm: int = MISSING
    precision: RegularizerPrecision = MISSING


@dataclass
class NormBiasConfig:
    strength: float = MISSING
    norm_type: int = MISSING
    bias: float = MISSING


@dataclass
class HypConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    optim_modification: OptimModificationConfig = field(default_factory=OptimModificationConfig)
    train_stochastic: bool = MISSING
    train_semi_stochastic: bool = MISSING  # with data/db=LMDB: step s trains on round s mod N only
    shuffle: bool = MISSING
    steps: int = MISSING
    warmup: int = MISSING
    scheduler: Optional[Scheduler] = MISSING
    cosine_horizon: Optional[int] = None  # cosine-4000 only: its horizon (empty: 4000); scaled-down runs shrink it
    grad_clip: Optional[float] = MISSING
    grad_clip_norm: float = MISSING
    batch_clip: Optional[float] = MISSING
    label_smoothing: float = MISSING
    grad_noise: GradNoiseConfig = field(default_factory=GradNoiseConfig)
    grad_reg: GradRegConfig = field(default_factory=GradRegConfig)
    sub_batch: int = MISSING
    norm_bias: NormBiasConfig = field(default_factory=NormBiasConfig)
    evaluate_ema: bool = MISSING
    eval_ema_momentum: float = MISSING
    stop_at_full_training_accuracy: int = MISSING
    test_time_flips: bool = MISSING


@dataclass
class DatabaseConfig:
    name: Database = Database.none  # LMDB: N x CIFAR: `rounds` fixed augmented copies of the training set)
    path: str = "~/data/lmdb"  # folder of the database files
    rounds: int = 10
    map_size: Optional[int] = None  # bytes; empty: computed from the size
    augmentations: List[str] = field(default_factory=lambda: ["random_crop", "horizontal_flip"])
    crop_padding: int = 4
    seed: int = 0  # seed of the augmentations written to the file
    in_memory: Any = "auto"  # auto | true | false: keep the images on the training device or in host memory


@dataclass
class DataConfig:
    db: DatabaseConfig = field(default_factory=DatabaseConfig)
    name: Dataset = MISSING
    path: str = "~/data"
    download: bool = True
    size: Optional[int] = None  # use only `size` training examples (see `subset`)
    test_size: Optional[int] = None  # use only `test_size` validation examples
    subset: Subset = Subset.first  # first: the first examples | balanced: equal per class, drawn by subset_seed
    subset_seed: int = 0  # fixed, so that a seed sweep trains on the same subset
    image_size: int = 32  # height and width of the images
    batch_size: int = 128  # the block size in full-batch mode, the mini-batch size in SGD mode
    drop_last_block: bool = False  # true: leave out the last, smaller block (mini-batch), as the original does
    augmentations_train: Any = field(default_factory=lambda: ["random_crop", "horizontal_flip"])
    crop_padding: int = 4
    classes: int = 10
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    seed: int = 0  # only for generated data (synthetic): fixed, so a seed sweep trains on the same set


@dataclass
class ModelConfig:
    name: str = MISSING
    width: int = MISSING  # channels of the first stage
    downsample: Optional[Downsample] = None  # ResNets: shortcut type B or C (see fullbatch/models/resnet.py)


@dataclass
class CheckpointConfig:
    save_every_nth_step: int = MISSING  # 0: only the final model
    keep: int = MISSING
    resume: Any = MISSING  # auto | true | false | a checkpoint path (see fullbatch/run/resume.py)
    search_dir: str = MISSING
    on_divergence: OnDivergence = MISSING  # restore: the last good checkpoint, with half the learning rate
    max_restores: int = MISSING


@dataclass
class SetupConfig:
    name: Setup = MISSING  # distributed: launched with torchrun
    backend: Backend = Backend.auto  # auto: nccl on GPUs, gloo on CPUs
    timeout_seconds: int = 600  # a collective that waits longer than this fails the job instead of hanging
    check_every_nth_step: int = 10  # compare parameter checksums across ranks every this many steps
    batch_shards: Optional[int] = None  # SGD mode: pieces per mini-batch with their own BatchNorm statistics


@dataclass
class ImplConfig:
    setup: SetupConfig = field(default_factory=SetupConfig)
    device: str = MISSING
    dtype: Dtype = MISSING  # parameters and arithmetic; float64 for exactness checks
    mixed_precision: bool = MISSING
    memory: MemoryFormat = MISSING
    compile: bool = MISSING
    compile_mode: CompileMode = MISSING  # torch.compile mode; reduce-overhead adds CUDA graphs on GPUs
    threads: int = MISSING
    deterministic: bool = MISSING
    benchmark: bool = MISSING
    merge_blocks: int = MISSING  # full batch: blocks per forward pass, BatchNorm still per block
    validate_every_nth_step: int = MISSING
    eval_batch_size: int = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class AnalysisConfig:
    name: AnalysisPreset = AnalysisPreset.none
    check_every_nth_step: int = 10
    final_only: bool = False  # measure at the last step only
    block_statistics: bool = False  # per-block gradient norms, SNR, noise scale (one extra pass)
    sharpness: bool = False  # top Hessian eigenvalue by power iteration
    power_iterations: int = 20
    trace_samples: int = 0
    blocks: Optional[int] = None  # evaluate on the first this many blocks of the step; empty: all
    save_models_every_nth_step: int = 0  # keep models/step-N.pt for later landscape crunching; 0: never


@dataclass
class LoggerConfig:
    name: Tracker = Tracker.none
    project: str = "fullbatch"  # wandb
    entity: Optional[str] = None  # wandb: team or user; empty: the default
    group: Optional[str] = None  # wandb
    tags: List[str] = field(default_factory=list)  # wandb


@dataclass
class TrainConfig:
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    hyp: HypConfig = field(default_factory=HypConfig)
    impl: ImplConfig = field(default_factory=ImplConfig)
    name: str = "default"
    seed: int = 0
    dryrun: bool = False
    template: str = "default"
    tables: str = "tables"  # folder of the results tables (relative: to the working directory)
    objective: Objective = Objective.final_val_acc  # what a job returns to a Hydra sweeper (optuna)


@dataclass
class VizConfig:
    name: str = MISSING  # none | 1d | 2d
    xmin: float = -1.0
    xmax: float = 1.0
    ymin: float = -1.0
    ymax: float = 1.0
    resolution: int = 21  # points per axis
    train_examples: Optional[int] = None  # a seeded random subset of this size; empty: all
    val_examples: Optional[int] = None
    seed: int = 0  # directions and subsets: the same seed gives the same directions for every model
    normalization: str = "filter"  # filter | layer | none
    perturb_bn: bool = False  # also move BatchNorm weights/biases and biases (scaled per tensor)
    bn_mode: str = "batch"  # batch: per-block statistics as in training | running: the saved statistics
    flatness_radius: float = 0.5  # loss increase at this distance along the normalized direction(s)


@dataclass
class CrunchConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    impl: ImplConfig = field(default_factory=ImplConfig)
    viz: VizConfig = field(default_factory=VizConfig)
    name: str = "landscape"
    seed: int = 0
    checkpoint: Optional[str] = None
    checkpoints: List[str] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    allow_other_data: bool = False  # evaluate on data other than the models were trained on


@functools.lru_cache(maxsize=None)
def _process_time():
    """The date/time of the first run folder named in this process: the entry script composes its arguments to
    check them before Hydra composes them again, and both must name the same folder."""
    return time.strftime("%Y-%m-%d/%H-%M-%S")


def run_stamp():
    """The run folder's last part: date/time and a part no other job started in the same second shares.

    Under torchrun every rank must name the same folder: its run id (plus the SLURM job, or the launcher's
    process, when the run id is torchrun's default "none"). Elsewhere the SLURM job id when present,
    else this process id, so array jobs or two shells started in the same second never share files."""
    stamp = _process_time()
    slurm = os.environ.get("SLURM_JOB_ID")  # unique per array task too
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if run_id == "none":
            run_id = f"none-{f'job{slurm}' if slurm else f'agent{os.getppid()}'}"
        return f"torchrun-{run_id}"
    return f"{stamp}-job{slurm}" if slurm else f"{stamp}-pid{os.getpid()}"


def register_configs():
    """Make the schema available as `train_schema` in the defaults list of `config/train.yaml`."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    ConfigStore.instance().store(name="crunch_schema", node=CrunchConfig)
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)


register_configs()
