"""Shared pieces of the data package: the dataset registry, the config, the bundle, the loaders.

A dataset is registered in :data:`DATASETS` as a function ``build(cfg: DataConfig) ->
DatasetSplits`` (train and validation datasets plus what a model needs to know about them).
:func:`build_dataloaders` looks the name up, builds the splits and wraps them in DataLoaders.

Loaders yield ``(images [B, C, H, W] float in [0, 1], labels [B] long)``: no normalization in
the transforms. The bundle carries the per-channel mean and std; normalization happens after
encoding (:class:`stlib.encoders.InputEncoder`).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from stlib.config import DataConfig, resolve_path  # the one definition of the data settings
from stlib.registry import Registry

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataConfig",
    "DatasetNotFoundError",
    "DatasetSplits",
    "announce_download",
    "build_dataloaders",
    "cache_dir",
    "resolve_root",
]


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the config says (or could not be downloaded).

    The message names the dataset, the absolute path looked in, the files expected there and
    how to get them.
    """


@dataclass
class DatasetSplits:
    """What a registered dataset builder returns."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "images"  # "events": items are frames [T, 2, H, W], not images
    time_steps: int | None = None  # event data: the number of time bins T of every item


@dataclass
class DataBundle:
    """The loaders of one run and what the model and encoder need to know about the data."""

    train_loader: DataLoader
    val_loader: DataLoader
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    val_size: int
    name: str
    kind: str = "images"  # "events": loaders yield frames [B, T, 2, H, W] (no normalization)
    time_steps: int | None = None  # event data: T of the frames


DATASETS: Registry[Callable[[DataConfig], DatasetSplits]] = Registry("dataset")

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def resolve_root(root: str | os.PathLike) -> Path:
    """``root`` as an absolute path; a relative one resolves against the project home
    (``$STLIB_HOME`` or the repository, not the working directory)."""
    return resolve_path(root)


def announce_download(name: str, source: str, target: Path) -> None:
    """One line before a download starts, so a long wait (or an offline failure) says what it
    was trying to do."""
    print(f"downloading {name} from {source} to {target} ...", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where stlib may write derived files: ``$STLIB_CACHE`` or ``~/.cache/stlib``."""
    env = os.environ.get("STLIB_CACHE")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "stlib"


def _read_config(cfg: Any) -> DataConfig:
    """Copy the known attributes of ``cfg`` into a DataConfig and check them."""
    values = {f.name: getattr(cfg, f.name, f.default) for f in dataclasses.fields(DataConfig)}
    c = DataConfig(**values)
    c.name = DATASETS.canonical(c.name)
    for field in ("batch_size", "val_batch_size", "img_size"):
        v = getattr(c, field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError(f"data.{field} must be a positive int, got {v!r}")
    if c.batch_size is None:
        raise ValueError("data.batch_size must be a positive int, got None")
    if isinstance(c.num_workers, bool) or not isinstance(c.num_workers, int) or c.num_workers < 0:
        raise ValueError(f"data.num_workers must be an int >= 0, got {c.num_workers!r}")
    for field in ("hflip", "re_prob"):
        v = getattr(c, field)
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"data.{field} is a probability in [0, 1], got {v!r}")
    if c.interpolation not in INTERPOLATIONS:
        raise ValueError(f"data.interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                         f"got {c.interpolation!r}")
    return c


def _subset(dataset: Dataset, n: int | None, key: str) -> Dataset:
    """The first ``n`` items of a fixed (seed 0) shuffle of ``dataset``: the same subset for
    every run, with every class represented in expectation. ``None`` keeps all."""
    if n is None:
        return dataset
    size = len(dataset)  # type: ignore[arg-type]
    if not 0 < n <= size:
        raise ValueError(f"{key}={n} must be between 1 and the split's {size} samples")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(0))[:n]
    return Subset(dataset, order.tolist())


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` whose next epoch can start part-way (resume after an interrupt).

    ``skip(n)`` drops the first ``n`` indices of the next iteration only (this rank's share of
    the batches already trained), so the rest of the epoch sees exactly the samples, in the
    order, that an uninterrupted run would.
    """

    _skip = 0

    def skip(self, n: int) -> None:
        self._skip = n

    def __iter__(self):
        indices = list(super().__iter__())[self._skip:]
        self._skip = 0
        return iter(indices)

    def __len__(self) -> int:
        return super().__len__() - self._skip


def build_dataloaders(cfg: Any, *, seed: int, device: str = "cpu", rank: int = 0,
                      world_size: int = 1, time_steps: int | None = None) -> DataBundle:
    """Train and validation loaders for the dataset ``cfg.name``.

    ``cfg``: any object with the attributes of :class:`DataConfig`. ``seed`` seeds the train
    loader's shuffling (a ``torch.Generator``; with workers it also fixes each worker's seed).
    With ``num_workers=0`` augmentation draws from the global RNGs, which the run seeds.
    The train loader drops the last incomplete batch (as timm's loader does; mixup needs
    equal, even batches), so ``batch_size`` may not exceed the train size.

    Shuffling goes through a ``DistributedSampler`` in every case (one replica when not
    distributed): call ``train_loader.sampler.set_epoch(epoch)`` each epoch. The order depends
    only on (seed, epoch), and with ``world_size`` processes each rank gets every
    ``world_size``-th index of the same permutation, so ``batch_size`` is the GLOBAL batch
    (``batch_size / world_size`` per process) and 2 processes see exactly the global batches
    that 1 process sees. Validation is split ``rank::world_size`` without padding, so summed
    metrics over ranks count every sample once.

    ``time_steps``: the model's T, which event datasets bin their recordings into.
    """
    c = _read_config(cfg)
    # _read_config keeps only DataConfig fields: the event builders' extras are set again
    c.time_steps = time_steps if time_steps is not None else getattr(cfg, "time_steps", None)
    c.event_cache = getattr(cfg, "event_cache", True)
    splits = DATASETS.get(c.name)(c)
    splits.train = _subset(splits.train, c.train_subset, "data.train_subset")
    splits.val = _subset(splits.val, c.val_subset, "data.val_subset")
    train_size, val_size = len(splits.train), len(splits.val)
    if c.batch_size > train_size:
        raise ValueError(f"data.batch_size={c.batch_size} is larger than the {c.name} train "
                         f"split ({train_size} samples); the train loader drops incomplete batches")
    common = dict(
        num_workers=c.num_workers,
        pin_memory=str(device).startswith("cuda"),
        persistent_workers=c.num_workers > 0,
    )
    if c.batch_size % world_size:
        raise ValueError(f"data.batch_size={c.batch_size} (the global batch) is not divisible by "
                         f"the {world_size} processes")
    sampler = EpochSampler(splits.train, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    train_loader = DataLoader(
        splits.train, batch_size=c.batch_size // world_size, sampler=sampler, drop_last=True,
        generator=torch.Generator().manual_seed(seed + rank), **common,
    )
    val_per_rank = (c.val_batch_size or c.batch_size) // world_size or 1
    val_loader = DataLoader(
        splits.val, batch_size=val_per_rank, sampler=list(range(rank, val_size, world_size)),
        drop_last=False, **common,
    )
    return DataBundle(
        train_loader=train_loader, val_loader=val_loader, num_classes=splits.num_classes,
        in_chans=splits.in_chans, img_size=splits.img_size, mean=tuple(splits.mean),
        std=tuple(splits.std), train_size=train_size, val_size=val_size, name=c.name,
        kind=splits.kind, time_steps=splits.time_steps,
    )
