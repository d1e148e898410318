"""Event-camera datasets: N-MNIST, DVS128 Gesture, CIFAR10-DVS, N-Caltech101, N-CARS.

Each is registered in :data:`~stlib.data.base.DATASETS` as ``build(cfg) -> DatasetSplits`` with
``kind="events"`` and ``time_steps=T``. Every item is ``(frames [T, 2, H, W] float, label int)``,
so loaders yield ``frames [B, T, 2, H, W]``; the trainer permutes to ``[T, B, 2, H, W]`` and
skips normalization (``mean``/``std`` are 0/1 so normalizing anyway changes nothing).

Pipeline of one recording::

    file --reader--> events (x, y, t, p) --ToFrame(n_time_bins=T)--> counts [T, 2, H0, W0] int16
         --(disk cache)--> float --resize to img_size--> augment (train) --> frames [T, 2, S, S]

* ``T`` is ``cfg.time_steps`` when the config has it (the trainer sets it from ``model.T``),
  else :data:`DEFAULT_TIME_STEPS`. Bins split each recording's own time span into T equal
  slices (tonic ``ToFrame(n_time_bins=T)``, see :class:`ToCounts`); a pixel's value is its
  event count in the bin.
* ``img_size`` (``cfg.img_size``, default :data:`DEFAULT_FRAME_SIZE`): square frame side; the
  counts are resized with ``cfg.interpolation`` (bilinear in the DVS recipes; negative
  overshoot of bicubic is clipped to 0).
* Disk cache: the counts at sensor resolution go through ``tonic.DiskCachedDataset`` under
  ``cache_dir()/events/<dataset>/<split>-T<T>-<key>``; ``key`` hashes everything that
  changes them (reader version, dataset root, file list with sizes, slice times, sensor size,
  T). Resize and augmentation run after the cache, so changing ``img_size`` or augmentation
  reuses it. Counts above 32,767 per pixel and bin are clipped (int16 storage). A config
  attribute ``event_cache = False`` converts every time instead (for N-MNIST that is faster:
  its files are tiny, see the README's throughput numbers).
* Augmentation (train split only), the papers' event augmentations applied identically to
  every time bin: horizontal flip with probability ``cfg.hflip``, and ``cfg.auto_augment`` read
  as an event-augmentation spec of ``-``-separated ops: ``crop<P>`` (zero-pad P pixels, random
  crop back to ``img_size``: TIM's RandomCrop(64, padding=5) is ``crop5``) and ``rot<D>``
  (random rotation in [-D, D] degrees). Example: ``auto_augment: crop5-rot15``. Mixup/CutMix
  are batch-level (the trainer's timm ``Mixup``; see :func:`flatten_time_for_mix`).

Datasets, on-disk layouts looked for under ``root`` (``cfg.root`` made absolute):

* ``nmnist``: ``{root, root/NMNIST, root/nmnist}/{Train,Test}/<digit>/*.bin``; official split;
  34 x 34.
* ``dvs_gesture``: ``{root, root/DvsGesture}/userNN_<lighting>.aedat`` (AEDAT 3.1) with
  ``userNN_<lighting>_labels.csv`` and, if present, ``trials_to_{train,test}.txt`` (else users
  1-23 train, 24-29 test), or tonic's ``root/DVSGesture/ibmGesture{Train,Test}/**/<label>.npy``;
  128 x 128.
* ``cifar10_dvs``: ``{root, root/CIFAR10DVS, root/cifar10_dvs}/<class>/*.aedat`` (AEDAT 2.0) or
  ``*.aedat4`` (tonic's conversion; needs ``pip install aedat``); 90/10 split; 128 x 128.
* ``ncaltech101``: ``{root/Caltech101, root/NCALTECH101/Caltech101, root}/<class>/*.bin``;
  90/10 split; recordings shifted to the origin (as tonic does), sensor 240 x 180.
* ``ncars``: ``root/n-cars_{train,test}/{background,cars}/*.dat`` (Prophesee DAT, read with
  expelliarmus); official split; 120 x 100.

The 90/10 split (CIFAR10-DVS, N-Caltech101; no official split exists): the recordings of each
class are sorted by the number in their file name; the first ``floor(0.9 n)`` train, the rest
test. It is deterministic and independent of the seed (TIM's and spikingjelly's convention).

HMDB51-DVS and UCF101-DVS are not supported: neither tonic 1.7 nor spikingjelly 2.0 ships a
reader for them (see :data:`UNSUPPORTED`).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from stlib.data.base import DATASETS, DataConfig, DatasetNotFoundError, DatasetSplits
from stlib.data.base import announce_download, cache_dir, resolve_root
from stlib.data.static import _download_failed, _not_found_message

__all__ = [
    "DEFAULT_FRAME_SIZE", "DEFAULT_TIME_STEPS", "EVENT_DTYPE", "UNSUPPORTED",
    "EventRecordings", "FrameTransform", "Recording", "ToCounts", "class_split",
    "flatten_time_for_mix", "parse_event_augment", "read_aedat2_dvs128", "read_aedat31_polarity",
    "read_nmnist_bin", "read_prophesee_dat", "time_steps_of",
    "nmnist", "dvs_gesture", "cifar10_dvs", "ncaltech101", "ncars",
]

#: Bump when a reader or the frame conversion changes: old cache entries are then not reused.
READER_VERSION = 1
EVENT_DTYPE = np.dtype([("x", np.int32), ("y", np.int32), ("t", np.int64), ("p", np.int8)])
#: T used when the config carries no ``time_steps`` (the papers' most common setting).
DEFAULT_TIME_STEPS = {"nmnist": 10, "dvs_gesture": 16, "cifar10_dvs": 16, "ncaltech101": 10,
                      "ncars": 10}
#: Frame side used when ``data.img_size`` is None (the sensor's for square sensors).
DEFAULT_FRAME_SIZE = {"nmnist": 34, "dvs_gesture": 128, "cifar10_dvs": 128, "ncaltech101": 128,
                      "ncars": 64}
SPLIT_TRAIN_FRACTION = 0.9
UNSUPPORTED = {
    "hmdb51_dvs": "neither tonic 1.7 nor spikingjelly 2.0 has a dataset class or reader for it",
    "ucf101_dvs": "neither tonic 1.7 nor spikingjelly 2.0 has a dataset class or reader for it",
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


# ------------------------------------------------------------------------------- readers
def _events(x, y, t, p) -> np.ndarray:
    out = np.empty(len(t), dtype=EVENT_DTYPE)
    out["x"], out["y"], out["t"], out["p"] = x, y, t, p
    return out


def read_nmnist_bin(path: str | Path) -> np.ndarray:
    """N-MNIST / N-Caltech101 ``.bin``: 40-bit events (x 8b, y 8b, p 1b, t 23b µs) (tonic)."""
    from tonic.io import read_mnist_file

    return read_mnist_file(str(path), dtype=EVENT_DTYPE)


def _aedat_data_start(fh) -> int:
    """Offset of the first byte after the ``#``-comment header lines of an AEDAT 2/3 file."""
    pos = 0
    while True:
        line = fh.readline()
        if not line.startswith(b"#"):
            return pos
        pos += len(line)
        if line.startswith(b"#!END-HEADER"):
            return pos


def read_aedat2_dvs128(path: str | Path) -> np.ndarray:
    """CIFAR10-DVS original ``.aedat`` (AEDAT 2.0, DVS128): big-endian (address u32, time u32).

    Address bits: polarity bit 0, column bits 1-7, row bits 8-14; the recording is mirrored,
    so ``x = 127 - row``, ``y = 127 - column`` and the polarity is inverted (the orientation
    spikingjelly uses for this dataset).
    """
    with open(path, "rb") as fh:
        fh.seek(_aedat_data_start(fh))
        raw = np.frombuffer(fh.read(), dtype=">u4")
    raw = raw[: len(raw) // 2 * 2]
    addr, t = raw[0::2].astype(np.int64), raw[1::2].astype(np.int64)
    col, row = (addr >> 1) & 0x7F, (addr >> 8) & 0x7F
    return _events(127 - row, 127 - col, t, 1 - (addr & 1))


PACKET_HEADER = np.dtype([("type", "<i2"), ("source", "<i2"), ("size", "<i4"), ("ts_offset", "<i4"),
                          ("ts_overflow", "<i4"), ("capacity", "<i4"), ("number", "<i4"),
                          ("valid", "<i4")])


def read_aedat31_polarity(path: str | Path) -> np.ndarray:
    """AEDAT 3.1 (DVS128 Gesture): packets of a 28-byte header + events; polarity events only.

    Polarity event (type 1, 8 bytes): data u32 (bit 0 valid, bit 1 polarity, bits 2-16 y,
    bits 17-31 x), timestamp i32; the packet's ``ts_overflow`` supplies bits 31+ of time.
    """
    buf = Path(path).read_bytes()
    with open(path, "rb") as fh:
        pos = _aedat_data_start(fh)
    chunks = []
    while pos + PACKET_HEADER.itemsize <= len(buf):
        head = np.frombuffer(buf, PACKET_HEADER, 1, pos)[0]
        pos += PACKET_HEADER.itemsize
        nbytes = int(head["capacity"]) * int(head["size"])
        if head["type"] == 1 and head["size"] == 8:
            ev = np.frombuffer(buf, np.dtype([("data", "<u4"), ("ts", "<i4")]),
                               int(head["number"]), pos)
            ev = ev[(ev["data"] & 1) == 1]  # invalidated events stay in the packet
            t = ev["ts"].astype(np.int64) + (int(head["ts_overflow"]) << 31)
            d = ev["data"].astype(np.int64)
            chunks.append(_events((d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, t, (d >> 1) & 1))
        pos += nbytes
    return np.concatenate(chunks) if chunks else np.empty(0, EVENT_DTYPE)


def read_prophesee_dat(path: str | Path) -> np.ndarray:
    """Prophesee ``.dat`` (EVT 2D, N-CARS): expelliarmus' reader."""
    from expelliarmus import Wizard

    ev = Wizard(encoding="dat").read(str(path))
    return _events(ev["x"], ev["y"], ev["t"], ev["p"])


def _read_aedat4(path: str | Path) -> np.ndarray:
    from tonic.io import read_aedat4

    ev = read_aedat4(str(path))
    names = ev.dtype.names  # tonic names the fields (t, x, y, p) positionally
    return _events(ev[names[1]], ev[names[2]], ev[names[0]], ev[names[3]])


def _read_tonic_gesture_npy(path: str | Path) -> np.ndarray:
    ev = np.load(path)  # columns x, y, p, t (ms)
    return _events(ev[:, 0], ev[:, 1], ev[:, 3].astype(np.int64) * 1000, ev[:, 2])


@functools.lru_cache(maxsize=2)
def _read_gesture_recording(path: str) -> np.ndarray:
    # one recording holds ~11 samples: keep the last two parsed while its samples are cut
    return read_aedat31_polarity(path)


# ----------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Recording:
    """One sample: a file, its label and (recordings cut into samples) a window [start, end) µs."""

    path: str
    label: int
    start: int | None = None
    end: int | None = None


class EventRecordings(Dataset):
    """``(events, label)`` of each :class:`Recording`, read with ``reader``, then ``transform``."""

    def __init__(self, recordings: Sequence[Recording], reader: Callable[[str], np.ndarray],
                 transform: Callable | None = None):
        self.recordings, self.reader, self.transform = list(recordings), reader, transform

    def __len__(self) -> int:
        return len(self.recordings)

    @property
    def targets(self) -> list[int]:
        return [r.label for r in self.recordings]

    def events(self, index: int) -> np.ndarray:
        rec = self.recordings[index]
        ev = self.reader(rec.path)
        if rec.start is not None:
            ev = ev[(ev["t"] >= rec.start) & (ev["t"] < rec.end)]
        return ev

    def __getitem__(self, index: int):
        ev = self.events(index)
        return (self.transform(ev) if self.transform else ev), self.recordings[index].label


class ToCounts:
    """events -> event counts ``[T, 2, H, W]`` int16 in T equal time bins (``n_time_bins = T``).

    The bins are tonic ``ToFrame(n_time_bins=T)``'s: the span from the first to the last
    timestamp cut into T windows of equal length. tonic 1.7 slices them half-open and so drops
    the events at the last timestamp of every recording; here they go into the last bin (the
    only difference; ``tests/test_data_events.py`` checks both against each other). Events
    outside the sensor are dropped; a recording with no event gives zeros.
    """

    def __init__(self, sensor_size: tuple[int, int], T: int):
        self.sensor_size, self.T = tuple(sensor_size), T  # (W, H)

    def __call__(self, ev: np.ndarray) -> np.ndarray:
        W, H = self.sensor_size
        frames = np.zeros((self.T, 2, H, W), np.int32)
        ev = ev[(ev["x"] >= 0) & (ev["x"] < W) & (ev["y"] >= 0) & (ev["y"] < H)]
        if len(ev):
            t = ev["t"].astype(np.float64)
            t0, window = t.min(), max(t.max() - t.min(), 1.0) / self.T
            b = np.minimum(((t - t0) / window).astype(np.int64), self.T - 1)
            np.add.at(frames, (b, (ev["p"] > 0).astype(np.int64), ev["y"], ev["x"]), 1)
        return np.minimum(frames, np.iinfo(np.int16).max).astype(np.int16)


def parse_event_augment(spec: str | None) -> dict[str, float]:
    """``"crop5-rot15"`` -> ``{"crop": 5, "rot": 15}``; ``None`` or ``""`` -> ``{}``."""
    ops: dict[str, float] = {}
    for token in filter(None, (spec or "").split("-")):
        m = re.fullmatch(r"(crop|rot)(\d+(?:\.\d+)?)", token)
        if not m:
            raise ValueError(f"event augmentation {token!r} in auto_augment={spec!r} is not "
                             f"crop<P> (pad P pixels, random crop) or rot<D> (rotate by up to "
                             f"D degrees), e.g. 'crop5-rot15'")
        ops[m.group(1)] = float(m.group(2))
    return ops


class FrameTransform:
    """counts ``[T, 2, H, W]`` -> float frames ``[T, 2, S, S]``: resize, then (train) augment.

    Augmentations draw once per sample and act identically on every time bin and polarity.
    """

    def __init__(self, size: int, interpolation: str = "bilinear", train: bool = False,
                 hflip: float = 0.0, crop_padding: int = 0, rotate: float = 0.0):
        self.size, self.interpolation, self.train = size, interpolation, train
        self.hflip, self.crop_padding, self.rotate = hflip, int(crop_padding), rotate

    def __call__(self, counts) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(counts), dtype=torch.float32)  # [T, 2, H, W]
        if x.shape[-2:] != (self.size, self.size):
            mode = self.interpolation
            kw = {} if mode == "nearest" else dict(align_corners=False, antialias=True)
            x = F.interpolate(x, size=(self.size, self.size), mode=mode, **kw).clamp_(min=0)
        if not self.train:
            return x
        if self.hflip and torch.rand(()) < self.hflip:
            x = x.flip(-1)
        if self.crop_padding:
            p = self.crop_padding
            x = F.pad(x, (p, p, p, p))
            i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[..., i:i + self.size, j:j + self.size]
        if self.rotate:
            angle = float(torch.empty(()).uniform_(-self.rotate, self.rotate))
            x = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
        return x

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class _Framed(Dataset):
    """Uncached path (``cfg.event_cache = False``): reader -> counts -> transform, every time."""

    def __init__(self, recordings: EventRecordings, counts: ToCounts, transform: FrameTransform):
        self.recordings, self.counts, self.transform = recordings, counts, transform

    def __len__(self) -> int:
        return len(self.recordings)

    def __getitem__(self, index: int):
        ev, label = self.recordings[index]
        return self.transform(self.counts(ev)), label


def flatten_time_for_mix(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, 2, H, W]`` -> ``[B, 2T, H, W]``, so timm ``Mixup`` (mixup and cutmix) sees images.

    CutMix then cuts the same box out of every time bin (EventMix-style region mixing);
    reshape back with ``.view(B, T, 2, H, W)``.
    """
    B, T, P, H, W = frames.shape
    return frames.reshape(B, T * P, H, W)


def time_steps_of(cfg, name: str) -> int:
    """``cfg.time_steps`` if the config carries it (set from ``model.T``), else the default."""
    T = getattr(cfg, "time_steps", None)
    T = DEFAULT_TIME_STEPS[name] if T is None else T
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ValueError(f"time_steps must be a positive int, got {T!r}")
    return T


def _natural_key(path: Path):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]


def class_split(by_class: dict[int, list[Path]], fraction: float = SPLIT_TRAIN_FRACTION
                ) -> tuple[list[Recording], list[Recording]]:
    """Per class, files sorted by the number in their name: first ``floor(fraction n)`` train."""
    train, val = [], []
    for label in sorted(by_class):
        files = sorted(by_class[label], key=_natural_key)
        cut = math.floor(fraction * len(files))
        train += [Recording(str(p), label) for p in files[:cut]]
        val += [Recording(str(p), label) for p in files[cut:]]
    return train, val


def _cache_key(name: str, split: str, root: Path, recs: Sequence[Recording],
               sensor: tuple[int, int], T: int) -> str:
    files = [(r.path, Path(r.path).stat().st_size, r.label, r.start, r.end) for r in recs]
    blob = json.dumps([READER_VERSION, name, split, str(root), files, list(sensor), T])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _splits(cfg: DataConfig, name: str, root: Path, train: list[Recording], val: list[Recording],
            reader: Callable, sensor: tuple[int, int], num_classes: int) -> DatasetSplits:
    """Turn the two recording lists into framed (cached, augmented) datasets."""
    T = time_steps_of(cfg, name)
    size = cfg.img_size or DEFAULT_FRAME_SIZE[name]
    if cfg.re_prob:
        raise ValueError(f"{name}: random erasing (re_prob={cfg.re_prob}) is not an event "
                         f"augmentation; set data.re_prob=0")
    if cfg.interpolation not in ("nearest", "bilinear", "bicubic"):
        raise ValueError(f"{name}: frames are resized as tensors; interpolation must be nearest, "
                         f"bilinear or bicubic, got {cfg.interpolation!r}")
    ops = parse_event_augment(cfg.auto_augment)
    counts = ToCounts(sensor, T)
    use_cache = getattr(cfg, "event_cache", True)
    out = []
    for split, recs, is_train in (("train", train, True), ("val", val, False)):
        tf = FrameTransform(size, cfg.interpolation, train=is_train, hflip=cfg.hflip,
                            crop_padding=int(ops.get("crop", 0)), rotate=ops.get("rot", 0.0))
        data = EventRecordings(recs, reader)
        if use_cache:
            from tonic import DiskCachedDataset

            key = _cache_key(name, split, root, recs, sensor, T)
            path = cache_dir() / "events" / name / f"{split}-T{T}-{key}"
            path.mkdir(parents=True, exist_ok=True)  # DDP ranks race on tonic's own makedirs
            data = DiskCachedDataset(EventRecordings(recs, reader, transform=counts),
                                     cache_path=str(path), transform=tf)
        else:
            data = _Framed(data, counts, tf)
        out.append(data)
    return DatasetSplits(train=out[0], val=out[1], num_classes=num_classes, in_chans=2,
                         img_size=size, mean=(0.0, 0.0), std=(1.0, 1.0), kind="events",
                         time_steps=T)


def _not_found(name: str, root: Path, where: Sequence[Path], expected: str, how: str
               ) -> DatasetNotFoundError:
    return DatasetNotFoundError(_not_found_message(name, root, list(where), [expected], how))


def _tonic_download(name: str, root: Path, cls_name: str, how: str, **kwargs) -> None:
    """Let tonic download (and extract) ``cls_name`` into ``root/<cls_name>``."""
    import tonic.datasets

    dataset = getattr(tonic.datasets, cls_name)
    source = next((getattr(dataset, a) for a in ("url", "base_url", "train_url")
                   if getattr(dataset, a, None)), f"tonic.datasets.{cls_name}")
    announce_download(name, source, root / cls_name)
    try:
        dataset(str(root), **kwargs)
    except Exception as err:  # network, permissions, checksum: all end here
        raise _download_failed(name, root / cls_name, err, how) from err


def _first(candidates: Sequence[Path], ok: Callable[[Path], bool]) -> Path | None:
    return next((p for p in candidates if ok(p)), None)


def _files(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.rglob(f"*{suffix}"))


# ------------------------------------------------------------------------------ N-MNIST
def _digit_recordings(folder: Path) -> list[Recording]:
    recs = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()):
        recs += [Recording(str(f), int(d.name)) for f in sorted(d.glob("*.bin"), key=_natural_key)]
    return recs


@DATASETS.register("nmnist", aliases=("n-mnist", "n_mnist"))
def nmnist(cfg: DataConfig) -> DatasetSplits:
    """N-MNIST (Orchard et al. 2015): 60,000 / 10,000 saccade recordings of MNIST digits, 34x34."""
    root = resolve_root(cfg.root)
    candidates = [root, root / "NMNIST", root / "nmnist"]

    def ok(p: Path) -> bool:
        return all((p / s).is_dir() and any((p / s).rglob("*.bin")) for s in ("Train", "Test"))

    how = (f"set data.download=true on a machine with internet (tonic fetches Train/ and Test/ "
           f"into {root / 'NMNIST'}), or copy the extracted Train/ and Test/ folders into {root}")
    folder = _first(candidates, ok)
    if folder is None and cfg.download:
        for train in (True, False):
            _tonic_download("nmnist", root, "NMNIST", how, train=train)
        folder = _first(candidates, ok)
    if folder is None:
        raise _not_found("nmnist", root, candidates,
                         "Train/<digit>/*.bin and Test/<digit>/*.bin", how)
    return _splits(cfg, "nmnist", folder, _digit_recordings(folder / "Train"),
                   _digit_recordings(folder / "Test"), read_nmnist_bin, (34, 34), 10)


# ------------------------------------------------------------------------- DVS Gesture
GESTURE_TEST_USERS = range(24, 30)  # the official trials_to_test.txt: users 24-29


def _gesture_trial_names(folder: Path, which: str, aedats: list[Path]) -> set[str]:
    listed = folder / f"trials_to_{which}.txt"
    if listed.is_file():
        return {line.strip() for line in listed.read_text().splitlines() if line.strip()}
    test = {p.name for p in aedats if int(re.match(r"user(\d+)", p.name).group(1))
            in GESTURE_TEST_USERS}
    return test if which == "test" else {p.name for p in aedats} - test


def _gesture_samples(folder: Path, names: set[str]) -> list[Recording]:
    recs = []
    for aedat in sorted(folder.glob("user*.aedat")):
        if aedat.name not in names:
            continue
        csv = aedat.with_name(f"{aedat.stem}_labels.csv")
        rows = np.loadtxt(csv, dtype=np.int64, delimiter=",", skiprows=1, ndmin=2)
        recs += [Recording(str(aedat), int(c) - 1, int(s), int(e)) for c, s, e in rows]
    return recs


def _gesture_npy_samples(folder: Path) -> list[Recording]:
    return [Recording(str(f), int(f.stem)) for f in sorted(folder.rglob("*.npy"))]


@DATASETS.register("dvs_gesture", aliases=("dvs128_gesture", "dvsgesture", "dvs128"))
def dvs_gesture(cfg: DataConfig) -> DatasetSplits:
    """DVS128 Gesture (Amir et al. 2017): 11 hand gestures, 29 users, 128x128, 1,176 / 288 samples.

    Original release: each ``userNN_<lighting>.aedat`` (AEDAT 3.1) is cut into samples by its
    ``_labels.csv`` (class 1-11, start, end in µs; label = class - 1). Train/test follow
    ``trials_to_train.txt`` / ``trials_to_test.txt`` when present, else users 1-23 / 24-29.
    """
    root = resolve_root(cfg.root)
    originals = [root, root / "DvsGesture", root / "DVS  Gesture dataset" / "DvsGesture"]
    tonic_dir = root / "DVSGesture"
    how = (f"download DvsGesture.tar.gz from IBM (research.ibm.com/dvsgesture) and extract it "
           f"into {root}, or set data.download=true (tonic fetches its .npy conversion into "
           f"{tonic_dir})")

    def original_ok(p: Path) -> bool:
        return any(a.with_name(f"{a.stem}_labels.csv").is_file() for a in p.glob("user*.aedat"))

    def tonic_ok() -> bool:
        return all((tonic_dir / s).is_dir() and any((tonic_dir / s).rglob("*.npy"))
                   for s in ("ibmGestureTrain", "ibmGestureTest"))

    folder = _first(originals, original_ok)
    if folder is None and not tonic_ok() and cfg.download:
        for train in (True, False):
            _tonic_download("dvs_gesture", root, "DVSGesture", how, train=train)
    if folder is not None:
        aedats = sorted(folder.glob("user*.aedat"))
        train = _gesture_samples(folder, _gesture_trial_names(folder, "train", aedats))
        val = _gesture_samples(folder, _gesture_trial_names(folder, "test", aedats))
        reader, base = _read_gesture_recording, folder
    elif tonic_ok():
        train = _gesture_npy_samples(tonic_dir / "ibmGestureTrain")
        val = _gesture_npy_samples(tonic_dir / "ibmGestureTest")
        reader, base = _read_tonic_gesture_npy, tonic_dir
    else:
        raise _not_found("dvs_gesture", root, [*originals, tonic_dir],
                         "userNN_<lighting>.aedat with userNN_<lighting>_labels.csv (or tonic's "
                         "ibmGestureTrain/ and ibmGestureTest/ .npy folders)", how)
    return _splits(cfg, "dvs_gesture", base, train, val, reader, (128, 128), 11)


# ------------------------------------------------------------------------- CIFAR10-DVS
@DATASETS.register("cifar10_dvs", aliases=("cifar10dvs", "cifar10-dvs"))
def cifar10_dvs(cfg: DataConfig) -> DatasetSplits:
    """CIFAR10-DVS (Li et al. 2017): 10,000 recordings (1,000 per class), 128x128, 90/10 split."""
    root = resolve_root(cfg.root)
    candidates = [root, root / "CIFAR10DVS", root / "cifar10_dvs"]
    how = (f"download the class archives from figshare (doi 10.6084/m9.figshare.4724671) and "
           f"extract them into {root}/<class>/, or set data.download=true (tonic fetches its "
           f"AEDAT4 conversion into {root / 'CIFAR10DVS'})")

    def files_of(p: Path) -> dict[int, list[Path]]:
        by_class = {}
        for label, cls in enumerate(CIFAR10_CLASSES):
            files = [*(p / cls).glob("*.aedat"), *(p / cls).glob("*.aedat4")]
            if files:
                by_class[label] = files
        return by_class

    folder = _first(candidates, lambda p: bool(files_of(p)))
    if folder is None and cfg.download:
        _tonic_download("cifar10_dvs", root, "CIFAR10DVS", how)
        folder = _first(candidates, lambda p: bool(files_of(p)))
    if folder is None:
        raise _not_found("cifar10_dvs", root, candidates,
                         f"<class>/*.aedat (or *.aedat4), class in {', '.join(CIFAR10_CLASSES)}",
                         how)
    by_class = files_of(folder)
    if any(f.suffix == ".aedat4" for files in by_class.values() for f in files) and \
            importlib.util.find_spec("aedat") is None:
        raise ModuleNotFoundError("cifar10_dvs: the .aedat4 files (tonic's conversion) are read by "
                                  "tonic.io.read_aedat4, which needs the 'aedat' package: "
                                  "pip install aedat")
    train, val = class_split(by_class)
    return _splits(cfg, "cifar10_dvs", folder, train, val, _read_cifar10_dvs, (128, 128), 10)


def _read_cifar10_dvs(path: str) -> np.ndarray:
    return _read_aedat4(path) if path.endswith(".aedat4") else read_aedat2_dvs128(path)


# ------------------------------------------------------------------------ N-Caltech101
def _read_ncaltech(path: str) -> np.ndarray:
    ev = read_nmnist_bin(path)
    if len(ev):  # recordings are cropped to the object: shift to the origin, as tonic does
        ev["x"] -= ev["x"].min()
        ev["y"] -= ev["y"].min()
    return ev


@DATASETS.register("ncaltech101", aliases=("n-caltech101", "n_caltech101", "ncaltech"))
def ncaltech101(cfg: DataConfig) -> DatasetSplits:
    """N-Caltech101 (Orchard et al. 2015): 8,709 saccade recordings of Caltech101, <= 240x180.

    Labels: index of the class folder in sorted order (101 folders in the full release, with
    ``BACKGROUND_Google``). Split 90/10 per class, as CIFAR10-DVS.
    """
    root = resolve_root(cfg.root)
    candidates = [root / "Caltech101", root / "NCALTECH101" / "Caltech101", root]
    how = (f"set data.download=true on a machine with internet (tonic fetches it into "
           f"{root / 'NCALTECH101' / 'Caltech101'}), or extract Caltech101/<class>/*.bin "
           f"into {root}")

    def classes_of(p: Path) -> list[Path]:
        if not p.is_dir():
            return []
        return sorted(d for d in p.iterdir() if d.is_dir() and any(d.glob("*.bin")))

    folder = _first(candidates, lambda p: bool(classes_of(p)))
    if folder is None and cfg.download:
        _tonic_download("ncaltech101", root, "NCALTECH101", how)
        folder = _first(candidates, lambda p: bool(classes_of(p)))
    if folder is None:
        raise _not_found("ncaltech101", root, candidates, "<class>/*.bin", how)
    classes = classes_of(folder)
    train, val = class_split({i: list(d.glob("*.bin")) for i, d in enumerate(classes)})
    return _splits(cfg, "ncaltech101", folder, train, val, _read_ncaltech, (240, 180), len(classes))


# ------------------------------------------------------------------------------- N-CARS
NCARS_CLASSES = ("background", "cars")


@DATASETS.register("ncars", aliases=("n-cars", "n_cars"))
def ncars(cfg: DataConfig) -> DatasetSplits:
    """N-CARS (Sironi et al. 2018): 100 ms ATIS clips, 120x100, car / background, 15,422 / 8,607."""
    root = resolve_root(cfg.root)
    split_dirs = {"train": root / "n-cars_train", "test": root / "n-cars_test"}
    how = (f"download N-CARS from Prophesee (prophesee.ai/2018/03/13/dataset-n-cars) and "
           f"extract n-cars_train/ and n-cars_test/ into {root}; tonic cannot download it")

    def recs(folder: Path) -> list[Recording]:
        return [Recording(str(f), label) for label, cls in enumerate(NCARS_CLASSES)
                for f in sorted((folder / cls).glob("*.dat"), key=_natural_key)]

    if not all(recs(d) for d in split_dirs.values()):
        raise _not_found("ncars", root, list(split_dirs.values()),
                         "{background,cars}/*.dat in each", how)
    return _splits(cfg, "ncars", root, recs(split_dirs["train"]), recs(split_dirs["test"]),
                   read_prophesee_dat, (120, 100), 2)
