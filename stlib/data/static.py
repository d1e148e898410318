"""Static-image datasets: digits, MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100.

Each is registered in :data:`~stlib.data.base.DATASETS` as ``build(cfg) -> DatasetSplits``.
Every dataset yields ``(image [C, H, W] float in [0, 1], label int)``; the per-channel mean and
std travel in the splits (normalization happens after encoding, see ``stlib.encoders``).

Where the files are looked for (``root`` is ``cfg.root`` made absolute):

* ``digits``: scikit-learn's copy of the UCI optical digits (inside its wheel; no files).
* ``mnist`` / ``fashion_mnist``: the four original IDX files (``.gz`` or decompressed) in
  ``<root>/MNIST/raw`` (torchvision's layout; ``FashionMNIST`` for Fashion-MNIST), in
  ``<root>`` itself, or in ``<root>/mnist`` (``<root>/fashion_mnist``). torchvision reads only
  decompressed files from its own layout, so anything else is decompressed (or linked) once
  into ``$STLIB_CACHE`` (default ``~/.cache/stlib``); the root is never written to, so it may
  be read-only.
* ``cifar10`` / ``cifar100``: ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python``, the
  python pickles of the official archives.

Integrity: files are checked for presence only. torchvision's md5 check runs when stlib
downloads (``download=True`` and the files absent); a local copy with other bytes (a subset, a
re-pickled file, the tiny fakes the tests write) is accepted.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from stlib.atomic import atomic_write_bytes
from stlib.data.augment import build_eval_transform, build_train_transform
from stlib.data.base import (
    DATASETS,
    DataConfig,
    DatasetNotFoundError,
    DatasetSplits,
    announce_download,
    cache_dir,
    resolve_root,
)

__all__ = ["DIGITS_SPLIT_SEED", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100",
           "imagenet"]

# Per-channel statistics of the train splits, on images in [0, 1].
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
# digits: computed once from the 1,437-image train split below (pixels / 16), population std:
# mean 0.305383, std 0.376119 (scikit-learn 1.9).
DIGITS_MEAN, DIGITS_STD = (0.3054,), (0.3761,)

DIGITS_SPLIT_SEED = 0  # fixed, independent of the run seed: every run tests on the same 360 images


def _has_augmentation(cfg: DataConfig) -> bool:
    return bool(cfg.auto_augment) or cfg.hflip > 0 or cfg.re_prob > 0


def _pil_transforms(cfg: DataConfig, native: int, mean, std):
    """(train, val) transforms for datasets whose items are PIL images."""
    size = cfg.img_size or native
    train = build_train_transform(size, mean, std, hflip=cfg.hflip, auto_augment=cfg.auto_augment,
                                  re_prob=cfg.re_prob, interpolation=cfg.interpolation)
    return train, build_eval_transform(size, native, cfg.interpolation), size


# ---------------------------------------------------------------------------------- digits
@DATASETS.register("digits")
def digits(cfg: DataConfig) -> DatasetSplits:
    """UCI optical digits (scikit-learn): 1,797 grey 8x8 images, 10 classes, in memory.

    Pixels 0..16 are divided by 16. Split 80/20 (1,437 / 360), stratified by class, with the
    fixed seed :data:`DIGITS_SPLIT_SEED`, so the test set does not depend on the run seed.
    No augmentation; ``img_size`` other than 8 resizes every image once, at build time.
    """
    if _has_augmentation(cfg):
        raise ValueError("digits has no augmentation (it is held in memory as tensors); set "
                         f"auto_augment=None, hflip=0, re_prob=0 (got auto_augment="
                         f"{cfg.auto_augment!r}, hflip={cfg.hflip}, re_prob={cfg.re_prob})")
    from sklearn.datasets import load_digits  # here: scikit-learn is slow to import
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # [N, 1, 8, 8]
    labels = torch.from_numpy(bunch.target).long()
    index = torch.arange(len(labels)).numpy()
    train_idx, val_idx = train_test_split(index, test_size=0.2, stratify=bunch.target,
                                          random_state=DIGITS_SPLIT_SEED)
    size = cfg.img_size or 8
    if size != 8:
        if cfg.interpolation not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"digits resizes tensors: interpolation must be nearest, bilinear or "
                             f"bicubic, got {cfg.interpolation!r}")
        images = TF.resize(images, [size, size], interpolation=InterpolationMode(cfg.interpolation),
                           antialias=True).clamp_(0.0, 1.0)  # bicubic overshoots
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return DatasetSplits(
        train=TensorDataset(images[train_idx], labels[train_idx]),
        val=TensorDataset(images[val_idx], labels[val_idx]),
        num_classes=10, in_chans=1, img_size=size, mean=DIGITS_MEAN, std=DIGITS_STD,
    )


# ------------------------------------------------------------------- MNIST, Fashion-MNIST
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_candidates(root: Path, name: str, tv_cls: type) -> list[Path]:
    return [root / tv_cls.__name__ / "raw", root, root / name]


def _idx_complete(folder: Path) -> bool:
    return all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in IDX_FILES)


def _materialize(src: Path, dst: Path) -> None:
    """Make ``dst`` the decompressed content of ``src`` (``.gz`` or plain), atomically."""
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return  # done by an earlier run
    opener = gzip.open if src.suffix == ".gz" else open

    def copy(out) -> None:
        with opener(src, "rb") as inp:
            shutil.copyfileobj(inp, out, length=1 << 20)

    atomic_write_bytes(dst, copy)  # another process may do the same; either copy is complete


def _torchvision_root(folder: Path, name: str, tv_cls: type) -> Path:
    """A root under which ``tv_cls`` finds the decompressed IDX files of ``folder``."""
    if folder.name == "raw" and folder.parent.name == tv_cls.__name__ and all(
            (folder / f).is_file() for f in IDX_FILES):
        return folder.parent.parent  # already torchvision's layout
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    tv_root = cache_dir() / name / key
    raw = tv_root / tv_cls.__name__ / "raw"
    for f in IDX_FILES:
        plain = folder / f
        _materialize(plain if plain.is_file() else folder / f"{f}.gz", raw / f)
    return tv_root


def _check_not_other_idx_dataset(folder: Path, name: str, tv_cls: type) -> None:
    """MNIST and Fashion-MNIST share file names; refuse the other one's official labels file."""
    labels = folder / "train-labels-idx1-ubyte.gz"
    if not labels.is_file():
        return
    md5 = hashlib.md5(labels.read_bytes(), usedforsecurity=False).hexdigest()
    for other in (datasets.MNIST, datasets.FashionMNIST, datasets.KMNIST):
        known = dict(other.resources)["train-labels-idx1-ubyte.gz"]
        if other is not tv_cls and md5 == known:
            raise ValueError(f"{name}: the files in {folder} are {other.__name__}'s "
                             f"(md5 of {labels.name}); point data.root at the {name} files")


def _not_found_message(name: str, root: Path, where: list[Path], expected: list[str],
                       how: str, missing: list[str] | None = None) -> str:
    places = ", ".join(str(p) for p in where)
    lacking = f" (missing: {', '.join(missing)})" if missing and missing != expected else ""
    return (f"{name} not found under {root}: looked in {places} for {', '.join(expected)}"
            f"{lacking}. To get it: {how}")


def _download_failed(name: str, target: Path, err: BaseException, how: str) -> DatasetNotFoundError:
    reason = " ".join(str(err).split())  # torchvision's reasons span lines; keep one line
    return DatasetNotFoundError(f"{name}: download into {target} failed ({type(err).__name__}: "
                                f"{reason}). To get it: {how}")


def _idx_dataset(cfg: DataConfig, name: str, tv_cls: type, num_classes: int, mean, std
                 ) -> DatasetSplits:
    root = resolve_root(cfg.root)
    candidates = _idx_candidates(root, name, tv_cls)
    folder = next((p for p in candidates if _idx_complete(p)), None)
    how = (f"set data.download=true on a machine with internet (torchvision fetches them into "
           f"{root / tv_cls.__name__ / 'raw'}), or copy the four files there or into {root}")
    if folder is None and cfg.download:
        announce_download(name, tv_cls.mirrors[0], root / tv_cls.__name__ / "raw")
        try:
            tv_cls(str(root), train=True, download=True)
        except Exception as err:  # network, permissions, checksum: all end here
            raise _download_failed(name, root / tv_cls.__name__ / "raw", err, how) from err
        folder = next((p for p in candidates if _idx_complete(p)), None)
    if folder is None:
        expected = [f"{f}[.gz]" for f in IDX_FILES]
        raise DatasetNotFoundError(_not_found_message(name, root, candidates, expected, how))
    _check_not_other_idx_dataset(folder, name, tv_cls)
    tv_root = str(_torchvision_root(folder, name, tv_cls))
    train_tf, val_tf, size = _pil_transforms(cfg, 28, mean, std)
    return DatasetSplits(
        train=tv_cls(tv_root, train=True, transform=train_tf),
        val=tv_cls(tv_root, train=False, transform=val_tf),
        num_classes=num_classes, in_chans=1, img_size=size, mean=mean, std=std,
    )


@DATASETS.register("mnist")
def mnist(cfg: DataConfig) -> DatasetSplits:
    """MNIST: 60,000 / 10,000 grey 28x28 handwritten digits, 10 classes (torchvision)."""
    return _idx_dataset(cfg, "mnist", datasets.MNIST, 10, MNIST_MEAN, MNIST_STD)


@DATASETS.register("fashion_mnist", aliases=("fashion-mnist", "fashionmnist", "fmnist"))
def fashion_mnist(cfg: DataConfig) -> DatasetSplits:
    """Fashion-MNIST: 60,000 / 10,000 grey 28x28 clothing images, 10 classes (torchvision)."""
    return _idx_dataset(cfg, "fashion_mnist", datasets.FashionMNIST, 10,
                        FASHION_MNIST_MEAN, FASHION_MNIST_STD)


# ------------------------------------------------------------------------------- CIFAR
class _PresenceChecked:
    """Mixin for torchvision's CIFAR classes: files must exist, their md5 is not checked.

    torchvision checks the md5 of every batch and of the meta file on load; stlib checks it
    only on download (through the unmodified torchvision class).
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
            self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class CIFAR10(_PresenceChecked, datasets.CIFAR10):
    """torchvision ``CIFAR10``; files whose md5 differs are accepted (see the mixin)."""


class CIFAR100(_PresenceChecked, datasets.CIFAR100):
    """torchvision ``CIFAR100``; files whose md5 differs are accepted (see the mixin)."""


def _cifar_files(cls: type) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar_dataset(cfg: DataConfig, name: str, cls: type, tv_cls: type, num_classes: int,
                   mean, std) -> DatasetSplits:
    root = resolve_root(cfg.root)
    folder = root / cls.base_folder
    expected = _cifar_files(cls)

    def complete() -> bool:
        return all((folder / f).is_file() for f in expected)

    how = (f"set data.download=true on a machine with internet, or copy {cls.base_folder} "
           f"(extracted from {cls.url}) into {root}")
    if not complete() and cfg.download:
        announce_download(name, cls.url, root)
        try:
            tv_cls(str(root), train=True, download=True)  # md5-checked download and extraction
        except Exception as err:  # network, permissions, checksum: all end here
            raise _download_failed(name, root, err, how) from err
    if not complete():
        missing = [f for f in expected if not (folder / f).is_file()]
        raise DatasetNotFoundError(_not_found_message(name, root, [folder], expected, how, missing))
    train_tf, val_tf, size = _pil_transforms(cfg, 32, mean, std)
    return DatasetSplits(
        train=cls(str(root), train=True, transform=train_tf),
        val=cls(str(root), train=False, transform=val_tf),
        num_classes=num_classes, in_chans=3, img_size=size, mean=mean, std=std,
    )


@DATASETS.register("cifar10", aliases=("cifar-10",))
def cifar10(cfg: DataConfig) -> DatasetSplits:
    """CIFAR-10: 50,000 / 10,000 colour 32x32 images, 10 classes (torchvision)."""
    return _cifar_dataset(cfg, "cifar10", CIFAR10, datasets.CIFAR10, 10, CIFAR10_MEAN, CIFAR10_STD)


@DATASETS.register("cifar100", aliases=("cifar-100",))
def cifar100(cfg: DataConfig) -> DatasetSplits:
    """CIFAR-100: 50,000 / 10,000 colour 32x32 images, 100 fine classes (torchvision)."""
    return _cifar_dataset(cfg, "cifar100", CIFAR100, datasets.CIFAR100, 100,
                          CIFAR100_MEAN, CIFAR100_STD)


# -------------------------------------------------------------------------------- ImageNet
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@DATASETS.register("imagenet", aliases=("imagenet1k", "ilsvrc2012"))
def imagenet(cfg: DataConfig) -> DatasetSplits:
    """ImageNet-1k as two class-per-folder trees, ``<root>/train/<wnid>/*.JPEG`` and
    ``<root>/val/<wnid>/*.JPEG`` (torchvision ``ImageFolder``; the usual layout after
    extracting ILSVRC2012 and sorting val into class folders). Train: RandomResizedCrop
    (scale 0.08-1, ratio 3/4-4/3) + the recipe's flip / RandAugment / erasing; val: resize to
    size/0.875 and centre-crop (timm's eval transform). No download: ImageNet's licence needs
    a manual download.
    """
    root = resolve_root(cfg.root)
    train_dir, val_dir = root / "train", root / "val"
    how = ("download ILSVRC2012 from image-net.org (registration required), extract train/ and "
           f"val/ (val sorted into class folders) under {root}")
    missing = [str(d) for d in (train_dir, val_dir) if not d.is_dir()]
    if missing:
        raise DatasetNotFoundError(_not_found_message(
            "imagenet", root, [train_dir, val_dir], ["train/<class>/*", "val/<class>/*"], how))
    size = cfg.img_size or 224
    train_tf = build_train_transform(size, IMAGENET_MEAN, IMAGENET_STD, hflip=cfg.hflip,
                                     auto_augment=cfg.auto_augment, re_prob=cfg.re_prob,
                                     interpolation=cfg.interpolation, scale=(0.08, 1.0),
                                     ratio=(3 / 4, 4 / 3))
    mode = InterpolationMode(cfg.interpolation)
    val_tf = transforms.Compose([transforms.Resize(int(size / 0.875), interpolation=mode),
                                 transforms.CenterCrop(size), transforms.ToTensor()])
    train = datasets.ImageFolder(str(train_dir), transform=train_tf)
    val = datasets.ImageFolder(str(val_dir), transform=val_tf)
    if train.classes != val.classes:
        raise ValueError(f"imagenet: train/ and val/ under {root} hold different class folders "
                         f"({len(train.classes)} vs {len(val.classes)})")
    return DatasetSplits(train=train, val=val, num_classes=len(train.classes), in_chans=3,
                         img_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
