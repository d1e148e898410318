"""Firing rates per neuron layer, measured with forward hooks on real batches.

The firing rate of a layer is the fraction of non-zero outputs over all its neurons, time
steps and samples (SDT's definition: "the proportion of non-zero elements in the spike
tensor").
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..neurons import neurons_of


@torch.no_grad()
def firing_rates(model: nn.Module, loader, device: torch.device | str = "cpu",
                 max_batches: int | None = 2) -> "OrderedDict[str, float]":
    """``{qualified neuron name: firing rate in [0, 1]}`` over up to ``max_batches`` batches."""
    spikes: dict[str, float] = {}
    counts: dict[str, int] = {}
    handles = []

    def hook(name):
        def record(module, inputs, output):
            spikes[name] = spikes.get(name, 0.0) + output.ne(0).sum().item()
            counts[name] = counts.get(name, 0) + output.numel()
        return record

    for name, neuron in neurons_of(model):
        handles.append(neuron.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        for i, (images, _) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return OrderedDict((name, spikes[name] / counts[name]) for name in spikes)


def mean_firing_rate(rates: dict[str, float]) -> float | None:
    """Unweighted mean over layers (each layer counts once, as in the papers' per-layer tables)."""
    return sum(rates.values()) / len(rates) if rates else None
