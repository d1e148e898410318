"""stlib.data (static images): digits in memory, real MNIST / Fashion-MNIST, tiny CIFAR pickles."""
from __future__ import annotations

import gzip
import pickle
import random
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from stlib.data import DATASETS, DataConfig, DatasetNotFoundError, build_dataloaders
from stlib.data.augment import MeanFillErasing, build_mixup
from stlib.registry import UnknownNameError

RA = "rand-m9-n2-mstd0.4-inc1"


def cfg(**kw) -> DataConfig:
    kw.setdefault("num_workers", 0)
    return DataConfig(**kw)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Decompressed IDX files go to a per-session cache, never to ~/.cache."""
    monkeypatch.setenv("STLIB_CACHE", str(tmp_path_factory.getbasetemp() / "stlib-cache"))


@pytest.fixture
def offline(monkeypatch):
    """Every urlopen fails, so a download attempt can never reach the network."""
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


# ---------------------------------------------------------------------------------- registry
def test_registry_names():
    static = ["cifar10", "cifar100", "digits", "fashion_mnist", "mnist"]
    assert set(static) <= set(DATASETS.names())


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        build_dataloaders(cfg(name="cifar11"), seed=0)
    msg = str(err.value)
    assert "'cifar11'" in msg
    for name in DATASETS.names():
        assert name in msg


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="interpolation"):
        build_dataloaders(cfg(name="digits", interpolation="cubic"), seed=0)
    with pytest.raises(ValueError, match="hflip"):
        build_dataloaders(cfg(name="digits", hflip=0.5), seed=0)  # digits has no augmentation
    with pytest.raises(ValueError, match="batch_size"):
        build_dataloaders(cfg(name="digits", batch_size=0), seed=0)


# ------------------------------------------------------------------------------------ digits
def test_digits_bundle():
    b = build_dataloaders(cfg(name="digits", batch_size=32, val_batch_size=100), seed=0)
    assert (b.name, b.train_size, b.val_size) == ("digits", 1437, 360)
    assert (b.num_classes, b.in_chans, b.img_size) == (10, 1, 8)
    assert b.mean == (0.3054,) and b.std == (0.3761,)
    x, y = next(iter(b.train_loader))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.long
    assert len(b.train_loader) == 1437 // 32  # the last incomplete batch is dropped
    xs, ys = zip(*b.val_loader)
    assert [len(v) for v in ys] == [100, 100, 100, 60]
    xv, yv = torch.cat(xs), torch.cat(ys)
    assert xv.min() == 0 and xv.max() == 1
    assert torch.equal(xv * 16, (xv * 16).round())  # pixel levels 0..16 / 16
    # stratified: every class has ~20 % of its images in the test split
    totals = np.bincount(np.concatenate([b.train_loader.dataset.tensors[1].numpy(), yv.numpy()]))
    assert np.all(np.abs(np.bincount(yv.numpy()) - 0.2 * totals) <= 1)


def test_digits_split_does_not_depend_on_run_seed():
    a = build_dataloaders(cfg(name="digits", batch_size=32), seed=0)
    b = build_dataloaders(cfg(name="digits", batch_size=32), seed=123)
    for split in ("train_loader", "val_loader"):
        ta, tb = getattr(a, split).dataset.tensors, getattr(b, split).dataset.tensors
        assert torch.equal(ta[0], tb[0]) and torch.equal(ta[1], tb[1])
    # and no image is in both splits
    train = {tuple(r) for r in a.train_loader.dataset.tensors[0].flatten(1).tolist()}
    val = [tuple(r) for r in a.val_loader.dataset.tensors[0].flatten(1).tolist()]
    assert sum(v in train for v in val) < 5  # only a few duplicated images exist in the set


def test_digits_shuffling_is_seeded():
    def first_labels(seed):
        b = build_dataloaders(cfg(name="digits", batch_size=64), seed=seed)
        return torch.cat([y for _, y in _batches(b.train_loader, 3)])

    assert torch.equal(first_labels(5), first_labels(5))
    assert not torch.equal(first_labels(5), first_labels(6))


def test_digits_resize():
    b = build_dataloaders(cfg(name="digits", img_size=16, batch_size=8), seed=0)
    x, _ = next(iter(b.train_loader))
    assert b.img_size == 16 and x.shape == (8, 1, 16, 16)
    assert x.min() >= 0 and x.max() <= 1


def test_batch_size_larger_than_train_split():
    with pytest.raises(ValueError, match=r"batch_size=2000.*1437"):
        build_dataloaders(cfg(name="digits", batch_size=2000), seed=0)


# ---------------------------------------------------------------------- MNIST, Fashion-MNIST
def _read_idx(path: Path, header: int, count: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(header + count), dtype=np.uint8, offset=header)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_idx_datasets(shared_data, name):
    folder = shared_data / name
    b = build_dataloaders(cfg(name=name, root=str(folder), batch_size=16), seed=0)
    assert (b.train_size, b.val_size) == (60000, 10000)
    assert (b.num_classes, b.in_chans, b.img_size) == (10, 1, 28)
    train, val = b.train_loader.dataset, b.val_loader.dataset
    labels = _read_idx(folder / "train-labels-idx1-ubyte.gz", 8, 20)
    assert [train[i][1] for i in range(20)] == labels.tolist()
    val_labels = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", 8, 10)
    assert [val[i][1] for i in range(10)] == val_labels.tolist()
    pixels = _read_idx(folder / "train-images-idx3-ubyte.gz", 16, 784).reshape(1, 28, 28)
    assert torch.equal(train[0][0], torch.from_numpy(pixels.copy()).float() / 255)
    x, y = next(iter(b.train_loader))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.5


def test_idx_root_may_be_the_parent_folder(shared_data):
    b = build_dataloaders(cfg(name="fashion_mnist", root=str(shared_data), batch_size=8), seed=0)
    assert b.train_size == 60000
    first = _read_idx(shared_data / "fashion_mnist" / "train-labels-idx1-ubyte.gz", 8, 5)
    assert [b.train_loader.dataset[i][1] for i in range(5)] == first.tolist()


def test_idx_files_of_the_other_dataset_are_refused(shared_data):
    with pytest.raises(ValueError, match="MNIST"):
        build_dataloaders(cfg(name="fashion_mnist", root=str(shared_data / "mnist")), seed=0)


def _write_idx(folder: Path, n_train: int, n_test: int, gz: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        out[split] = (images, labels)
        blobs = {f"{split}-images-idx3-ubyte":
                 struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes(),
                 f"{split}-labels-idx1-ubyte": struct.pack(">II", 2049, n) + labels.tobytes()}
        for fname, blob in blobs.items():
            if gz:
                (folder / f"{fname}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / fname).write_bytes(blob)
    return out


@pytest.mark.parametrize("layout", ["torchvision-gz", "torchvision-plain", "flat-gz"])
def test_idx_layouts(tmp_path, monkeypatch, layout):
    cache = tmp_path / "cache"
    monkeypatch.setenv("STLIB_CACHE", str(cache))
    root = tmp_path / "root"
    folder = root if layout == "flat-gz" else root / "MNIST" / "raw"
    data = _write_idx(folder, 6, 4, gz=layout != "torchvision-plain")
    before = sorted(root.rglob("*"))
    b = build_dataloaders(cfg(name="mnist", root=str(root), batch_size=2), seed=0)
    assert sorted(root.rglob("*")) == before  # the root may be read-only: nothing written there
    assert (b.train_size, b.val_size) == (6, 4)
    images, labels = data["t10k"]
    got = torch.stack([b.val_loader.dataset[i][0] for i in range(4)])
    assert torch.equal(got, torch.from_numpy(images).unsqueeze(1).float() / 255)
    assert [b.val_loader.dataset[i][1] for i in range(4)] == labels.tolist()
    # the plain torchvision layout is read in place; everything else goes through the cache
    assert cache.exists() == (layout != "torchvision-plain")


def test_idx_missing_and_offline_download(tmp_path, offline):
    root = tmp_path / "empty"
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataloaders(cfg(name="mnist", root=str(root)), seed=0)
    msg = str(err.value)
    assert str(root) in msg and "train-images-idx3-ubyte" in msg and "download" in msg
    with pytest.raises(DatasetNotFoundError, match="download.*failed.*offline \\(test\\)"):
        build_dataloaders(cfg(name="mnist", root=str(root), download=True), seed=0)


# ------------------------------------------------------------------------------------- CIFAR
def _dump(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)  # str keys: what the Python-2 pickles load as (latin1)


def _write_cifar10(root: Path, per_batch: int = 2, n_test: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {"train": [], "test": None}
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                          "labels": labels, "data": data,
                                          "filenames": [f"img{j}.png" for j in range(per_batch)]})
        out["train"].append((data, labels))
    data = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n_test).tolist()
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels,
                                  "data": data, "filenames": [f"t{j}.png" for j in range(n_test)]})
    out["test"] = (data, labels)
    _dump(folder / "batches.meta", {"label_names": [f"class{j}" for j in range(10)],
                                    "num_cases_per_batch": per_batch, "num_vis": 3072})
    return out


def _write_cifar100(root: Path, n_train: int = 8, n_test: int = 4, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        _dump(folder / split, {"filenames": [f"{split}{j}.png" for j in range(n)],
                               "batch_label": split, "fine_labels": fine,
                               "coarse_labels": [f // 5 for f in fine], "data": data})
        out[split] = (data, fine)
    _dump(folder / "meta", {"fine_label_names": [f"f{j}" for j in range(100)],
                            "coarse_label_names": [f"c{j}" for j in range(20)]})
    return out


def _as_images(data: np.ndarray) -> torch.Tensor:
    """CIFAR rows (R plane, G plane, B plane) -> [N, 3, 32, 32] in [0, 1]."""
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255


def test_cifar10_val_images_are_the_pixels_written(tmp_path):
    written = _write_cifar10(tmp_path)
    b = build_dataloaders(cfg(name="cifar10", root=str(tmp_path), batch_size=4), seed=0)
    assert (b.train_size, b.val_size, b.num_classes, b.in_chans, b.img_size) == (10, 5, 10, 3, 32)
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.2470, 0.2435, 0.2616)
    x, y = next(iter(b.val_loader))
    data, labels = written["test"]
    assert x.shape == (4, 3, 32, 32)
    assert torch.equal(x, _as_images(data[:4]))
    assert y.tolist() == labels[:4]
    # the train split holds the five batches in order
    train_labels = [lab for _, batch_labels in written["train"] for lab in batch_labels]
    assert b.train_loader.dataset.targets == train_labels


def test_cifar10_train_augmentation_stays_in_unit_range(tmp_path):
    _write_cifar10(tmp_path)
    b = build_dataloaders(cfg(name="cifar10", root=str(tmp_path), batch_size=5, auto_augment=RA,
                              hflip=0.5, re_prob=1.0, img_size=24), seed=0)
    assert b.img_size == 24
    torch.manual_seed(0)
    for x, y in _batches(b.train_loader, 2):
        assert x.shape == (5, 3, 24, 24) and x.dtype == torch.float32 and y.shape == (5,)
        assert x.min() >= 0 and x.max() <= 1
        # erasing ran last and filled a block with the dataset mean (0.4914 is no k/255 level)
        at_mean = (x == torch.tensor(b.mean).view(1, 3, 1, 1)).all(1).flatten(1)
        assert at_mean.any(1).all()
    xv, _ = next(iter(b.val_loader))
    assert xv.shape == (5, 3, 24, 24)


def test_cifar100(tmp_path):
    written = _write_cifar100(tmp_path)
    b = build_dataloaders(cfg(name="cifar100", root=str(tmp_path), batch_size=4, val_batch_size=4,
                              auto_augment=RA, re_prob=0.5), seed=0)
    assert (b.train_size, b.val_size, b.num_classes, b.in_chans) == (8, 4, 100, 3)
    assert b.mean == (0.5071, 0.4865, 0.4409) and b.std == (0.2673, 0.2564, 0.2762)
    x, y = next(iter(b.val_loader))
    data, fine = written["test"]
    assert torch.equal(x, _as_images(data)) and y.tolist() == fine
    xt, yt = next(iter(b.train_loader))
    assert xt.shape == (4, 3, 32, 32) and xt.min() >= 0 and xt.max() <= 1
    assert set(yt.tolist()) <= set(written["train"][1])


def test_cifar_missing_root_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("STLIB_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)  # not the working directory: the project home
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataloaders(cfg(name="cifar10", root="data"), seed=0)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "data" / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "batches.meta" in msg and "download=true" in msg


def test_cifar_partial_folder_names_the_missing_files(tmp_path):
    _write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing: test\)"):
        build_dataloaders(cfg(name="cifar100", root=str(tmp_path)), seed=0)


def test_cifar_download_offline(tmp_path, offline, capsys):
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataloaders(cfg(name="cifar10", root=str(tmp_path), download=True), seed=0)
    msg = str(err.value)
    assert "download" in msg and "failed" in msg and "offline (test)" in msg
    assert str(tmp_path) in msg
    # the attempt was announced before it started, with where from and where to
    announced = capsys.readouterr().err
    assert "downloading cifar10 from https://www.cs.toronto.edu/" in announced
    assert str(tmp_path) in announced


# ------------------------------------------------------------------------------- augment
def test_mean_fill_erasing():
    torch.manual_seed(0)
    mean = (0.1, 0.5, 0.9)
    img = torch.rand(3, 32, 32)
    random.seed(0)
    out = MeanFillErasing(1.0, mean)(img.clone())
    erased = out != img
    frac = erased[0].float().mean().item()
    assert 0.01 < frac < 0.34  # timm's area range (0.02, 1/3), a little slack for ties
    assert torch.equal(erased[0], erased[1]) and torch.equal(erased[0], erased[2])
    for c, m in enumerate(mean):
        assert torch.all(out[c][erased[c]] == torch.tensor(m))
    assert torch.equal(out[~erased], img[~erased])
    assert torch.equal(MeanFillErasing(0.0, mean)(img.clone()), img)


def test_build_mixup():
    assert build_mixup(0.0, 0.0, 1.0, 0.1, 10) is None
    mix = build_mixup(0.5, 0.0, 1.0, 0.1, 10)
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    xm, ym = mix(x.clone(), y)
    assert ym.shape == (4, 10) and torch.allclose(ym.sum(1), torch.ones(4))
    assert mix.mixup_alpha == 0.5 and mix.label_smoothing == 0.1 and mix.num_classes == 10
    assert xm.min() >= 0 and xm.max() <= 1


def test_imagenet_folder_tree_through_the_real_loader(tmp_path):
    """A tiny ImageNet-layout tree (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) read by ImageFolder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for wnid in ("n01440764", "n01443537"):
            folder = tmp_path / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
    bundle = build_dataloaders(cfg(name="imagenet", root=str(tmp_path / "imagenet"), img_size=32,
                                   batch_size=2, hflip=0.5, auto_augment="rand-m9-mstd0.5-inc1",
                                   re_prob=0.25), seed=0)
    assert (bundle.num_classes, bundle.train_size, bundle.val_size) == (2, 6, 4)
    images, labels = next(iter(bundle.train_loader))
    assert images.shape == (2, 3, 32, 32) and 0.0 <= images.min() and images.max() <= 1.0
    images, labels = next(iter(bundle.val_loader))
    assert images.shape[1:] == (3, 32, 32) and labels.tolist() == [0, 0]
    with pytest.raises(DatasetNotFoundError, match="train/<class>"):
        build_dataloaders(cfg(name="imagenet", root=str(tmp_path / "nowhere")), seed=0)
