"""The state of one training run between epochs (:class:`Run`): its set-up from the config,
resuming from a checkpoint, the summary's fixed part, and what it writes after each epoch and
at the end (metrics, checkpoints, summary, firing rates and energy). The loop that drives it
is :func:`stlib.train.fit`.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .analysis.energy import energy_report
from .analysis.firing import firing_rates_per_step, mean_firing_rate
from .build import (autocast_dtype, build_model, build_optimization, compile_model, count_parameters,
                    device_name, first_neuron, model_label, resolve_device, seed_everything,
                    set_determinism)
from .config import Config
from .data import DataBundle, build_dataloaders
from .distributed import Distributed, init_distributed
from .models.ablation import component_labels
from .record import (TensorBoardLog, load_checkpoint, read_metrics, rng_state, save_checkpoint,
                     set_rng_state, warn_if_machine_changed, write_firing, write_metrics,
                     write_summary)


@dataclass
class EpochState:
    """Running sums of one training epoch (checkpointed mid-epoch on a stop signal)."""

    step: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: float = 0.0


@dataclass
class Run:
    """One training run between epochs: what it trains, how, and how far it got."""

    config: Config
    device: torch.device
    ddp: Distributed
    bundle: DataBundle
    net: nn.Module  # input stage + network (``model`` is it, or its DDP wrapper)
    optimizer: Any
    scheduler: Any
    num_epochs: int
    mixup: Any
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    start_epoch: int = 0
    best_acc1: float = 0.0
    seconds: float = 0.0
    lr_at_start: float = 0.0
    rows: list = field(default_factory=list)
    epoch_state: EpochState = field(default_factory=EpochState)
    summary: dict = field(default_factory=dict)
    model: nn.Module | None = None  # ``net``, wrapped in DDP under torchrun (set by ``start``)
    tensorboard: TensorBoardLog | None = None

    @classmethod
    def set_up(cls, config: Config) -> "Run":
        """Device, process group, seeds, data, model, optimizer, schedule, loss and scaler."""
        ddp, device = init_distributed(resolve_device(config.train.device))
        set_determinism(config.train.deterministic, device)
        seed_everything(config.experiment.seed)
        bundle = build_dataloaders(config.data, seed=config.experiment.seed, device=device.type,
                                   rank=ddp.rank, world_size=ddp.world_size,
                                   time_steps=config.model.T)
        net = build_model(config, bundle).to(device)
        if ddp.enabled and config.train.sync_bn and device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        optimization = build_optimization(config, net, bundle.num_classes)
        scaled = autocast_dtype(config, device) == torch.float16  # bf16 needs no loss scaling
        return cls(config, device, ddp, bundle, net, *optimization,
                   scaler=torch.amp.GradScaler(device.type, enabled=scaled))

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype (None: fp32)."""
        return autocast_dtype(self.config, self.device)

    @property
    def ckpt_dir(self) -> Path:
        return self.config.run_dir / "checkpoints"

    def resume(self, path: Path, *, required: bool, force: bool) -> None:
        """Restore weights, optimizer, schedule, scaler, RNGs and the metrics so far."""
        if not path.is_file():
            if required:
                raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
            return
        state = load_checkpoint(path, self.config, force=force)
        warn_if_machine_changed(state, torch.get_num_threads(), str(self.device), path)
        self.net.load_state_dict(state["model"])
        for part in ("optimizer", "scheduler", "scaler"):
            getattr(self, part).load_state_dict(state[part])
        set_rng_state(state["rng"])
        self.best_acc1, self.seconds = state["best_acc1"], state["seconds"]
        if state.get("step", 0):  # stopped mid-epoch: finish that epoch first
            self.start_epoch = state["epoch"]
            self.epoch_state = EpochState(state["step"], *state["epoch_sums"])
        else:
            self.start_epoch = state["epoch"] + 1
        self.rows = [r for r in read_metrics(self.config.run_dir / "metrics.csv")
                     if r["epoch"] < self.start_epoch]

    def start(self) -> None:
        """Wrap in DDP, write config.yaml, fill the summary's fixed part, set the schedule."""
        config, net = self.config, self.net
        model = net if not self.ddp.enabled else nn.parallel.DistributedDataParallel(
            net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = compile_model(model, config.train.compile)  # checkpoints keep using net
        if self.ddp.is_main:
            config.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(config.run_dir / "config.yaml")
            if config.train.tensorboard:
                self.tensorboard = TensorBoardLog(config.run_dir)
        neuron = first_neuron(net)
        self.summary = {
            "run_id": config.run_id, "study": config.experiment.study, "model": config.model.name,
            "model_label": model_label(config),
            "dataset": config.data.name, "neuron": config.neuron.type,
            "surrogate": type(neuron.surrogate).__name__.lower() if neuron is not None else None,
            "encoding": config.model.encoding, "T": config.model.T, "seed": config.experiment.seed,
            "params": count_parameters(net.net), "epochs_total": self.num_epochs,
            "device": device_name(self.device), "threads": torch.get_num_threads(),
            "world_size": self.ddp.world_size, "config_hash": config.config_hash}
        # the meta-transformer table groups runs by these labels
        self.summary.update(zip(("attention", "embedding"), component_labels(config.model.kwargs)))
        if self.bundle.kind == "sequence":  # psMNIST: the permutation that defines the task
            sequences = self.bundle.train_loader.dataset
            self.summary["sequence_order"] = getattr(sequences, "dataset", sequences).describe()
        self.scheduler.step(self.start_epoch)

    def checkpoint(self, epoch: int, partial: EpochState | None = None) -> dict[str, Any]:
        sums = [partial.loss_sum, partial.correct, partial.seen] if partial else [0.0, 0.0, 0.0]
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": epoch, "step": partial.step if partial else 0, "epoch_sums": sums,
                "best_acc1": self.best_acc1, "seconds": self.seconds,
                "config": self.config.to_dict(), "config_hash": self.config.config_hash,
                "rng": rng_state(), "threads": torch.get_num_threads(), "device": str(self.device)}

    def end_epoch(self, row: dict[str, float]) -> None:
        """Append the epoch's metrics; write metrics.csv, best/last checkpoints, summary.json."""
        self.rows.append(row)
        is_best = row["val_acc1"] > self.best_acc1
        self.best_acc1 = max(self.best_acc1, row["val_acc1"])
        self.summary.update(epochs_done=int(row["epoch"]) + 1, best_acc1=self.best_acc1,
                            final_acc1=row["val_acc1"], seconds=round(self.seconds, 2),
                            status="running")
        if self.ddp.is_main:
            run_dir = self.config.run_dir
            write_metrics(run_dir / "metrics.csv", self.rows)
            state = self.checkpoint(int(row["epoch"]))
            if is_best:
                save_checkpoint(state, self.ckpt_dir / "best.pt")
            save_checkpoint(state, self.ckpt_dir / "last.pt")
            write_summary(run_dir / "summary.json", self.summary)
            if self.tensorboard is not None:
                self.tensorboard.epoch(row)

    def finish(self) -> None:
        """Firing rates and energy on real validation batches (not a dummy image); finished."""
        run_dir, val_loader = self.config.run_dir, self.bundle.val_loader
        per_step = firing_rates_per_step(self.net, val_loader, self.device,
                                         max_batches=self.config.train.firing_batches)
        rates = OrderedDict((name, sum(r) / len(r)) for name, r in per_step.items())
        write_firing(run_dir / "firing.csv", rates, per_step)
        energy = energy_report(self.net, next(iter(val_loader))[0][:32], self.device)
        self.summary.update(mean_firing_rate=mean_firing_rate(rates), status="finished",
                            energy_mj=energy["energy_mj"], sops=energy["sops"])
        if "final_acc1" not in self.summary:  # resumed after the last epoch had been saved
            self.summary.update(epochs_done=self.num_epochs, best_acc1=self.best_acc1,
                                final_acc1=self.rows[-1]["val_acc1"] if self.rows else None,
                                seconds=round(self.seconds, 2))
        write_summary(run_dir / "summary.json", self.summary)
        if self.tensorboard is not None:
            self.tensorboard.close()
