"""The typed schema of a run config (OmegaConf structured configs).

Each section is a dataclass; a YAML file is merged onto these defaults, so an
unknown key or a wrong type is an error at load time. Free-form mappings are
only where the keys belong to something else (a model's keyword arguments, a
loss's, a schedule's, an augmentation's, a sweep's swept keys). The optimizer
section is the one open section: besides its typed keys it takes any argument
of its optax alias, checked against the alias's signature by load_config.

A user component is named by import path, as Hydra's `_target_` does:
`{target: mypkg.layers.MyLayer, args: {...}}` in model.layers and
callbacks.custom, or `model: {target: mypkg.models.make, args: {...}}`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


__all__ = [
    "DataConfig", "ModelConfig", "LossConfig", "ObjectiveConfig", "OptimizerConfig", "TrainingConfig",
    "EarlyStoppingConfig", "ReduceLROnPlateauConfig", "CheckpointConfig", "CallbacksConfig",
    "MLflowConfig", "OutputConfig", "SampleConfig", "SweepConfig", "RunConfig",
]


@dataclass
class DataConfig:
    name: str = "mnist1d"                  # fdl.data.load name: mnist1d, mnist, fashion_mnist, npz, csv, text
    path: Optional[str] = None             # folder or file for mnist/fashion_mnist/npz/csv/text
    val_fraction: float = 0.1              # carved from train (stratified) when there is no val split;
                                           # text: the share of the bytes after train's (by position)
    preprocess: Optional[str] = None       # "standardize" | "min_max", fitted on train only
    target: str = "label"                  # "label" | "input" (autoencoders) | "one_vs_rest"
    positive_class: Optional[int] = None   # the class that is 1 when target is "one_vs_rest"
    limit_train: Optional[int] = None      # keep only the first N training examples (quick runs)
    augment: List[Any] = field(default_factory=list)  # [{random_shift: {max_shift: 3}}, ...]
    args: Dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of fdl.data.load


@dataclass
class ModelConfig:
    name: Optional[str] = None             # a name in fdl.nn.models.MODELS ...
    args: Dict[str, Any] = field(default_factory=dict)  # ... and its keyword arguments (or target's)
    layers: Optional[List[Any]] = None     # or a list of layer specs: [{Dense: {features: 10}}, Relu]
    target: Optional[str] = None           # or module.attribute of a function returning a Layer


@dataclass
class LossConfig:
    name: str = "cross_entropy"            # a name in fdl.losses.LOSSES; `loss: mse` for short
    args: Dict[str, Any] = field(default_factory=dict)  # its keyword arguments: {label_smoothing: 0.1}


@dataclass
class ObjectiveConfig:
    name: str = "supervised"               # a name in fdl.objectives.OBJECTIVES (replaces `loss:`)
    args: Dict[str, Any] = field(default_factory=dict)  # its arguments: {loss: mse}, {kl_weight: 0.5}


@dataclass
class OptimizerConfig:
    """Typed keys; any other key is an argument of the optax alias (`initial_accumulator_value`)."""

    name: str = "adam"                     # any optax alias, see fdl.optim.OPTIMIZERS
    learning_rate: float = 1e-3
    schedule: Optional[Dict[str, Any]] = None  # {name: cosine, decay_steps: 6000}, see fdl.optim
    clip_global_norm: Optional[float] = None
    weight_decay: Optional[float] = None
    accumulate_steps: int = 1
    momentum: Optional[float] = None       # the alias arguments most often set; null: the alias's default
    nesterov: Optional[bool] = None
    b1: Optional[float] = None
    b2: Optional[float] = None
    eps: Optional[float] = None


@dataclass
class TrainingConfig:
    epochs: int = 10
    batch_size: int = 32
    fused: bool = True                     # one lax.scan per epoch; false: one call per step
    eval_batch_size: int = 512
    verbose: int = 1                       # 0 quiet, 1 progress bar on a terminal, 2 a line per epoch
    devices: Any = None                    # data parallel over N local devices (or "all"); null: one; in a sweep: the devices per member
    shard_params: Optional[str] = None     # with devices: fsdp splits params and optimizer state over them
    model_axis: Optional[int] = None       # with devices: that many of them form a "model" axis (params split over it)
    precision: str = "float32"             # float32 | bfloat16 | float16 | mixed_bfloat16 | mixed_float16


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "val_loss"
    patience: int = 10
    mode: str = "auto"
    min_delta: float = 0.0
    restore_best: bool = True


@dataclass
class ReduceLROnPlateauConfig:
    enabled: bool = False
    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 5
    mode: str = "auto"
    min_delta: float = 0.0                 # the smallest change of `monitor` that counts as progress
    cooldown: int = 0                      # epochs to wait after a reduction before counting again
    min_learning_rate: float = 0.0


@dataclass
class CheckpointConfig:
    monitor: str = "val_loss"              # the best state (item "best" of every checkpoint) follows it
    mode: str = "auto"
    every: int = 1                         # epochs between checkpoints (and the final epoch)
    every_steps: Optional[int] = None      # and inside each epoch every this many steps (null: epoch ends only)
    every_seconds: Optional[float] = 10.0  # and at least this long after the previous one (null: no wait)
    keep: int = 2                          # the newest checkpoints kept under checkpoints/<step>/


@dataclass
class CallbacksConfig:
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    reduce_lr_on_plateau: ReduceLROnPlateauConfig = field(default_factory=ReduceLROnPlateauConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    custom: List[Any] = field(default_factory=list)  # [{target: mypkg.callbacks.Notify, args: {...}}]


@dataclass
class MLflowConfig:
    """`output.mlflow`: log the run to MLflow too (fdl.records.mlflow.MLflowLogger; pip install "fdl[mlflow]")."""

    tracking_uri: Optional[str] = None     # sqlite:///mlflow.db, http://host:5000; null: MLFLOW_TRACKING_URI
    experiment: Optional[str] = None       # null: the config's name
    run_name: Optional[str] = None         # null: the run directory's name


@dataclass
class OutputConfig:
    dir: Optional[str] = None              # the run directory; default <base>/<name>-<timestamp>
    base: str = "runs"
    tensorboard: bool = True
    plots: bool = True
    mlflow: Optional[MLflowConfig] = None  # {tracking_uri: ..., experiment: ...}: params, metrics, summary


@dataclass
class SampleConfig:
    """After training, `fdl train` writes text the model generates to samples.txt (data.name: text)."""

    prompt: str = "The "                   # the text to continue (its UTF-8 bytes are the tokens)
    length: int = 200                      # bytes to draw after the prompt
    temperature: float = 1.0               # softmax temperature; 0: greedy (argmax)


@dataclass
class SweepConfig:
    """The keys a `sweep:` section may have; fdl.runs.sweep.spec reads and checks the values.

    Members stop early and lower their learning rate as `callbacks:` says, as in `fdl train`.
    """

    method: str = "grid"
    seeds: int = 1
    num_samples: Optional[int] = None      # random/optuna: points to draw (default 16)
    sampler_seed: int = 0
    sampler: Any = "tpe"                   # a name, or {name: tpe, <sampler kwargs>}
    pruner: Any = "median"                 # a name ("none" disables), or {name: ..., <kwargs>}
    monitor: str = "val_loss"
    mode: str = "auto"
    population_size: Optional[int] = None  # points per population (default: all / 8 for optuna)
    max_members: Optional[int] = None
    strategy: str = "auto"
    storage: Optional[str] = None          # an Optuna storage URL (default: study.db in the sweep dir)
    study: Optional[str] = None            # the study name (default: the config's name)
    heartbeat_interval: int = 10           # seconds; a worker silent for grace_period loses its trials
    grace_period: int = 30
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    name: Optional[str] = None             # default: the config file's stem
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    objective: Optional[ObjectiveConfig] = None  # what to minimize instead of loss (fdl.objectives)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    metrics: List[str] = field(default_factory=lambda: ["accuracy"])
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    sweep: Optional[SweepConfig] = None    # see fdl.runs.sweep (fdl sweep)
    sample: Optional[SampleConfig] = None  # samples.txt after training (fdl.runs.samples)
