"""Data: registered datasets -> train/val loaders yielding ``images [B, C, H, W]`` in [0, 1].

``build_dataloaders(cfg, seed=...)`` returns a :class:`DataBundle` (loaders, class count,
channels, image size, per-channel mean/std). Static images: ``stlib.data.static``; transforms
and mixup: ``stlib.data.augment``.
"""
from stlib.data.base import (
    DATASETS,
    DataBundle,
    DataConfig,
    DatasetNotFoundError,
    DatasetSplits,
    build_dataloaders,
)
from stlib.data import static  # noqa: F401  (registers the static-image datasets)
from stlib.data import events  # noqa: F401  (registers the event datasets)
from stlib.data import sequential  # noqa: F401  (registers the sequential-image datasets)

__all__ = ["DATASETS", "DataBundle", "DataConfig", "DatasetNotFoundError", "DatasetSplits",
           "build_dataloaders"]
