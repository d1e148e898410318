"""Processes: where this one sits in a torchrun job, the all-reduce of metrics, launching
torchrun from a notebook, and stop signals (SIGTERM / SIGINT) that every rank obeys at the
same step. Multi-GPU runs go through torchrun and DistributedDataParallel, nothing home-made.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .config import Config
from .record import RunRecord


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

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPU.
    Returns this process's place and its device (``cuda:LOCAL_RANK`` on GPUs)."""
    if not under_torchrun():
        return Distributed(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ddp = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    return ddp, device


def launch_torchrun(config: Config, gpus: int) -> RunRecord:
    """Run this config under ``torchrun --nproc_per_node=gpus`` (for notebooks' ``gpus``)."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    path = config.run_dir / "config.yaml"
    config.save(path)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}",
               "-m", "stlib.train", str(path)]
    subprocess.run(command, check=True)
    return RunRecord.load(config.run_dir)


class StopSignal:
    """SIGTERM / SIGINT set a flag; the loop checks it between steps, checkpoints and stops.

    A job scheduler's SIGTERM (or Ctrl-C) therefore costs at most one step of work.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self, ddp: Distributed, device: torch.device) -> bool:
        """True on every rank as soon as one rank got a signal (so all stop at the same step)."""
        flag = float(self.received is not None)
        return ddp.all_sum([flag], device)[0] > 0 if ddp.enabled else bool(flag)


class RunInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after writing a resumable checkpoint."""
