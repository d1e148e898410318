"""Experiment settings: YAML -> typed, validated, hashed :class:`Config` (the bottom layer).

A params file is a YAML mapping with up to five sections (``experiment``, ``data``, ``model``,
``neuron``, ``train``), each mirroring one dataclass below, plus an optional top-level
``base:`` naming another params file (relative to this one) that it extends::

    base: ../spikformer/cifar10.yaml
    neuron: {type: PLIF}

Resolution order, later wins: dataclass defaults -> ``base`` chain -> the file -> the preset
(``params/presets/<name>.yaml``) -> overrides (``"train.epochs=5"`` strings or a mapping of
dotted keys). Every key and every value type is checked; an unknown key, a wrong type, a
missing file or an unknown preset raises :class:`ConfigError` naming the key and the closest
valid one. This module imports no registry: whether ``model.name``, ``neuron.type``,
``model.encoding`` and ``data.name`` are registered names is checked one layer up, by
:func:`stlib.params.load_params`, where the registries are in reach.
``Config.to_dict()`` is what a run saves as ``config.yaml``; ``config_hash`` is the short
hash of everything that changes results (the output folder, device and loader workers do
not).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .registry import closest

PACKAGE_ROOT = Path(__file__).resolve().parent
#: The repository's ``params/`` folder (the package is installed editable from the repo).
PARAMS_DIR = PACKAGE_ROOT.parent / "params"
PRESETS_DIR = PARAMS_DIR / "presets"
DEFAULT_PARAMS = "params/spikformer/cifar10.yaml"


class ConfigError(ValueError):
    """A params file, preset or override that cannot be turned into a valid Config."""


def project_home() -> Path:
    """The folder that relative ``outputs/`` and ``data/`` paths resolve against, whatever the
    working directory (JupyterLab runs a notebook's kernel in ``notebooks/``): ``$STLIB_HOME``
    when set, else the repository this package is installed from (the folder with ``params/``),
    else the working directory."""
    env = os.environ.get("STLIB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return PARAMS_DIR.parent if PARAMS_DIR.is_dir() else Path.cwd()


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` as an absolute path; a relative one resolves against :func:`project_home`."""
    path = Path(path).expanduser()
    return (path if path.is_absolute() else project_home() / path).resolve()


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------


@dataclass
class ExperimentConfig:
    study: str = "default"  # runs land in <output_dir>/<study>/<run_id>/
    seed: int = 0
    output_dir: str = "outputs"  # a relative path resolves against project_home()


@dataclass
class DataConfig:
    name: str = "cifar10"  # see stlib.data.DATASETS
    root: str = "data"  # a relative path resolves against project_home()
    download: bool = False
    img_size: int | None = None  # None: the dataset's native size
    batch_size: int = 128
    val_batch_size: int | None = None  # None: batch_size
    num_workers: int = 4
    auto_augment: str | None = None  # timm RandAugment string, e.g. rand-m9-n1-mstd0.4-inc1
    hflip: float = 0.0
    re_prob: float = 0.0  # random erasing probability
    interpolation: str = "bicubic"
    train_subset: int | None = None  # quick runs: the first N of a fixed shuffle of the split
    val_subset: int | None = None


@dataclass
class ModelConfig:
    name: str = "spikformer_4_384"  # see stlib.list_models()
    T: int = 4  # time steps
    encoding: str = "direct"  # see stlib.encoders.ENCODERS
    num_classes: int | None = None  # None: the dataset's
    kwargs: dict = field(default_factory=dict)  # architecture overrides for create_model


@dataclass
class NeuronConfig:
    """The spiking neuron of every layer. ``None`` keeps the neuron type's own default."""

    type: str = "LIF"  # see stlib.neurons.NEURONS
    surrogate: str | None = None  # sigmoid | atan | rectangle | triangle
    alpha: float | None = None
    detach_reset: bool | None = True  # the papers' MultiStepLIFNode(detach_reset=True)
    tau: float | None = None
    init_tau: float | None = None  # PLIF
    decay_input: bool | None = None
    v_threshold: float | None = None  # the model keeps its own attention thresholds
    max_spikes: int | None = None  # MultiSpike: the largest count D (4)
    round_half_up: bool | None = None  # MultiSpike: QSD's floor(x + 1/2) (default: to even)
    levels: int | None = None  # QCFS: quantization levels L (16)
    backend: str | None = None  # auto (fused kernels where supported) | reference | triton


@dataclass
class TrainConfig:
    epochs: int = 300
    cooldown_epochs: int = 0  # timm: epochs run = epochs + cooldown_epochs
    opt: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.06
    sched: str = "cosine"
    warmup_epochs: int = 20
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_off_epoch: int = 0  # 0: mixup never switched off
    smoothing: float = 0.0
    loss: str = "ce"  # ce | tet (per-time-step CE + MSE regulariser, Deng et al. ICLR 2022)
    tet_lambda: float = 1e-3
    tet_phi: float = 1.0
    clip_grad: float | None = None
    amp: bool = True  # fp16 mixed precision on CUDA (ignored on CPU)
    cpu_bf16: bool = False  # bf16 autocast on CPU (opt-in; README "Performance")
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step
    sync_bn: bool = False  # SyncBatchNorm under DDP (CUDA only)
    deterministic: bool = False  # deterministic kernels (slower; see README "Long runs")
    progress: bool = True  # tqdm bars (loss, accuracy and lr in the bar)
    tensorboard: bool = True  # also log each epoch's curves to <run_dir>/tensorboard
    compile: bool = False  # torch.compile the network for training and validation (README "Speed")
    eval_batches: int | None = None  # limit validation batches (None: all)
    firing_batches: int = 2  # validation batches used for the firing-rate summary


SECTIONS: dict[str, type] = {
    "experiment": ExperimentConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "neuron": NeuronConfig,
    "train": TrainConfig,
}
#: Keys that do not change results, left out of the config hash.
UNHASHED = {("experiment", "output_dir"), ("data", "num_workers"), ("data", "root"),
            ("train", "device"), ("train", "progress"), ("train", "tensorboard"), ("train", "compile"),
            ("neuron", "backend")}
#: Keys added after runs were recorded: hashed only when set, so older run ids still resume.
HASHED_WHEN_SET = {("neuron", "max_spikes"), ("neuron", "round_half_up"), ("neuron", "levels")}


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str | None = field(default=None, compare=False)  # the params file it came from

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @property
    def config_hash(self) -> str:
        hashed = self.to_dict()
        for section, key in UNHASHED:
            hashed[section].pop(key)
        for section, key in HASHED_WHEN_SET:
            if hashed[section][key] is None:
                hashed[section].pop(key)
        blob = json.dumps(hashed, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        """Stable folder name: same resolved config and seed -> same run."""
        return (f"{self.model.name}-{self.neuron.type}-{self.data.name}"
                f"-s{self.experiment.seed}-{self.config_hash}")

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<study>/<run_id>``, absolute (see :func:`project_home`)."""
        return resolve_path(self.experiment.output_dir) / self.experiment.study / self.run_id

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_params_path(path: str | Path, relative_to: Path | None = None) -> Path:
    """Find a params file: as given, then relative to ``relative_to``, then to the repo root."""
    path = Path(path)
    candidates = [path] if path.is_absolute() else [
        *([relative_to / path] if relative_to else []), Path.cwd() / path,
        PARAMS_DIR.parent / path, PARAMS_DIR / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    available = sorted(str(p.relative_to(PARAMS_DIR.parent)) for p in PARAMS_DIR.rglob("*.yaml"))
    raise ConfigError(f"params file {str(path)!r} not found (looked in: {looked}); "
                      f"available: {', '.join(available)}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def _read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain: {' -> '.join(map(str, seen + (path,)))}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a path string, got {base!r}")
    parent = _read_with_bases(resolve_params_path(base, relative_to=path.parent), seen + (path,))
    return _deep_merge(parent, data)


def _deep_merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(low))
    for key, value in high.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key != "kwargs":
            merged[key] = _deep_merge(merged[key], value)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **copy.deepcopy(dict(value))}  # kwargs: shallow merge
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_overrides(overrides: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["train.epochs=5", "neuron.type=PLIF"]`` or ``{"train.epochs": 5}`` -> nested dict.

    String values are parsed as YAML scalars, so ``5`` is an int, ``1e-3`` a float,
    ``null`` None and ``[1, 2]`` a list.
    """
    if not overrides:
        return {}
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        for text in overrides:
            if "=" not in text:
                raise ConfigError(f"override {text!r} must look like section.key=value")
            key, raw = text.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                value = raw
            items.append((key.strip(), value))
    nested: dict[str, Any] = {}
    for dotted, value in items:
        parts = dotted.split(".")
        if len(parts) < 2:
            raise ConfigError(f"override key {dotted!r} must be section.key, sections: "
                              f"{', '.join(SECTIONS)}")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = DEFAULT_PARAMS, *, preset: str | None = None,
                overrides: Iterable[str] | Mapping[str, Any] | None = None) -> Config:
    """Read, merge and validate a params file (see the module docstring): keys, types and
    values, but not the registered names (that is :func:`stlib.params.load_params`).

    ``path=None`` starts from the dataclass defaults only.
    """
    raw: dict[str, Any] = {}
    source = None
    if path is not None:
        resolved = resolve_params_path(path)
        raw = _read_with_bases(resolved)
        source = str(resolved)
    if preset:
        preset_path = PRESETS_DIR / f"{preset}.yaml"
        if not preset_path.is_file():
            near = closest(preset, list_presets())
            hint = f"; did you mean {near!r}?" if near else ""
            raise ConfigError(f"unknown preset {preset!r}{hint} valid: {', '.join(list_presets())}")
        raw = _deep_merge(raw, _read_with_bases(preset_path))
    raw = _deep_merge(raw, parse_overrides(overrides))
    config = build_config(raw)
    config.source = source
    return config


def build_config(raw: Mapping[str, Any]) -> Config:
    """Nested mapping -> validated :class:`Config` (unknown keys and bad types rejected)."""
    for section in raw:
        if section not in SECTIONS:
            raise _unknown_key(str(section), list(SECTIONS), where="section")
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"section {name!r} must be a mapping, got {values!r}")
        sections[name] = _build_section(name, cls, values)
    config = Config(**sections)
    _check_values(config)
    return config


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise _unknown_key(f"{section}.{key}", [f"{section}.{n}" for n in names])
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


def _unknown_key(key: str, valid: list[str], where: str = "key") -> ConfigError:
    near = closest(key, valid)
    hint = f"; did you mean {near!r}?" if near else ""
    return ConfigError(f"unknown {where} {key!r}{hint} valid: {', '.join(valid)}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type hint; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError:
                pass
        raise _type_error(key, value, hint)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            raise _type_error(key, value, hint) from None
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and type(value) is hint:
        return value
    if (hint is dict or origin is dict) and isinstance(value, Mapping):
        return dict(value)
    raise _type_error(key, value, hint)


def _type_error(key: str, value: Any, hint: Any) -> ConfigError:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return ConfigError(f"{key} must be {name}, got {value!r} ({type(value).__name__})")


def _check_values(config: Config) -> None:
    checks = [
        (config.model.T > 0, "model.T", config.model.T, "a positive number of time steps"),
        (config.train.epochs > 0, "train.epochs", config.train.epochs, "positive"),
        (config.data.batch_size > 0, "data.batch_size", config.data.batch_size, "positive"),
        (config.train.lr > 0, "train.lr", config.train.lr, "positive"),
        (config.train.accum_steps > 0, "train.accum_steps", config.train.accum_steps, "positive"),
        (config.train.loss in ("ce", "tet"), "train.loss", config.train.loss, "one of ce, tet"),
        (0.0 <= config.train.tet_lambda <= 1.0, "train.tet_lambda", config.train.tet_lambda,
         "in [0, 1]"),
        (config.data.batch_size % config.train.accum_steps == 0, "data.batch_size",
         config.data.batch_size, f"divisible by train.accum_steps={config.train.accum_steps}"),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise ConfigError(f"{key} must be {expected}, got {value!r}")
