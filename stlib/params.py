"""Loading experiment settings for a run: :func:`load_params` (a params file, a preset and
overrides -> a :class:`~stlib.config.Config` whose names are all registered), the notebooks'
:func:`from_notebook`, and :func:`params_for` (which params file trains a model on a dataset).

The schema, the YAML reading and the type and value checks live in :mod:`stlib.config`, which
imports no registry. Here, above the neurons, models, encoders and datasets, every name of the
config is also checked: an unknown model / neuron / encoding / dataset is one error naming
the closest valid one, raised before any data is read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from .build import resolve_device
from .config import (DEFAULT_PARAMS, PARAMS_DIR, PRESETS_DIR, SECTIONS, Config, ConfigError,
                     DataConfig, ExperimentConfig, ModelConfig, NeuronConfig, TrainConfig,
                     _deep_merge, _read_with_bases, _unknown_key, list_presets, load_config,
                     parse_overrides, resolve_params_path)
from .config import build_config as _build_config
from .data import DATASETS
from .encoders import ENCODERS
from .models import MODELS
from .neurons import NEURONS
from .registry import closest

__all__ = ["Config", "ConfigError", "DataConfig", "ExperimentConfig", "ModelConfig",
           "NeuronConfig", "TrainConfig", "NOTEBOOK_PARAMETERS", "build_config", "check_names",
           "from_notebook", "list_presets", "load_params", "params_for", "parse_overrides",
           "resolve_params_path", "DEFAULT_PARAMS", "PARAMS_DIR", "PRESETS_DIR", "SECTIONS"]


def load_params(path: str | Path | None = DEFAULT_PARAMS, *, preset: str | None = None,
                overrides: Iterable[str] | Mapping[str, Any] | None = None) -> Config:
    """Read, merge and validate a params file (:func:`stlib.config.load_config`), then check
    its registered names (:func:`check_names`). ``path=None`` starts from the defaults only."""
    return check_names(load_config(path, preset=preset, overrides=overrides))


def build_config(raw: Mapping[str, Any]) -> Config:
    """Nested mapping -> validated :class:`Config` whose names are all registered."""
    return check_names(_build_config(raw))


def check_names(config: Config) -> Config:
    """Unknown model / neuron / encoding / dataset names fail at load time, naming the valid
    ones (:class:`~stlib.registry.UnknownNameError`); returns ``config``."""
    MODELS.canonical(config.model.name)
    NEURONS.canonical(config.neuron.type)
    ENCODERS.canonical(config.model.encoding)
    DATASETS.canonical(config.data.name)
    return config


# --------------------------------------------------------------------------------------------
# Notebook parameters
# --------------------------------------------------------------------------------------------

#: Notebook parameter -> config key. A parameter left at None or "" keeps the params file's value.
NOTEBOOK_PARAMETERS = {
    "neuron": "neuron.type",
    "v_threshold": "neuron.v_threshold",
    "surrogate": "neuron.surrogate",
    "alpha": "neuron.alpha",
    "model": "model.name",
    "encoding": "model.encoding",
    "attention": "model.kwargs.attn",  # a host's attention name (ssa, random_ssa, sdsa, ...)
    "embedding": "model.kwargs.embed",  # a host's embedding name (sps, sps_2conv, ...)
    "dataset": "data.name",
    "T": "model.T",
    "epochs": "train.epochs",
    "batch_size": "data.batch_size",
    "seed": "experiment.seed",
    "device": "train.device",
    "output_dir": "experiment.output_dir",
    "study": "experiment.study",
}


def from_notebook(params_file: str | None = DEFAULT_PARAMS, preset: str | None = None,
                  overrides: Iterable[str] | Mapping[str, Any] | None = None, *,
                  confirm_full_run: bool = False, **parameters: Any) -> Config:
    """Build a Config from a notebook's ``parameters`` cell.

    ``parameters`` use the notebook's plain names (``neuron="PLIF"``, ``epochs=5``; see
    :data:`NOTEBOOK_PARAMETERS`); None or "" means "keep what the params file says".
    ``overrides`` are extra dotted ``key=value`` strings, applied last.

    "Run All" on a study notebook must not start a 400-epoch recipe on a laptop by accident:
    without a preset and without ``epochs``, a recipe that would train on the CPU is refused
    (a :class:`ConfigError` saying how to go on) unless ``confirm_full_run`` is True.
    """
    dotted: dict[str, Any] = {}
    for name, value in parameters.items():
        if name not in NOTEBOOK_PARAMETERS:
            raise _unknown_key(name, list(NOTEBOOK_PARAMETERS), where="notebook parameter")
        if value is not None and value != "":
            dotted[NOTEBOOK_PARAMETERS[name]] = value
    extra = parse_overrides(overrides)
    merged = _deep_merge(parse_overrides(dotted), extra)
    flat = {f"{s}.{k}": v for s, keys in merged.items() for k, v in keys.items()}
    config = load_params(params_file or DEFAULT_PARAMS, preset=preset or None, overrides=flat)
    chose_length = parameters.get("epochs") not in (None, "")
    if not (preset or chose_length or confirm_full_run) and _trains_on_cpu(config):
        total = config.train.epochs + config.train.cooldown_epochs
        raise ConfigError(
            f"{params_file or DEFAULT_PARAMS} is a full recipe ({total} epochs of "
            f"{config.data.name}) and this machine would train it on the CPU: set preset = "
            f"\"quick\" for a one-minute run on digits, set epochs, or set confirm_full_run = "
            f"True to train the full recipe anyway")
    return config


def _trains_on_cpu(config: Config) -> bool:
    try:
        return resolve_device(config.train.device).type == "cpu"
    except ConfigError:  # a device that is not there: fit says so when it starts
        return False


def params_for(model: str, dataset: str) -> str:
    """The params file (repo-relative) whose recipe trains ``model`` on ``dataset``.

    Looks through ``params/<family>/<dataset>.yaml`` for the file whose ``model.name`` is
    ``model``; an unknown pair is an error listing every (model, dataset) pair there is.
    """
    pairs: dict[tuple[str, str], Path] = {}
    for path in sorted(PARAMS_DIR.glob("*/*.yaml")):
        if path.parent.name in ("presets", "sweeps"):
            continue
        try:
            raw = _read_with_bases(path)
        except ConfigError:
            continue
        name = (raw.get("model") or {}).get("name", ModelConfig.name)
        pairs.setdefault((name, path.stem), path)
    if (model, dataset) not in pairs:
        valid = [f"{m} on {d}" for m, d in sorted(pairs)]
        near = closest(f"{model} on {dataset}", valid)
        hint = f"; did you mean {near!r}?" if near else ""
        raise ConfigError(f"no params file trains {model!r} on {dataset!r}{hint} "
                          f"available: {', '.join(valid)}")
    return str(pairs[(model, dataset)].relative_to(PARAMS_DIR.parent))
