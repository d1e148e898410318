"""Load a checkpoint saved by a model's official repository (``load_official``).

Each model class declares the state-dict layout of its official code as an
:class:`OfficialLayout`: explicit rename rules from the official key names to stlib's, and the
official modules whose parameters the official forward never reads (Spikformer's per-block
LayerNorms, SDT's talking-heads conv, ...). Loading is strict: after renaming, every stlib
tensor must be filled and every official tensor used or listed as unused, or one error names
the missing and unexpected keys, grouped by module, and the layout that was expected.

What is handled on the way in:

* wrappers: ``{'model': ...}``, ``{'state_dict': ...}``, ``{'net': ...}``,
  ``{'model_ema': ...}`` (timm's trainers save the first; some repos the others);
* ``module.`` prefixes left by DistributedDataParallel (and ``_orig_mod.`` by torch.compile);
* 1x1 convolutions stored where stlib has a ``Linear`` (``Conv1d`` ``[out, in, 1]`` or
  ``Conv2d`` ``[out, in, 1, 1]`` -> ``[out, in]``) and the reverse;
* ``num_batches_tracked`` buffers missing from old checkpoints (BatchNorm does not read them
  in eval mode, nor in training with the default momentum).

A checkpoint written by stlib itself (a state dict with stlib's own keys, or a run's
``last.pt`` / ``best.pt``) loads through the same call.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

_WRAPPERS = ("model", "state_dict", "net", "model_ema", "module")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model's official layout."""


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A released checkpoint: where it is, and the top-1 its authors report for it."""

    url: str
    dataset: str
    top1: float
    note: str = ""


#: registered model name -> its released checkpoint (filled by the layouts as they are built)
PUBLISHED_CHECKPOINTS: dict[str, PublishedCheckpoint] = {}
#: every family layout, for naming the family a misplaced checkpoint belongs to
LAYOUTS: list["OfficialLayout"] = []


@dataclass(frozen=True)
class OfficialLayout:
    """The state-dict layout of a family's official code.

    ``rename``: ``(pattern, replacement)`` pairs; the first pattern that matches an official
    key *in full* (``re.fullmatch``) gives its stlib name by ``match.expand(replacement)``.
    ``unused``: patterns (full match) of official keys the official forward never reads; they
    are skipped, and named in the docstring of the model that skips them.
    ``checkpoints``: published checkpoints by registered model name.
    ``prepare``: an optional rewrite of the official state dict before renaming, for a
    module stlib folds into another (Meta-SpikeFormer's distillation head).
    """

    family: str
    repo: str
    rename: Sequence[tuple[str, str]]
    unused: Sequence[str] = ()
    checkpoints: Mapping[str, PublishedCheckpoint] = field(default_factory=dict)
    prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        PUBLISHED_CHECKPOINTS.update(self.checkpoints)
        LAYOUTS.append(self)

    def stlib_key(self, key: str) -> str | None:
        """The stlib name of an official key, or None where no rule matches."""
        for pattern, replacement in self.rename:
            match = re.fullmatch(pattern, key)
            if match:
                return match.expand(replacement)
        return None

    def is_unused(self, key: str) -> bool:
        return any(re.fullmatch(pattern, key) for pattern in self.unused)


def official_layout(model: nn.Module) -> OfficialLayout:
    """The layout the model declares: an ``official_layout`` class attribute, or a method of
    that name where the official files of one family name their modules differently per
    config (QKFormer's CIFAR, ImageNet and DVS files)."""
    layout = getattr(model, "official_layout", None)
    if callable(layout):
        layout = layout()
    if layout is None:
        raise CheckpointError(f"{type(model).__name__} has no official checkpoint layout "
                              "(it has no official code to load from)")
    return layout


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A flat ``{key: tensor}`` from a path or a loaded object, wrappers and prefixes removed.

    Files are read with ``weights_only=True``: a checkpoint that needs arbitrary code to
    unpickle is refused rather than run.
    """
    obj: Any = source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated zip, not a torch file, unsafe pickle, ...
            raise CheckpointError(f"checkpoint {str(path)!r} could not be read "
                                  f"({type(error).__name__}: {str(error).splitlines()[0]}); "
                                  "is the file complete and saved by torch.save?") from None
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        wrapper = next((k for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
        if wrapper is None:
            raise CheckpointError("checkpoint holds no state dict: top-level keys "
                                  f"{sorted(map(str, obj))[:8]}; expected tensors or one of "
                                  f"the wrappers {', '.join(map(repr, _WRAPPERS))}")
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint is a {type(obj).__name__}, not a state dict")
    state = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def convert_official(model: nn.Module, official: Mapping[str, torch.Tensor],
                     layout: OfficialLayout | None = None) -> dict[str, torch.Tensor]:
    """Official state dict -> stlib state dict for ``model`` (renamed, unused keys dropped,
    1x1-conv/Linear shapes adapted). Strict: raises :class:`CheckpointError` naming what is
    missing or unexpected."""
    layout = layout or official_layout(model)
    if layout.prepare is not None:
        official = layout.prepare(dict(official))
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    misfit: set[str] = set()
    for key, value in official.items():
        if layout.is_unused(key):
            continue
        name = layout.stlib_key(key)
        if name is None or name not in target:
            unexpected.append(key)
            continue
        if name in converted:
            raise CheckpointError(f"{layout.family} layout maps two official keys to {name!r}")
        want = target[name].shape
        if value.shape != want:
            if value.numel() == target[name].numel() and _squeeze(value.shape) == _squeeze(want):
                value = value.reshape(want)  # 1x1 conv <-> Linear
            else:
                mismatched.append(f"{key} {tuple(value.shape)} -> {name} {tuple(want)}")
                misfit.add(name)
                continue
        converted[name] = value
    missing = [k for k in target if k not in converted and k not in misfit
               and not k.endswith("num_batches_tracked")]
    if unexpected or missing or mismatched:
        raise CheckpointError(_mismatch_message(model, layout, list(official), missing, unexpected,
                                                mismatched))
    for key, value in target.items():  # old checkpoints carry no num_batches_tracked
        converted.setdefault(key, value)
    return converted


def _squeeze(shape: torch.Size) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def load_official(model: nn.Module, source: str | Path | Mapping[str, Any]) -> nn.Module:
    """Load ``source`` (a path, or a loaded checkpoint / state dict) into ``model``, in place.

    The checkpoint may be in the official repository's layout (see the model's
    :class:`OfficialLayout`) or in stlib's own (a run's ``best.pt`` included). Returns the
    model. Raises :class:`CheckpointError` for an unreadable file or a layout that does not fit.
    """
    state = read_state_dict(source)
    own = model.state_dict()
    own_keys = {k for k in own if not k.endswith("num_batches_tracked")}
    network = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    if own_keys <= set(network) <= set(own):  # a run checkpoint: input stage + "net."
        state = network
    if own_keys <= set(state) and set(state) <= set(own):  # stlib's own layout
        _check_shapes(model, own, state)
        model.load_state_dict({**own, **state})
        return model
    model.load_state_dict(convert_official(model, state))
    return model


def _check_shapes(model: nn.Module, own: Mapping[str, torch.Tensor],
                  state: Mapping[str, torch.Tensor]) -> None:
    bad = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})"
           for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__} of this config: "
                              + "; ".join(bad[:6]) + (" ..." if len(bad) > 6 else ""))


def _mismatch_message(model: nn.Module, layout: OfficialLayout, keys: list[str],
                      missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    lines = [f"checkpoint does not fit {type(model).__name__} in the {layout.family} layout "
             f"(official code: {layout.repo})"]
    if missing:
        lines.append(f"  missing ({len(missing)} stlib keys no official key fills): "
                     + _grouped(missing))
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)} official keys with no place): "
                     + _grouped(unexpected))
    if mismatched:
        lines.append(f"  wrong shape ({len(mismatched)}): " + "; ".join(mismatched[:6])
                     + (" ..." if len(mismatched) > 6 else ""))
    fits = [other.family for other in LAYOUTS if other is not layout and unexpected
            and all(other.is_unused(k) or other.stlib_key(k) is not None for k in keys)]
    if fits:
        lines.append(f"  its keys are those of the {' / '.join(dict.fromkeys(fits))} layout: "
                     "a checkpoint of another family")
    else:
        lines.append("  is it a checkpoint of another family, or of another config (depth, width, "
                     "classes)?")
    return "\n".join(lines)


def _grouped(keys: list[str], limit: int = 8) -> str:
    """``blocks.0.attn.{q,k}.weight``-style summary: keys grouped by their module."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        module, _, leaf = key.rpartition(".")
        groups[module].append(leaf)
    parts = [f"{module}.{{{','.join(leaves)}}}" if module else ",".join(leaves)
             for module, leaves in groups.items()]
    return ", ".join(parts[:limit]) + (f", ... ({len(parts) - limit} more modules)"
                                       if len(parts) > limit else "")
