"""Sequential images: sMNIST, psMNIST, sCIFAR10 (pixel sequences of the static image sets).

An image ``[C, H, W]`` becomes the sequence ``[C, L]`` of its pixels in row-major (raster)
order, ``L = H * W`` (784 for MNIST, 1024 for CIFAR-10), the channels as features per step:

* ``smnist``: MNIST pixel by pixel, 784 steps of 1 value;
* ``psmnist``: the same with one fixed permutation of the 784 positions, drawn from
  :data:`PERMUTATION_SEED` (independent of the run seed, so every run and every model sees the
  same task); the permutation is ``splits.train.permutation`` and is described by
  :meth:`PixelSequence.describe` for the run record;
* ``scifar10``: CIFAR-10, 1024 steps of 3 values (R, G, B).

How a model reads the sequence is the model's business; the reference benchmark (STEP) tokenizes
the whole sequence with a strided ``Conv1d`` and repeats the tokens over the T time steps.
Items are ``(sequence [C, L] float in [0, 1], label)``; splits have ``kind="sequence"`` and
``img_size = L`` (the sequence length). Sequences are never augmented.
"""
from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch.utils.data import Dataset

from stlib.data.base import DATASETS, DataConfig, DatasetSplits

__all__ = ["PERMUTATION_SEED", "PixelSequence", "pixel_permutation", "psmnist", "scifar10",
           "smnist"]

#: Seed of psMNIST's one permutation (fixed: it defines the task, like a dataset split).
PERMUTATION_SEED = 0


def pixel_permutation(length: int, seed: int = PERMUTATION_SEED) -> torch.Tensor:
    """A permutation of ``range(length)`` that depends on ``seed`` only (CPU generator)."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))


class PixelSequence(Dataset):
    """``(image [C, H, W], label)`` items -> ``(sequence [C, H*W], label)`` in raster order.

    ``permutation [L]`` (optional) reorders the time axis: ``seq[:, t] = pixels[:, perm[t]]``.
    """

    def __init__(self, images: Dataset, permutation: torch.Tensor | None = None,
                 permutation_seed: int | None = None):
        self.images = images
        self.permutation = permutation
        self.permutation_seed = permutation_seed

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        image, label = self.images[index]
        sequence = image.flatten(1)  # [C, H, W] -> [C, L], row-major
        if self.permutation is not None:
            sequence = sequence[:, self.permutation]
        return sequence, label

    def describe(self) -> dict:
        """For the run record: the order, the permutation's seed and a digest of it."""
        if self.permutation is None:
            return {"order": "raster"}
        digest = hashlib.sha256(self.permutation.numpy().tobytes()).hexdigest()[:16]
        return {"order": "permuted", "permutation_seed": self.permutation_seed,
                "permutation_sha256": digest}


def _sequential(cfg: DataConfig, base: str, permute: bool) -> DatasetSplits:
    augmented = [k for k, off in (("auto_augment", None), ("hflip", 0.0), ("re_prob", 0.0))
                 if getattr(cfg, k) not in (off, 0)]
    if augmented:
        raise ValueError(f"{cfg.name} sequences are not augmented; set "
                         f"{', '.join(f'data.{k}' for k in augmented)} off (null / 0)")
    if cfg.img_size is not None:
        raise ValueError(f"{cfg.name} keeps the native image size (data.img_size must be null, "
                         f"got {cfg.img_size}): the sequence length is H*W of the original")
    images = DATASETS.get(base)(dataclasses.replace(cfg, name=base))
    length = images.img_size * images.img_size
    permutation = pixel_permutation(length) if permute else None
    seed = PERMUTATION_SEED if permute else None
    return DatasetSplits(
        train=PixelSequence(images.train, permutation, seed),
        val=PixelSequence(images.val, permutation, seed),
        num_classes=images.num_classes, in_chans=images.in_chans, img_size=length,
        mean=images.mean, std=images.std, kind="sequence",
    )


@DATASETS.register("smnist", aliases=("sequential_mnist",))
def smnist(cfg: DataConfig) -> DatasetSplits:
    """Sequential MNIST: 784 steps of one grey value, 10 classes."""
    return _sequential(cfg, "mnist", permute=False)


@DATASETS.register("psmnist", aliases=("permuted_mnist",))
def psmnist(cfg: DataConfig) -> DatasetSplits:
    """Permuted sequential MNIST: sMNIST with one fixed pixel permutation (PERMUTATION_SEED)."""
    return _sequential(cfg, "mnist", permute=True)


@DATASETS.register("scifar10", aliases=("sequential_cifar10",))
def scifar10(cfg: DataConfig) -> DatasetSplits:
    """Sequential CIFAR-10: 1024 steps of (R, G, B), 10 classes."""
    return _sequential(cfg, "cifar10", permute=False)
