"""Sequential images: raster order, one seeded permutation, no augmentation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from stlib.data.base import DATASETS, DataConfig
from stlib.data.sequential import PERMUTATION_SEED, PixelSequence, pixel_permutation

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def test_pixel_sequence_is_raster_order_with_channels_as_features():
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)  # [N, C, H, W]
    seq, label = PixelSequence(TensorDataset(images, torch.tensor([7, 8])))[1]
    assert seq.shape == (3, 8) and int(label) == 8
    # step t is pixel (t // W, t % W) of every channel
    assert torch.equal(seq[:, 5], images[1, :, 1, 1])


def test_permutation_is_seeded_and_applied_to_every_channel():
    perm = pixel_permutation(784)
    assert torch.equal(perm, pixel_permutation(784, PERMUTATION_SEED))
    assert not torch.equal(perm, pixel_permutation(784, PERMUTATION_SEED + 1))
    assert torch.equal(perm.sort().values, torch.arange(784))
    images = torch.rand(1, 2, 28, 28)
    dataset = PixelSequence(TensorDataset(images, torch.tensor([0])), perm, PERMUTATION_SEED)
    seq, _ = dataset[0]
    assert torch.equal(seq, images[0].flatten(1)[:, perm])
    described = dataset.describe()
    assert described["order"] == "permuted" and described["permutation_seed"] == PERMUTATION_SEED
    assert len(described["permutation_sha256"]) == 16


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is absent")
def test_smnist_and_psmnist_from_the_real_files():
    import stlib.data.sequential  # noqa: F401  (registers the datasets)

    cfg = DataConfig(name="psmnist", root=str(MNIST), num_workers=0)
    perm_splits = DATASETS.get("psmnist")(cfg)
    plain_splits = DATASETS.get("smnist")(DataConfig(name="smnist", root=str(MNIST)))
    assert perm_splits.kind == "sequence" and perm_splits.img_size == 784
    assert perm_splits.in_chans == 1 and perm_splits.num_classes == 10
    assert len(perm_splits.train) == 60000 and len(perm_splits.val) == 10000
    seq, label = perm_splits.val[0]
    plain, same_label = plain_splits.val[0]
    assert seq.shape == plain.shape == (1, 784) and label == same_label
    assert 0.0 <= float(plain.min()) and float(plain.max()) <= 1.0
    assert torch.equal(seq, plain[:, pixel_permutation(784)])
    assert torch.equal(perm_splits.train.permutation, perm_splits.val.permutation)


def test_augmentation_and_resizing_are_refused():
    import stlib.data.sequential  # noqa: F401

    with pytest.raises(ValueError, match="not augmented.*data.hflip"):
        DATASETS.get("smnist")(DataConfig(name="smnist", hflip=0.5))
    with pytest.raises(ValueError, match="native image size"):
        DATASETS.get("scifar10")(DataConfig(name="scifar10", img_size=16, hflip=0.0))
