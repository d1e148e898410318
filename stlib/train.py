"""Training: ``fit(config) -> RunRecord``, and ``python -m stlib.train PARAMS.yaml --set k=v``.

One readable loop (nanoGPT-style): set-up, then per epoch lr -> train -> evaluate ->
checkpoint -> log. A run lives in ``<output_dir>/<study>/<run_id>/``::

    config.yaml          the resolved config
    metrics.csv          one row per epoch: epoch, lr, train_loss, train_acc1, val_loss,
                         val_acc1, val_acc5, seconds
    summary.json         model, dataset, neuron, encoding, T, params, epochs_done, best_acc1,
                         final_acc1, mean_firing_rate, seconds, device, config_hash, ...
    firing.csv           firing rate per neuron layer on validation batches
    checkpoints/last.pt  written atomically every epoch; a rerun resumes from it
    checkpoints/best.pt  the best validation top-1 so far

``run_id`` is a hash of the resolved config and seed, so rerunning the same settings resumes an
unfinished run or returns the finished record without training.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .analysis.firing import firing_rates, mean_firing_rate
from .data import DataBundle, build_dataloaders
from .encoders import InputEncoder
from .models import create_model
from .neurons import neuron_factory
from .params import Config, ConfigError, load_params

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5",
                  "seconds"]


# --------------------------------------------------------------------------------------------
# The run record
# --------------------------------------------------------------------------------------------


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

        keys = ["model", "neuron", "dataset", "encoding", "T", "params", "epochs_done",
                "best_acc1", "final_acc1", "mean_firing_rate", "seconds", "device"]
        return pd.DataFrame([{k: self.summary.get(k) for k in keys}])


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must be a valid torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu, cuda or "
                          f"cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device {name!r} asked for CUDA, but no CUDA device is "
                          f"available here; use device auto or cpu")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder, fsync, then rename over ``path``:
    a crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Iterable[int] = (1, 5)) -> list[float]:
    """Top-k correct counts (not percentages) for each k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[-1])
    pred = logits.topk(maxk, dim=-1).indices  # [B, maxk]
    hit = pred.eq(target[:, None])
    return [hit[:, :min(k, maxk)].any(dim=1).sum().item() for k in ks]


# --------------------------------------------------------------------------------------------
# Building the pieces
# --------------------------------------------------------------------------------------------


def build_model(config: Config, bundle: DataBundle) -> nn.Sequential:
    """Encoder + spiking network: ``images [B, C, H, W] -> logits [B, classes]``.

    The neuron type and its settings come from ``config.neuron`` (None = the neuron's own
    default), so the configured surrogate and alpha reach every neuron of the model.
    """
    T = config.model.T
    settings = {k: v for k, v in vars(config.neuron).items() if k != "type" and v is not None}
    neuron = neuron_factory(config.neuron.type, T=T, **settings)
    arch = dict(num_classes=config.model.num_classes or bundle.num_classes, T=T,
                img_size=bundle.img_size, in_chans=bundle.in_chans)
    net = create_model(config.model.name, neuron=neuron, **{**arch, **config.model.kwargs})
    encoder = InputEncoder(config.model.encoding, T, bundle.mean, bundle.std,
                           seed=config.experiment.seed)
    return nn.Sequential(OrderedDict(encoder=encoder, net=net))


def build_optimization(config: Config, model: nn.Module, num_classes: int):
    """timm's AdamW (no weight decay on biases and norms) + cosine with warmup, mixup, losses."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    tc = config.train
    optimizer = create_optimizer_v2(model, opt=tc.opt, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=tc.sched, num_epochs=tc.epochs, warmup_epochs=tc.warmup_epochs,
        warmup_lr=tc.warmup_lr, min_lr=tc.min_lr, cooldown_epochs=tc.cooldown_epochs)
    mixup = None
    if tc.mixup > 0 or tc.cutmix > 0:
        mixup = Mixup(mixup_alpha=tc.mixup, cutmix_alpha=tc.cutmix, prob=tc.mixup_prob,
                      label_smoothing=tc.smoothing, num_classes=num_classes)
        train_loss = SoftTargetCrossEntropy()  # smoothing is inside the mixed targets
    elif tc.smoothing > 0:
        train_loss = LabelSmoothingCrossEntropy(smoothing=tc.smoothing)
    else:
        train_loss = nn.CrossEntropyLoss()
    return optimizer, scheduler, num_epochs, mixup, train_loss


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


# --------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------


def train_one_epoch(model, loader, optimizer, loss_fn, device, *, scaler, amp: bool, mixup,
                    clip_grad: float | None, progress: bool, epoch: int) -> dict[str, float]:
    model.train()
    total_loss = correct = seen = 0.0
    for images, labels in _progress(loader, progress, desc=f"epoch {epoch}", leave=False):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        hard_labels = labels
        if mixup is not None and len(images) % 2 == 0:  # timm's Mixup needs an even batch
            images, labels = mixup(images, labels)
        elif mixup is not None:
            labels = _smooth_one_hot(labels, mixup.num_classes, mixup.label_smoothing)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
            loss = loss_fn(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}; the last good "
                                     f"checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        # .item() syncs with the GPU once per step; cheap next to a spiking forward/backward
        total_loss += loss.item() * len(images)
        correct += (logits.argmax(-1) == hard_labels).sum().item()
        seen += len(images)
    return {"train_loss": total_loss / seen, "train_acc1": 100.0 * correct / seen}


def _smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    target = torch.full((len(labels), num_classes), off, device=labels.device)
    return target.scatter_(1, labels[:, None], 1.0 - smoothing + off)


@torch.no_grad()
def evaluate(model, loader, device, *, amp: bool, max_batches: int | None = None) -> dict[str, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss = top1 = top5 = seen = 0.0
    for i, (images, labels) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
        total_loss += loss_fn(logits.float(), labels).item()
        c1, c5 = accuracy(logits, labels)
        top1, top5, seen = top1 + c1, top5 + c5, seen + len(images)
    return {"val_loss": total_loss / seen, "val_acc1": 100.0 * top1 / seen,
            "val_acc5": 100.0 * top5 / seen}


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def fit(config: Config) -> RunRecord:
    """Train ``config`` to completion (resuming from ``last.pt`` if present) -> RunRecord."""
    run_dir = config.run_dir
    ckpt_dir = run_dir / "checkpoints"
    if (run_dir / "summary.json").is_file():
        record = RunRecord.load(run_dir)
        if record.finished:
            return record

    device = resolve_device(config.train.device)
    amp = config.train.amp and device.type == "cuda"
    seed = config.experiment.seed
    seed_everything(seed)
    bundle = build_dataloaders(config.data, seed=seed, device=device.type)
    model = build_model(config, bundle).to(device)
    optimizer, scheduler, num_epochs, mixup, loss_fn = build_optimization(
        config, model, bundle.num_classes)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    start_epoch, best_acc1, seconds, rows = 0, 0.0, 0.0, []
    last = ckpt_dir / "last.pt"
    if last.is_file():
        state = load_checkpoint(last, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start_epoch, best_acc1, seconds = state["epoch"] + 1, state["best_acc1"], state["seconds"]
        rows = [r for r in read_metrics(run_dir / "metrics.csv") if r["epoch"] < start_epoch]
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")

    summary = {
        "run_id": config.run_id, "study": config.experiment.study, "model": config.model.name,
        "dataset": config.data.name, "neuron": config.neuron.type,
        "surrogate": type(_first_neuron(model).surrogate).__name__.lower()
        if _first_neuron(model) is not None else None,
        "encoding": config.model.encoding, "T": config.model.T, "seed": seed,
        "params": count_parameters(model.net), "epochs_total": num_epochs,
        "device": device_name(device), "config_hash": config.config_hash,
    }
    scheduler.step(start_epoch)
    for epoch in range(start_epoch, num_epochs):
        tic = time.perf_counter()
        if mixup is not None and config.train.mixup_off_epoch and epoch >= config.train.mixup_off_epoch:
            mixup.mixup_enabled = False  # the recipe's mixup_off_epoch; targets stay soft
        loader = bundle.train_loader
        _seed_loader(loader, seed, epoch)  # shuffling depends on (seed, epoch) only: resumable
        lr = optimizer.param_groups[0]["lr"]
        train_stats = train_one_epoch(model, loader, optimizer, loss_fn, device, scaler=scaler,
                                      amp=amp, mixup=mixup, clip_grad=config.train.clip_grad,
                                      progress=config.train.progress, epoch=epoch)
        val_stats = evaluate(model, bundle.val_loader, device, amp=amp,
                             max_batches=config.train.eval_batches)
        scheduler.step(epoch + 1)
        seconds += time.perf_counter() - tic
        rows.append({"epoch": epoch, "lr": lr, **train_stats, **val_stats,
                     "seconds": time.perf_counter() - tic})
        write_metrics(run_dir / "metrics.csv", rows)
        is_best = val_stats["val_acc1"] > best_acc1
        best_acc1 = max(best_acc1, val_stats["val_acc1"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "epoch": epoch, "best_acc1": best_acc1, "seconds": seconds,
                 "config": config.to_dict(), "config_hash": config.config_hash, "rng": rng_state()}
        if is_best:
            save_checkpoint(state, ckpt_dir / "best.pt")
        save_checkpoint(state, last)
        summary.update(epochs_done=epoch + 1, best_acc1=best_acc1,
                       final_acc1=val_stats["val_acc1"], seconds=round(seconds, 2),
                       status="running")
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))

    rates = firing_rates(model, bundle.val_loader, device, max_batches=config.train.firing_batches)
    write_firing(run_dir / "firing.csv", rates)
    summary.update(mean_firing_rate=mean_firing_rate(rates), status="finished")
    if "final_acc1" not in summary:  # resumed after the last epoch had already been saved
        summary.update(epochs_done=num_epochs, best_acc1=best_acc1,
                       final_acc1=rows[-1]["val_acc1"] if rows else None, seconds=round(seconds, 2))
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return RunRecord.load(run_dir)


def _first_neuron(model: nn.Module):
    from .neurons import neurons_of

    found = neurons_of(model)
    return found[0][1] if found else None


def _seed_loader(loader, seed: int, epoch: int) -> None:
    generator = loader.generator or getattr(loader.sampler, "generator", None)
    if generator is not None:
        generator.manual_seed(seed * 100_003 + epoch)


def load_checkpoint(path: Path, config: Config) -> dict[str, Any]:
    """Load ``last.pt`` with ``weights_only=True``; refuse one from another config."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or corrupt file
        raise RuntimeError(f"cannot read checkpoint {path}: {err.__class__.__name__}: {err}. "
                           f"Move it away to start the run afresh.") from None
    if not isinstance(state, dict) or state.get("config_hash") != config.config_hash:
        found = state.get("config_hash") if isinstance(state, dict) else None
        raise RuntimeError(f"checkpoint {path} belongs to config {found!r}, not to this run's "
                           f"{config.config_hash!r}; refusing to resume from it")
    return state


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    lines = [",".join(METRIC_COLUMNS)]
    lines += [",".join(f"{row[c]:.6g}" if c != "epoch" else str(int(row[c])) for c in METRIC_COLUMNS)
              for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_firing(path: Path, rates: dict[str, float]) -> None:
    lines = ["layer,firing_rate"] + [f"{name},{rate:.6g}" for name, rate in rates.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stlib.train", description="Train one run from a params file.")
    parser.add_argument("params", help="params YAML, e.g. params/spikformer/cifar10.yaml")
    parser.add_argument("--preset", default=None, help="e.g. quick")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted override, e.g. train.epochs=5")
    args = parser.parse_args(argv)
    try:
        config = load_params(args.params, preset=args.preset, overrides=args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    record = fit(config)
    print(json.dumps(record.summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
