"""Figures for notebooks (seaborn / matplotlib): learning curves, spike rasters, firing-rate
heat maps and Grad-CAM grids. Every function returns the matplotlib Figure; saving is the
caller's (``fig.savefig(path)``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["firing_heatmap", "gradcam_grid", "learning_curves", "spike_raster"]


def learning_curves(metrics, title: str | None = None):
    """Accuracy and loss per epoch from a run's ``metrics.csv`` rows (a DataFrame or records).

    Returns the matplotlib Figure (two panels: top-1 accuracy, loss; train vs validation).
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(metrics)
    long = pd.concat([
        frame[["epoch", "train_acc1", "train_loss"]].rename(
            columns={"train_acc1": "acc1", "train_loss": "loss"}).assign(split="train"),
        frame[["epoch", "val_acc1", "val_loss"]].rename(
            columns={"val_acc1": "acc1", "val_loss": "loss"}).assign(split="val"),
    ])
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.lineplot(data=long, x="epoch", y="acc1", hue="split", marker="o", ax=ax_acc)
    sns.lineplot(data=long, x="epoch", y="loss", hue="split", marker="o", ax=ax_loss)
    ax_acc.set_ylabel("top-1 accuracy (%)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _short(name: str) -> str:
    """``net.blocks.0.attn.q_neuron`` -> ``blocks.0.attn.q_neuron`` (the encoder wrapper's prefix
    says nothing)."""
    return name[4:] if name.startswith("net.") else name


def firing_heatmap(table, title: str | None = None, annotate: bool | None = None):
    """Firing rate per layer (rows) and time step (columns) from :func:`~stlib.analysis.firing.
    firing_table` (columns ``layer, t0..t{T-1}``, optional ``rate``): a seaborn heat map with
    the rate scale starting at 0 and the mean over steps as a last column."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    steps = [c for c in table.columns if c.startswith("t") and c[1:].isdigit()]
    data = table.set_index(table["layer"].map(_short))[steps].copy()
    data["mean"] = data[steps].mean(axis=1)
    annotate = len(data) <= 40 if annotate is None else annotate
    fig, ax = plt.subplots(figsize=(1.1 * len(data.columns) + 3.2, 0.28 * len(data) + 1.4))
    sns.heatmap(data, vmin=0.0, vmax=max(float(data.values.max()), 1e-6), cmap="viridis",
                annot=annotate, fmt=".2f", annot_kws={"fontsize": 7},
                cbar_kws={"label": "firing rate"}, ax=ax)
    ax.set_xlabel("time step")
    ax.set_ylabel("")
    ax.tick_params(axis="y", labelsize=7)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def spike_raster(spikes: Mapping[str, torch.Tensor], sample: int = 0, neurons: int = 64,
                 title: str | None = None):
    """Spike raster of the first ``neurons`` neurons of each layer for one ``sample``.

    ``spikes``: ``{layer: [T, B, ...]}`` from :func:`~stlib.analysis.firing.record_spikes`.
    One panel per layer: neurons on the y axis, time steps on the x axis, a mark per spike
    (non-zero output; integer outputs above 1 are drawn the same).
    """
    import matplotlib.pyplot as plt

    layers = list(spikes)
    if not layers:
        raise ValueError("no spike tensors to draw")
    fig, axes = plt.subplots(1, len(layers), figsize=(1.2 + 1.0 * len(layers), 3.2),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], layers):
        s = spikes[name][:, sample].flatten(1)[:, :neurons].ne(0).numpy()  # [T, neurons]
        t_idx, n_idx = np.nonzero(s)
        ax.scatter(t_idx, n_idx, marker="|", s=40, color="black", linewidths=1.2)
        ax.set_xlim(-0.5, s.shape[0] - 0.5)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_xticks(range(s.shape[0]))
        ax.set_title(_short(name).replace(".", "\n", 1), fontsize=6)
        ax.set_xlabel("t", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("neuron")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def gradcam_grid(images, result, labels: Sequence | None = None,
                 class_names: Sequence[str] | None = None, max_images: int = 6,
                 title: str | None = None):
    """Grad-CAM grid: one row per image; columns: the image, the overlay at each time step, the
    overlay of the mean over T. ``result``: a :class:`~stlib.analysis.gradcam.CamResult`."""
    import matplotlib.pyplot as plt

    from .gradcam import _rgb, overlay

    n = min(len(images), max_images)
    cols = result.T + 2
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols, 1.35 * n + 0.4), squeeze=False)
    for b in range(n):
        panels = [(_rgb(images[b]), "input")]
        panels += [(overlay(images[b], result.per_step[t, b]), f"t = {t}") for t in range(result.T)]
        panels.append((overlay(images[b], result.mean[b]), "mean over T"))
        for c, (panel, head) in enumerate(panels):
            ax = axes[b][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if b == 0:
                ax.set_title(head, fontsize=8)
        target = result.targets[b]
        name = class_names[target] if class_names else str(target)
        truth = "" if labels is None or labels[b] is None else f"label {labels[b]}\n"
        axes[b][0].set_ylabel(f"{truth}explains {name}", fontsize=7)
    fig.suptitle(title or f"{result.method} per time step", fontsize=9)
    fig.tight_layout()
    return fig
