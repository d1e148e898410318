"""Training: ``fit(config) -> RunRecord``, and ``python -m stlib.train PARAMS.yaml --set k=v``.

One readable loop (nanoGPT-style): set-up, then per epoch lr -> train -> evaluate ->
checkpoint -> log. A run lives in ``<output_dir>/<study>/<run_id>/``::

    config.yaml          the resolved config
    metrics.csv          one row per epoch: epoch, lr, train_loss, train_acc1, val_loss,
                         val_acc1, val_acc5, seconds
    summary.json         model, dataset, neuron, encoding, T, params, epochs_done, best_acc1,
                         final_acc1, mean_firing_rate, energy_mj, seconds, device,
                         config_hash, ...
    firing.csv           firing rate per neuron layer (overall and per time step) on
                         validation batches
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
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .analysis.energy import energy_report
from .analysis.firing import firing_rates_per_step, mean_firing_rate
from .atomic import atomic_write_bytes, atomic_write_text
from .data import DataBundle, build_dataloaders
from .encoders import InputEncoder
from .layers.ablation import component_labels
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
                "best_acc1", "final_acc1", "mean_firing_rate", "energy_mj", "seconds", "device"]
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


class TimeFirst(nn.Module):
    """Event frames from the loader ``[B, T, P, H, W]`` -> the models' layout ``[T, B, P, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


def build_model(config: Config, bundle: DataBundle) -> nn.Sequential:
    """Input stage + spiking network: ``images [B, C, H, W]`` (or event frames
    ``[B, T, P, H, W]``) ``-> logits [B, classes]``.

    The neuron type and its settings come from ``config.neuron`` (None = the neuron's own
    default), so the configured surrogate and alpha reach every neuron of the model.
    Event frames are already spikes: they are put time-first and neither encoded nor
    normalized, so an encoding other than ``direct`` is refused for them.
    """
    T = config.model.T
    settings = {k: v for k, v in vars(config.neuron).items() if k != "type" and v is not None}
    neuron = neuron_factory(config.neuron.type, T=T, **settings)
    arch = dict(num_classes=config.model.num_classes or bundle.num_classes, T=T,
                img_size=bundle.img_size, in_chans=bundle.in_chans)
    if config.train.loss == "tet":  # TET trains on every time step's logits [T, B, classes]
        arch["per_step_logits"] = True
    net = create_model(config.model.name, neuron=neuron, **{**arch, **config.model.kwargs})
    events = getattr(bundle, "kind", "images") == "events"
    if events and config.model.encoding != "direct":
        raise ConfigError(f"model.encoding={config.model.encoding!r} cannot apply to event data "
                          f"({bundle.name} frames are already spikes); use direct")
    if events and bundle.time_steps != T:
        raise ConfigError(f"{bundle.name} frames have {bundle.time_steps} time bins but "
                          f"model.T={T}")
    encoder = InputEncoder(config.model.encoding, T, None if events else bundle.mean,
                           None if events else bundle.std, seed=config.experiment.seed)
    stages = [("time_first", TimeFirst())] if events else []
    if getattr(bundle, "kind", "images") == "sequence":
        from .layers.sequence import SequenceAsRow

        if config.train.mixup > 0 or config.train.cutmix > 0:
            raise ConfigError(f"train.mixup/cutmix cannot apply to {bundle.name} pixel sequences; "
                              f"set them to 0")
        stages = [("as_row", SequenceAsRow())]  # [B, C, L] -> [B, C, 1, L]: encoders apply as is
    return nn.Sequential(OrderedDict([*stages, ("encoder", encoder), ("net", net)]))


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
    if tc.loss == "tet":
        from .losses import TETLoss

        train_loss = TETLoss(tc.tet_lambda, tc.tet_phi, smoothing=0.0 if mixup else tc.smoothing)
    elif mixup is not None:
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
# Distributed (torchrun) and stop signals
# --------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    """Where this process sits in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum ``values`` over ranks (metrics are reduced as sums, then divided)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


class StopSignal:
    """SIGTERM / SIGINT set a flag; the loop checks it between steps, checkpoints and stops.

    A job scheduler's SIGTERM (or Ctrl-C) therefore costs at most one step of work.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading_is_main():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class RunInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after writing a resumable checkpoint."""


# --------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------


@dataclass
class EpochState:
    """Running sums of one training epoch (checkpointed mid-epoch on a stop signal)."""

    step: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: float = 0.0


def train_one_epoch(model, loader, optimizer, loss_fn, device, *, scaler, amp: bool, mixup,
                    clip_grad: float | None, accum_steps: int, progress: bool, epoch: int,
                    state: EpochState, stop: StopSignal | None = None, ddp: Distributed = Distributed(),
                    on_stop=None) -> EpochState:
    """Train over ``loader`` (which already skips ``state.step`` batches when resuming).

    A batch is split into ``accum_steps`` interleaved micro-batches (``x[j::accum_steps]``),
    whose gradients are summed before one optimizer step: exactly what ``accum_steps`` DDP
    processes would compute on their shares of the same global batch.
    """
    model.train()
    for images, labels in _progress(loader, progress, desc=f"epoch {epoch}", leave=False):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        hard_labels = labels
        if mixup is not None and len(images) % 2 == 0:  # timm's Mixup needs an even batch
            shape = images.shape  # event frames [B, T, P, H, W]: one box cut from every bin
            images, labels = mixup(images.flatten(1, 2) if images.dim() == 5 else images, labels)
            images = images.view(shape)
        elif mixup is not None:
            labels = _smooth_one_hot(labels, mixup.num_classes, mixup.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        batch_loss = 0.0
        for j in range(accum_steps):
            micro_x, micro_y = images[j::accum_steps], labels[j::accum_steps]
            sync = j == accum_steps - 1 or not ddp.enabled
            context = model.no_sync() if not sync and hasattr(model, "no_sync") else _null()
            with context:
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    logits = model(micro_x)
                    loss = loss_fn(logits, micro_y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at epoch {epoch}, step {state.step}; training "
                        f"stopped and the last good checkpoint is kept")
                # each micro-batch is 1/accum of the batch: scale so the gradients add to the mean
                scaler.scale(loss / accum_steps).backward()
            batch_loss += loss.item() / accum_steps  # .item() syncs once per micro-step
            logits = logits.mean(0) if logits.dim() == 3 else logits  # per-step (TET) logits
            state.correct += (logits.argmax(-1) == hard_labels[j::accum_steps]).sum().item()
        if clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        state.loss_sum += batch_loss * len(images)
        state.seen += len(images)
        state.step += 1
        if stop is not None and on_stop is not None and _stop_requested(stop, ddp, device):
            on_stop(state)
    return state


def _null():
    import contextlib

    return contextlib.nullcontext()


def _stop_requested(stop: StopSignal, ddp: Distributed, device) -> bool:
    """True on every rank as soon as one rank got a signal (so all stop at the same step)."""
    flag = float(stop.received is not None)
    return ddp.all_sum([flag], device)[0] > 0 if ddp.enabled else bool(flag)


def _smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    target = torch.full((len(labels), num_classes), off, device=labels.device)
    return target.scatter_(1, labels[:, None], 1.0 - smoothing + off)


@torch.no_grad()
def evaluate(model, loader, device, *, amp: bool, max_batches: int | None = None,
             ddp: Distributed = Distributed()) -> dict[str, float]:
    """Validation loss, top-1 and top-5 (percent), summed over this rank's share and reduced."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss = top1 = top5 = seen = 0.0
    for i, (images, labels) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
        logits = logits.mean(0) if logits.dim() == 3 else logits  # per-step (TET) logits
        total_loss += loss_fn(logits.float(), labels).item()
        c1, c5 = accuracy(logits, labels)
        top1, top5, seen = top1 + c1, top5 + c5, seen + len(images)
    total_loss, top1, top5, seen = ddp.all_sum([total_loss, top1, top5, seen], device)
    return {"val_loss": total_loss / seen, "val_acc1": 100.0 * top1 / seen,
            "val_acc5": 100.0 * top5 / seen}


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def fit(config: Config, *, gpus: int = 1, resume_from: str | Path | None = None,
        force: bool = False) -> RunRecord:
    """Train ``config`` to completion -> RunRecord.

    * A finished run with the same settings is returned as it is; an unfinished one resumes
      from its ``last.pt`` (end of the last epoch, or mid-epoch after a stop signal).
    * ``gpus > 1`` (outside torchrun) launches ``torchrun --nproc_per_node=gpus -m stlib.train``
      on the saved config and returns its record; under torchrun every rank calls ``fit``.
    * ``resume_from``: start from another checkpoint; one from a different config is refused
      unless ``force``.
    """
    run_dir = config.run_dir
    if (run_dir / "summary.json").is_file():
        record = RunRecord.load(run_dir)
        if record.finished:
            return record
    if gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return launch_torchrun(config, gpus)

    device = resolve_device(config.train.device)
    ddp = init_distributed(device)
    if ddp.enabled and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    set_determinism(config.train.deterministic, device)
    amp = config.train.amp and device.type == "cuda"
    seed = config.experiment.seed
    seed_everything(seed)
    bundle = build_dataloaders(config.data, seed=seed, device=device.type, rank=ddp.rank,
                               world_size=ddp.world_size, time_steps=config.model.T)
    model = build_model(config, bundle).to(device)
    if ddp.enabled and config.train.sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer, scheduler, num_epochs, mixup, loss_fn = build_optimization(
        config, model, bundle.num_classes)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    start_epoch, best_acc1, seconds, rows = 0, 0.0, 0.0, []
    epoch_state = EpochState()
    ckpt_dir = run_dir / "checkpoints"
    resume = Path(resume_from) if resume_from else ckpt_dir / "last.pt"
    if resume.is_file():
        state = load_checkpoint(resume, config, force=force)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        best_acc1, seconds = state["best_acc1"], state["seconds"]
        if state.get("step", 0):  # stopped mid-epoch: finish that epoch first
            start_epoch = state["epoch"]
            epoch_state = EpochState(state["step"], *state["epoch_sums"])
        else:
            start_epoch = state["epoch"] + 1
        rows = [r for r in read_metrics(run_dir / "metrics.csv") if r["epoch"] < start_epoch]
    elif resume_from:
        raise FileNotFoundError(f"checkpoint to resume from not found: {resume}")
    net = model
    if ddp.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")

    first = _first_neuron(net)
    summary = {
        "run_id": config.run_id, "study": config.experiment.study, "model": config.model.name,
        "dataset": config.data.name, "neuron": config.neuron.type,
        "surrogate": type(first.surrogate).__name__.lower() if first is not None else None,
        "encoding": config.model.encoding, "T": config.model.T, "seed": seed,
        "params": count_parameters(net.net), "epochs_total": num_epochs,
        "device": device_name(device), "world_size": ddp.world_size,
        "config_hash": config.config_hash,
    }
    # the meta-transformer table groups runs by these labels
    summary.update(zip(("attention", "embedding"), component_labels(config.model.kwargs)))
    if bundle.kind == "sequence":  # psMNIST: the permutation that defines the task
        sequences = bundle.train_loader.dataset
        summary["sequence_order"] = getattr(sequences, "dataset", sequences).describe()

    def checkpoint(epoch: int, epoch_state: EpochState | None = None) -> dict[str, Any]:
        partial = epoch_state is not None
        return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "step": epoch_state.step if partial else 0,
                "epoch_sums": [epoch_state.loss_sum, epoch_state.correct, epoch_state.seen]
                if partial else [0.0, 0.0, 0.0],
                "best_acc1": best_acc1, "seconds": seconds, "config": config.to_dict(),
                "config_hash": config.config_hash, "rng": rng_state()}

    scheduler.step(start_epoch)
    with StopSignal() as stop:
        for epoch in range(start_epoch, num_epochs):
            tic = time.perf_counter()
            if mixup is not None and config.train.mixup_off_epoch and epoch >= config.train.mixup_off_epoch:
                mixup.mixup_enabled = False  # the recipe's mixup_off_epoch; targets stay soft
            sampler = bundle.train_loader.sampler
            sampler.set_epoch(epoch)  # the order depends on (seed, epoch) only: resumable
            sampler.skip(epoch_state.step * bundle.train_loader.batch_size)
            lr = optimizer.param_groups[0]["lr"]

            def on_stop(partial: EpochState, epoch=epoch, tic=tic):
                nonlocal seconds
                seconds += time.perf_counter() - tic
                if ddp.is_main:
                    save_checkpoint(checkpoint(epoch, partial), ckpt_dir / "last.pt")
                raise RunInterrupted(f"stopped by signal {stop.received} at epoch {epoch}, step "
                                     f"{partial.step}; rerun the same settings to resume")

            epoch_state = train_one_epoch(
                model, bundle.train_loader, optimizer, loss_fn, device, scaler=scaler, amp=amp,
                mixup=mixup, clip_grad=config.train.clip_grad,
                accum_steps=config.train.accum_steps, progress=config.train.progress and ddp.is_main,
                epoch=epoch, state=epoch_state, stop=stop, ddp=ddp, on_stop=on_stop)
            loss_sum, correct, seen = ddp.all_sum(
                [epoch_state.loss_sum, epoch_state.correct, epoch_state.seen], device)
            epoch_state = EpochState()
            val_stats = evaluate(model, bundle.val_loader, device, amp=amp,
                                 max_batches=config.train.eval_batches, ddp=ddp)
            scheduler.step(epoch + 1)
            seconds += time.perf_counter() - tic
            rows.append({"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen,
                         "train_acc1": 100.0 * correct / seen, **val_stats,
                         "seconds": time.perf_counter() - tic})
            is_best = val_stats["val_acc1"] > best_acc1
            best_acc1 = max(best_acc1, val_stats["val_acc1"])
            summary.update(epochs_done=epoch + 1, best_acc1=best_acc1,
                           final_acc1=val_stats["val_acc1"], seconds=round(seconds, 2),
                           status="running")
            if ddp.is_main:
                write_metrics(run_dir / "metrics.csv", rows)
                state = checkpoint(epoch)
                if is_best:
                    save_checkpoint(state, ckpt_dir / "best.pt")
                save_checkpoint(state, ckpt_dir / "last.pt")
                atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))

    if ddp.is_main:
        # firing rates and energy on real validation batches (not a dummy image)
        per_step = firing_rates_per_step(net, bundle.val_loader, device,
                                         max_batches=config.train.firing_batches)
        rates = OrderedDict((name, sum(r) / len(r)) for name, r in per_step.items())
        write_firing(run_dir / "firing.csv", rates, per_step)
        energy = energy_report(net, next(iter(bundle.val_loader))[0][:32], device)
        summary.update(mean_firing_rate=mean_firing_rate(rates), energy_mj=energy["energy_mj"],
                       sops=energy["sops"], status="finished")
        if "final_acc1" not in summary:  # resumed after the last epoch had already been saved
            summary.update(epochs_done=num_epochs, best_acc1=best_acc1,
                           final_acc1=rows[-1]["val_acc1"] if rows else None,
                           seconds=round(seconds, 2))
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    if ddp.enabled:
        dist.barrier()
    return RunRecord.load(run_dir)


def set_determinism(enabled: bool, device: torch.device) -> None:
    """``train.deterministic``: deterministic kernels everywhere (an error where none exists)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick fast kernels


def launch_torchrun(config: Config, gpus: int) -> RunRecord:
    """Run this config under ``torchrun --nproc_per_node=gpus`` (for notebooks' ``gpus``)."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    path = config.run_dir / "config.yaml"
    config.save(path)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}",
               "-m", "stlib.train", str(path)]
    subprocess.run(command, check=True)
    return RunRecord.load(config.run_dir)


def _first_neuron(model: nn.Module):
    from .neurons import neurons_of

    found = neurons_of(model)
    return found[0][1] if found else None


def load_checkpoint(path: Path, config: Config, *, force: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse one from another config
    unless ``force`` (the file is never modified)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or corrupt file
        raise RuntimeError(f"cannot read checkpoint {path}: {err.__class__.__name__}: {err}. "
                           f"It is left as it is; move it away to start the run afresh.") from None
    if not isinstance(state, dict) or "model" not in state:
        raise RuntimeError(f"{path} is not an stlib checkpoint (no model state or config hash)")
    if state.get("config_hash") != config.config_hash and not force:
        raise RuntimeError(f"checkpoint {path} belongs to config {state.get('config_hash')!r}, "
                           f"not to this run's {config.config_hash!r}; refusing to resume from it "
                           f"(pass --force to resume anyway)")
    return state


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
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT",
                        help="resume from this checkpoint instead of the run's own last.pt")
    parser.add_argument("--force", action="store_true",
                        help="resume even if the checkpoint comes from a different config")
    parser.add_argument("--gpus", type=int, default=1,
                        help="launch torchrun with this many processes (or call torchrun yourself)")
    args = parser.parse_args(argv)
    try:
        config = load_params(args.params, preset=args.preset, overrides=args.overrides)
    except ValueError as err:  # ConfigError and unknown registry names
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        record = fit(config, gpus=args.gpus, resume_from=args.resume, force=args.force)
    except RunInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(json.dumps(record.summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
