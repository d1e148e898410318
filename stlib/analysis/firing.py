"""Firing rates per neuron layer and per time step, measured with forward hooks on real batches.

The firing rate of a layer is the fraction of non-zero outputs over all its neurons, time
steps and samples (SDT's definition: "the proportion of non-zero elements in the spike
tensor"). Every stlib neuron is multi-step, so its output is ``[T, B, ...]`` and the rate of
step ``t`` is the non-zero fraction of ``output[t]``.

Measured on validation batches, not on a dummy input: the reference benchmark hooks one
all-ones image, which says little about the rates on data.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from ..neurons import neurons_of

__all__ = ["calibrate_batchnorm", "firing_rates", "firing_rates_per_step", "firing_table",
           "mean_firing_rate", "record_spikes"]


@contextmanager
def _neuron_hooks(model: nn.Module, record) -> Iterator[None]:
    """Call ``record(name, output)`` after every neuron's forward; ``model`` in eval mode."""
    handles = [neuron.register_forward_hook(lambda m, i, out, name=name: record(name, out))
               for name, neuron in neurons_of(model)]
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _batches(loader: Iterable, max_batches: int | None) -> Iterator[torch.Tensor]:
    """Images of up to ``max_batches`` batches; a loader of ``(images, labels)`` or of tensors."""
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def firing_rates_per_step(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu",
                          max_batches: int | None = 2) -> "OrderedDict[str, list[float]]":
    """``{neuron name: [rate at t=0, ..., rate at t=T-1]}`` over up to ``max_batches`` batches.

    ``loader`` yields ``(images, labels)`` or image tensors; the model takes the images as
    they come (``[B, C, H, W]`` for an encoder + network). Neuron outputs are ``[T, B, ...]``.
    """
    spikes: dict[str, torch.Tensor] = OrderedDict()
    counts: dict[str, int] = {}

    def record(name: str, output: torch.Tensor) -> None:
        per_step = output.detach().ne(0).flatten(1).sum(1).double().cpu()  # [T]
        spikes[name] = spikes[name] + per_step if name in spikes else per_step
        counts[name] = counts.get(name, 0) + output[0].numel()

    with _neuron_hooks(model, record):
        for images in _batches(loader, max_batches):
            model(images.to(device))
    return OrderedDict((name, (s / counts[name]).tolist()) for name, s in spikes.items())


def firing_rates(model: nn.Module, loader, device: torch.device | str = "cpu",
                 max_batches: int | None = 2) -> "OrderedDict[str, float]":
    """``{qualified neuron name: firing rate in [0, 1]}`` over up to ``max_batches`` batches."""
    per_step = firing_rates_per_step(model, loader, device, max_batches)
    return OrderedDict((name, sum(rates) / len(rates)) for name, rates in per_step.items())


def mean_firing_rate(rates: dict[str, float]) -> float | None:
    """Unweighted mean over layers (each layer counts once, as in the papers' per-layer tables)."""
    return sum(rates.values()) / len(rates) if rates else None


def firing_table(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu",
                 max_batches: int | None = 2):
    """Per-layer, per-step rates as a DataFrame: ``layer, t0, ..., t{T-1}, rate`` (rate = mean
    over steps), one row per neuron in ``named_modules`` order."""
    import pandas as pd

    per_step = firing_rates_per_step(model, loader, device, max_batches)
    rows = [{"layer": name, **{f"t{t}": r for t, r in enumerate(rates)},
             "rate": sum(rates) / len(rates)} for name, rates in per_step.items()]
    return pd.DataFrame(rows)


@torch.no_grad()
def record_spikes(model: nn.Module, images: torch.Tensor, layers: Iterable[str] | None = None,
                  device: torch.device | str = "cpu") -> "OrderedDict[str, torch.Tensor]":
    """The spike tensors ``[T, B, ...]`` of the chosen neuron layers (all when None) for one
    forward pass over ``images``; for rasters. Unknown layer names raise, listing the valid ones.
    """
    from ..registry import UnknownNameError

    names = [name for name, _ in neurons_of(model)]
    wanted = names if layers is None else list(layers)
    for name in wanted:
        if name not in names:
            raise UnknownNameError("neuron layer", name, names)
    out: dict[str, torch.Tensor] = OrderedDict()

    def record(name: str, output: torch.Tensor) -> None:
        if name in wanted:
            out[name] = output.detach().cpu()

    with _neuron_hooks(model, record):
        model(images.to(device))
    return OrderedDict((name, out[name]) for name in wanted if name in out)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu",
                        max_batches: int | None = 1) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on data (cumulative average over up to
    ``max_batches`` batches), then return the model in eval mode.

    An untrained model's BatchNorm keeps mean 0 / variance 1, so in eval mode its neurons barely
    fire and every map or rate measured on it is zero. Calibrated, it fires as at the start of
    training: what random-init figures (energy, Grad-CAM smoke tests) should be measured on.
    Only the statistics change, no weight.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    try:
        for images in _batches(loader, max_batches):
            model(images.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return model
