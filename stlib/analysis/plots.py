"""Figures for notebooks (seaborn / matplotlib)."""
from __future__ import annotations


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
