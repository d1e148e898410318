"""What a run leaves behind in ``<output_dir>/<study>/<run_id>/``, and how it is read back::

    config.yaml          the resolved config
    metrics.csv          one row per epoch: epoch, lr, train_loss, train_acc1, val_loss,
                         val_acc1, val_acc5, seconds
    summary.json         model, model_label, dataset, neuron, encoding, T, params, epochs_done,
                         best_acc1, final_acc1, mean_firing_rate, energy_mj, seconds, device,
                         threads, config_hash, status, ...
    firing.csv           firing rate per neuron layer (overall and per time step) on
                         validation batches
    checkpoints/last.pt  written atomically every epoch; a rerun resumes from it
    checkpoints/best.pt  the best validation top-1 so far
    tensorboard/         the same epoch curves for TensorBoard (``train.tensorboard``)

Every file is written atomically (:mod:`stlib.atomic`), so an interrupted run never leaves a
half-written one. Checkpoints load with ``weights_only=True`` and carry the config hash, the
RNG states and the thread count and device they trained with.
"""
from __future__ import annotations

import csv
import json
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes, atomic_write_text
from .config import Config

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5",
                  "seconds"]


@dataclass
class RunRecord:
    """What a run leaves behind: its folder, ``summary.json`` and ``metrics.csv`` rows."""

    run_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, float]]

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunRecord":
        run_dir = Path(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        return cls(run_dir, summary, read_metrics(run_dir / "metrics.csv"))

    @property
    def finished(self) -> bool:
        return self.summary.get("status") == "finished"

    def metrics_frame(self):
        import pandas as pd

        return pd.DataFrame(self.metrics, columns=METRIC_COLUMNS)

    def table(self):
        """The run's result row (a one-row DataFrame) for notebooks."""
        import pandas as pd

        keys = ["model_label", "neuron", "dataset", "encoding", "T", "params", "epochs_done",
                "best_acc1", "final_acc1", "mean_firing_rate", "energy_mj", "seconds", "device"]
        return pd.DataFrame([{k: self.summary.get(k) for k in keys}])


def finished_record(run_dir: Path) -> RunRecord | None:
    """The record in ``run_dir`` if that run has finished, else None."""
    if (run_dir / "summary.json").is_file():
        record = RunRecord.load(run_dir)
        if record.finished:
            return record
    return None


# ---- metrics.csv, firing.csv, summary.json -----------------------------------------------


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    lines = [",".join(METRIC_COLUMNS)]
    lines += [",".join(f"{row[c]:.6g}" if c != "epoch" else str(int(row[c])) for c in METRIC_COLUMNS)
              for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_firing(path: Path, rates: dict[str, float],
                 per_step: dict[str, list[float]] | None = None) -> None:
    """``firing.csv``: one row per neuron layer, its rate over all steps, then per step."""
    per_step = per_step or {}
    T = len(next(iter(per_step.values()))) if per_step else 0
    lines = ["layer,firing_rate" + "".join(f",t{t}" for t in range(T))]
    lines += [f"{name},{rate:.6g}" + "".join(f",{r:.6g}" for r in per_step.get(name, []))
              for name, rate in rates.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(summary, indent=2))


class TensorBoardLog:
    """The epoch curves of metrics.csv, also as TensorBoard scalars in ``<run_dir>/tensorboard``
    (``tensorboard --logdir outputs``): ``loss/train``, ``loss/val``, ``acc1/train``,
    ``acc1/val``, ``acc5/val``, ``lr``, ``seconds``, each at step = epoch. A resumed run
    appends a new event file; TensorBoard merges them."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def epoch(self, row: dict[str, float]) -> None:
        step = int(row["epoch"])
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"),
                         ("acc1/train", "train_acc1"), ("acc1/val", "val_acc1"),
                         ("acc5/val", "val_acc5"), ("lr", "lr"), ("seconds", "seconds")):
            self.writer.add_scalar(tag, row[key], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# ---- checkpoints -----------------------------------------------------------------------------


class ResumeError(RuntimeError):
    """A checkpoint a run cannot resume from (unreadable, foreign, or another config's)."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, config: Config, *, force: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse one from another config
    unless ``force`` (the file is never modified)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or corrupt file
        raise ResumeError(f"cannot read checkpoint {path}: {err.__class__.__name__}: {err}. "
                          f"It is left as it is; move it away to start the run afresh.") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ResumeError(f"{path} is not an stlib checkpoint (no model state or config hash)")
    if state.get("config_hash") != config.config_hash and not force:
        raise ResumeError(f"checkpoint {path} belongs to config {state.get('config_hash')!r}, "
                          f"not to this run's {config.config_hash!r}; refusing to resume from it "
                          f"(pass --force to resume anyway)")
    return state


def warn_if_machine_changed(state: dict[str, Any], threads: int, device: str, path: Path) -> None:
    """One line when a run resumes with another torch thread count or device than it trained
    with: float reductions then run in another order, so results may differ in the last digits."""
    before = (state.get("threads"), state.get("device"))
    if before[0] is None and before[1] is None:
        return  # a checkpoint from before these were recorded
    if before != (threads, device):
        warnings.warn(f"resuming {path} with {threads} torch thread(s) on {device}; it trained "
                      f"with {before[0]} on {before[1]}: results may differ in the last digits",
                      RuntimeWarning, stacklevel=3)


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (and CUDA), in types ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
