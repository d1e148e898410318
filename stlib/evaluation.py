"""Evaluate a checkpoint on a recipe's test split, without training.

``evaluate_checkpoint(config, "sdt-8-768.pth")`` builds the model of ``config`` (input stage +
network, as :func:`stlib.fit` does), loads the checkpoint strictly with
:func:`stlib.load_official` (official layout or stlib's own), runs the test split once and
returns the measured top-1 next to the top-1 published for that checkpoint.

``conversion_accuracy(model, loader)`` measures an ANN-to-SNN conversion (MST): the QCFS
network's top-1 and its converted SNN's at each number of simulation steps.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import build_dataloaders
from .models import load_official, published_checkpoint
from .neurons import convert_to_snn
from .neurons.conversion import timed_modules
from .params import Config
from .build import autocast_dtype, build_model, resolve_device
from .train import evaluate


def _loaded(config: Config, checkpoint: str | Path):
    """``(model with checkpoint, data bundle, device)`` for ``config``."""
    device = resolve_device(config.train.device)
    bundle = build_dataloaders(config.data, seed=config.experiment.seed, device=device.type,
                               time_steps=config.model.T)
    model = build_model(config, bundle)
    load_official(model.net, checkpoint)
    return model.to(device), bundle, device


def evaluate_checkpoint(config: Config, checkpoint: str | Path,
                        max_batches: int | None = None) -> dict[str, Any]:
    """``config``'s model with ``checkpoint`` loaded, on ``config``'s test split ->
    ``{model, dataset, checkpoint, published_acc1, published_note, measured_acc1,
    measured_acc5, val_loss, images, seconds, device}`` (accuracies in percent;
    ``published_acc1`` is None where no released checkpoint is recorded for the model or it
    was published for another dataset; the note says what it measures, e.g. MST's "SNN after
    conversion": compare it with :func:`conversion_report`, not with ``measured_acc1``).
    """
    model, bundle, device = _loaded(config, checkpoint)
    start = time.perf_counter()
    metrics = evaluate(model, bundle.val_loader, device, amp=autocast_dtype(config, device),
                       max_batches=max_batches)
    published = published_checkpoint(config.model.name)
    if published is not None and published.dataset != config.data.name:
        published = None
    seen = len(bundle.val_loader.dataset) if max_batches is None else None
    return {
        "model": config.model.name, "dataset": config.data.name, "checkpoint": str(checkpoint),
        "published_acc1": published.top1 if published else None,
        "published_note": published.note if published else "",
        "measured_acc1": metrics["val_acc1"], "measured_acc5": metrics["val_acc5"],
        "val_loss": metrics["val_loss"], "images": seen,
        "seconds": round(time.perf_counter() - start, 2), "device": str(device),
    }


def conversion_accuracy(model: nn.Module, loader, steps=(8, 16, 32, 64, 128),
                        device: torch.device | str = "cpu",
                        max_batches: int | None = None) -> list[dict[str, Any]]:
    """Top-1 of a QCFS-trained ``model`` and of its converted SNN
    (:func:`stlib.neurons.convert_to_snn`) at each number of simulation steps in ``steps``.

    ``model`` takes the loader's images (a :func:`stlib.fit` run's ``input stage + net``, or a
    bare network). Returns one row per network: ``{network: "ANN" | "SNN", T, val_acc1,
    val_acc5, val_loss}``, the ANN first at its own T. Each SNN row is its own run of T steps
    from a fresh state (the official ``snn_validate`` reads the same numbers off one long run).
    """
    device = torch.device(device)
    model = model.to(device)
    ann_T = next((m.T for m in timed_modules(model)), None)
    rows = [{"network": "ANN", "T": ann_T,
             **evaluate(model, loader, device, amp=None, max_batches=max_batches)}]
    for T in steps:
        snn = convert_to_snn(model, T=T)
        rows.append({"network": "SNN", "T": T,
                     **evaluate(snn, loader, device, amp=None, max_batches=max_batches)})
    return rows


def conversion_report(config: Config, checkpoint: str | Path, steps="8,16,32,64,128",
                      max_batches: int | None = None):
    """:func:`conversion_accuracy` of ``config``'s model with ``checkpoint`` (a QCFS ANN: a
    published MST file, or a run's ``best.pt``) on ``config``'s test split, as a DataFrame
    ``network, T, val_acc1, val_acc5, val_loss``. ``steps``: the numbers of SNN time steps,
    a list or a comma-separated string (a notebook parameter)."""
    import pandas as pd

    if isinstance(steps, int):  # papermill passes "-p snn_steps 64" as an int
        steps = [steps]
    if isinstance(steps, str):
        try:
            steps = [int(t) for t in steps.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"steps must be whole numbers of time steps, e.g. '8,16,32'; "
                             f"got {steps!r}") from None
    model, bundle, device = _loaded(config, checkpoint)
    rows = conversion_accuracy(model, bundle.val_loader, steps=steps, device=device,
                               max_batches=max_batches)
    return pd.DataFrame(rows, columns=["network", "T", "val_acc1", "val_acc5", "val_loss"])
