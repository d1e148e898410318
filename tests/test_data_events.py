"""Event datasets (stlib.data.events): real N-MNIST / N-CARS files, and small files written in
the real on-disk formats of CIFAR10-DVS (AEDAT 2.0), DVS128 Gesture (AEDAT 3.1 + labels csv)
and N-Caltech101 (.bin tree), read back through the registered builders."""
from __future__ import annotations

import math
import shutil
import struct
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import stlib.data.events as E
from stlib.data.base import DATASETS, DatasetNotFoundError, build_dataloaders
from stlib.params import DataConfig

NMNIST_TRAIN_COUNTS = [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]  # ../shared/data/README.md
NMNIST_TEST_COUNTS = [8, 14, 8, 11, 14, 7, 10, 15, 2, 11]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test writes its frame cache into its own folder."""
    monkeypatch.setenv("STLIB_CACHE", str(tmp_path / "cache"))


def _cfg(name: str, root, T: int | None = 3, **kw) -> DataConfig:
    values = dict(name=name, root=str(root), batch_size=2, num_workers=0,
                  interpolation="bilinear")
    cfg = DataConfig(**{**values, **kw})
    if T is not None:
        cfg.time_steps = T
    return cfg


# ----------------------------------------------------------------- writers of real formats
def _nmnist_bytes(x, y, t, p) -> bytes:
    """The 40-bit N-MNIST / N-Caltech101 event: x 8b, y 8b, p 1b, t 23b (µs), big-endian fields."""
    out = bytearray()
    for xi, yi, ti, pi in zip(x, y, t, p):
        out += bytes([xi, yi, (pi << 7) | ((ti >> 16) & 0x7F), (ti >> 8) & 0xFF, ti & 0xFF])
    return bytes(out)


def _write_aedat2(path: Path, x, y, t, p) -> None:
    """CIFAR10-DVS original: header lines, then big-endian (address, timestamp) pairs; the
    sensor is mirrored (x = 127 - row, y = 127 - column, polarity inverted)."""
    head = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
            b"# Data format is int32 address, int32 timestamp (8 bytes total)\r\n")
    addr = ((127 - np.asarray(x)) << 8) | ((127 - np.asarray(y)) << 1) | (1 - np.asarray(p))
    body = np.stack([addr, np.asarray(t)], 1).astype(">u4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + body)


def _aedat31_packet(kind: int, events: list[tuple[int, int]], overflow: int = 0) -> bytes:
    n = len(events)
    head = struct.pack("<hhiiiiii", kind, 1, 8, 4, overflow, n, n, n)
    return head + b"".join(struct.pack("<Ii", d, ts) for d, ts in events)


def _polarity(x, y, p, valid=1) -> int:
    return (x << 17) | (y << 2) | (p << 1) | valid


def _write_gesture(folder: Path, stem: str, samples: list[tuple[int, int, int]]) -> list[tuple]:
    """One AEDAT 3.1 recording with 3 events per labelled window, plus its labels csv.

    Returns the (x, y, p, t) of the valid polarity events, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    events, written = [], []
    for k, (cls, start, end) in enumerate(samples):
        for j in range(3):
            x, y, p, t = (10 * k + j) % 128, (5 * cls + j) % 128, j % 2, start + 100 * j
            events.append((_polarity(x, y, p), t))
            written.append((x, y, p, t))
    events.append((_polarity(1, 1, 1, valid=0), samples[0][1] + 1))  # invalidated: skipped
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    special = _aedat31_packet(0, [(0, 0)])  # a special-event packet: not polarity, skipped
    (folder / f"{stem}.aedat").write_bytes(header + special + _aedat31_packet(1, events))
    rows = "".join(f"{c},{s},{e}\n" for c, s, e in samples)
    (folder / f"{stem}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + rows)
    return written


# --------------------------------------------------------------------------- registry
def test_event_datasets_are_registered():
    for name in ("nmnist", "dvs_gesture", "cifar10_dvs", "ncaltech101", "ncars"):
        assert DATASETS.canonical(name) == name
    assert DATASETS.canonical("cifar10-dvs") == "cifar10_dvs"
    assert set(E.UNSUPPORTED) == {"hmdb51_dvs", "ucf101_dvs"}
    assert "hmdb51_dvs" not in DATASETS.names()


# ------------------------------------------------------------------------ real N-MNIST
def test_nmnist_real_subset_splits_labels_and_frames(shared_data):
    root = shared_data / "nmnist_small"
    splits = E.nmnist(_cfg("nmnist", root, T=5, img_size=34))
    assert (len(splits.train), len(splits.val)) == (1000, 100)
    assert splits.kind == "events" and splits.time_steps == 5 and splits.in_chans == 2
    train_labels = np.bincount(splits.train.dataset.targets, minlength=10)
    assert train_labels.tolist() == NMNIST_TRAIN_COUNTS
    assert np.bincount(splits.val.dataset.targets, minlength=10).tolist() == NMNIST_TEST_COUNTS

    rec = splits.val.dataset.recordings[-1]
    frames, label = splits.val[len(splits.val) - 1]
    assert label == int(Path(rec.path).parent.name) == 9
    assert frames.shape == (5, 2, 34, 34) and frames.dtype == torch.float32
    # decode the 40-bit file independently: every real event lands in exactly one bin
    raw = np.fromfile(rec.path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    td = raw[raw[:, 1] != 240]  # y == 240 marks a timestamp-overflow record
    assert frames.sum().item() == len(td)
    on = td[(td[:, 2] >> 7) == 1]
    expected_on = np.zeros((34, 34))
    np.add.at(expected_on, (on[:, 1], on[:, 0]), 1)
    np.testing.assert_array_equal(frames[:, 1].sum(0).numpy(), expected_on)


def test_counts_match_tonic_toframe_but_keep_the_last_event(shared_data):
    from tonic.transforms import ToFrame

    path = next((shared_data / "nmnist_small" / "Test" / "3").glob("*.bin"))
    ev = E.read_nmnist_bin(path)
    ours = E.ToCounts((34, 34), 6)(ev).astype(np.int64)
    theirs = ToFrame(sensor_size=(34, 34, 2), n_time_bins=6)(ev).astype(np.int64)
    last = ev[ev["t"] == ev["t"].max()]
    missing = np.zeros_like(ours)
    np.add.at(missing, (5, last["p"], last["y"], last["x"]), 1)
    np.testing.assert_array_equal(ours - theirs, missing)  # tonic drops only those
    assert ours.sum() == len(ev)


def test_nmnist_resize_cache_and_loader(shared_data, tmp_path):
    root = shared_data / "nmnist_small"
    cfg = _cfg("nmnist", root, T=4, img_size=16, batch_size=8)
    splits = E.nmnist(cfg)
    first, _ = splits.train[3]
    assert first.shape == (4, 2, 16, 16) and first.min() >= 0
    augmented = E.nmnist(_cfg("nmnist", root, T=4, img_size=16, auto_augment="crop3-rot10",
                              hflip=0.5))
    assert augmented.train[3][0].shape == (4, 2, 16, 16)
    assert torch.equal(augmented.val[3][0], splits.val[3][0])  # no augmentation at test time
    cache = tmp_path / "cache" / "events" / "nmnist"
    assert sorted(p.name.split("-")[:2] for p in cache.iterdir()) == [
        ["train", "T4"], ["val", "T4"]]
    assert len(list(cache.glob("train-*/*.hdf5"))) == 1
    again, _ = splits.train[3]  # from the cache file now
    assert torch.equal(first, again)
    # the key changes with every setting that changes the counts (here T), not with img_size
    E.nmnist(_cfg("nmnist", root, T=6, img_size=16)).train[3]
    E.nmnist(_cfg("nmnist", root, T=4, img_size=8)).train[3]
    assert sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir()) == [
        "train-T4", "train-T6", "val-T4", "val-T6"]

    bundle = build_dataloaders(cfg, seed=0)  # T reaches the builder only once the lead wires it
    frames, labels = next(iter(bundle.val_loader))
    assert frames.dim() == 5 and frames.shape[0] == 8 and frames.shape[2:] == (2, 16, 16)
    assert labels.dtype == torch.long


def test_time_steps_default_and_validation():
    cfg = DataConfig(name="nmnist")
    assert E.time_steps_of(cfg, "nmnist") == E.DEFAULT_TIME_STEPS["nmnist"]
    cfg.time_steps = 7
    assert E.time_steps_of(cfg, "nmnist") == 7
    cfg.time_steps = -1
    with pytest.raises(ValueError, match="time_steps"):
        E.time_steps_of(cfg, "nmnist")


# --------------------------------------------------------------------- tonic sample files
def test_tonic_sample_nmnist_matches_independent_decode(shared_data):
    path = shared_data / "tonic_samples" / "sample_nmnist.bin"
    ev = E.read_nmnist_bin(path)
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    td = raw[raw[:, 1] != 240]
    assert len(ev) == len(td) > 0
    np.testing.assert_array_equal(ev["x"], td[:, 0])
    np.testing.assert_array_equal(ev["p"], td[:, 2] >> 7)
    ts = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = np.cumsum(raw[:, 1] == 240) * 2 ** 13  # each overflow record adds 2^13 µs
    np.testing.assert_array_equal(ev["t"], (ts + overflow)[raw[:, 1] != 240])


def test_ncars_real_dat_file(shared_data, tmp_path):
    sample = shared_data / "tonic_samples" / "sample_ncars.dat"
    ev = E.read_prophesee_dat(sample)
    assert len(ev) == 2009 and ev["x"].max() < 120 and ev["y"].max() < 100
    for split in ("n-cars_train", "n-cars_test"):
        for k, cls in enumerate(("background", "cars")):
            (tmp_path / split / cls).mkdir(parents=True)
            shutil.copy(sample, tmp_path / split / cls / f"obj_{k:06d}_td.dat")
    splits = E.ncars(_cfg("ncars", tmp_path, T=2, img_size=32))
    assert splits.num_classes == 2 and len(splits.train) == 2
    frames, label = splits.train[1]
    assert label == 1 and frames.shape == (2, 2, 32, 32)
    native = E.ncars(_cfg("ncars", tmp_path, T=2, img_size=None, interpolation="nearest"))
    assert native.img_size == E.DEFAULT_FRAME_SIZE["ncars"]


# ------------------------------------------------------------------ written real formats
def test_cifar10_dvs_aedat2_decode_and_90_10_split(tmp_path):
    x, y, t, p = [0, 5, 127, 64], [0, 9, 3, 127], [10, 20, 30, 40], [1, 0, 1, 1]
    for cls in ("airplane", "cat"):
        for i in range(20):
            _write_aedat2(tmp_path / cls / f"cifar10_{cls}_{i}.aedat", x, y, t, p)
    ev = E.read_aedat2_dvs128(tmp_path / "cat" / "cifar10_cat_0.aedat")
    assert ev["x"].tolist() == x and ev["y"].tolist() == y and ev["p"].tolist() == p
    assert ev["t"].tolist() == t

    splits = E.cifar10_dvs(_cfg("cifar10_dvs", tmp_path, T=2, img_size=128))
    assert splits.num_classes == 10 and (len(splits.train), len(splits.val)) == (36, 4)
    val = [Path(r.path).name for r in splits.val.dataset.recordings]
    # per class, by file number (not by string): files 18 and 19 test
    assert val == ["cifar10_airplane_18.aedat", "cifar10_airplane_19.aedat",
                   "cifar10_cat_18.aedat", "cifar10_cat_19.aedat"]
    assert [r.label for r in splits.val.dataset.recordings] == [0, 0, 3, 3]
    frames, _ = splits.val[0]
    assert frames.shape == (2, 2, 128, 128) and frames.sum() == 4
    assert frames[:, 1, 9, 5].sum() == 0 and frames[:, 0, 9, 5].sum() == 1  # (x=5, y=9, p=0)


def test_cifar10_dvs_aedat4_needs_the_aedat_package(tmp_path):
    import importlib.util

    if importlib.util.find_spec("aedat") is not None:
        pytest.skip("the aedat package is installed here")
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "cifar10_dog_0.aedat4").write_bytes(b"")
    with pytest.raises(ModuleNotFoundError, match="pip install aedat"):
        E.cifar10_dvs(_cfg("cifar10_dvs", tmp_path))


def test_dvs_gesture_aedat31_samples_and_trials(tmp_path):
    folder = tmp_path / "DvsGesture"
    w1 = _write_gesture(folder, "user01_fluorescent", [(1, 1000, 2000), (11, 5000, 6000)])
    w2 = _write_gesture(folder, "user24_led", [(4, 100, 900)])
    ev = E.read_aedat31_polarity(folder / "user01_fluorescent.aedat")
    assert [tuple(e) for e in ev[["x", "y", "p", "t"]].tolist()] == w1  # invalid event dropped
    # no trials_to_*.txt: users 1-23 train, 24-29 test
    splits = E.dvs_gesture(_cfg("dvs_gesture", tmp_path, T=3, img_size=128))
    assert [(r.label, r.start, r.end) for r in splits.train.dataset.recordings] == [
        (0, 1000, 2000), (10, 5000, 6000)]
    assert [r.label for r in splits.val.dataset.recordings] == [3]
    frames, label = splits.train[1]
    assert label == 10 and frames.shape == (3, 2, 128, 128)
    assert frames.sum() == 3 and frames[:, 0, 55, 10].sum() == 1  # (x=10, y=55, p=0) of sample 2
    assert splits.val[0][0].sum() == len(w2)
    # an official trials list wins over the user rule
    (folder / "trials_to_train.txt").write_text("user24_led.aedat\n")
    (folder / "trials_to_test.txt").write_text("user01_fluorescent.aedat\n")
    swapped = E.dvs_gesture(_cfg("dvs_gesture", tmp_path, T=3, img_size=64))
    assert swapped.train[0][0].shape == (3, 2, 64, 64)
    assert [r.label for r in swapped.train.dataset.recordings] == [3]


def test_dvs_gesture_tonic_npy_layout(tmp_path):
    """tonic's conversion: ibmGesture{Train,Test}/userNN_<light>/<label>.npy (x, y, p, t ms)."""
    for split, user in (("ibmGestureTrain", "user02_lab"), ("ibmGestureTest", "user25_led")):
        folder = tmp_path / "DVSGesture" / split / user
        folder.mkdir(parents=True)
        np.save(folder / "7.npy", np.array([[3, 4, 1, 0], [5, 6, 0, 2], [7, 8, 1, 4]], np.int64))
    splits = E.dvs_gesture(_cfg("dvs_gesture", tmp_path, T=2, img_size=128))
    assert [r.label for r in splits.train.dataset.recordings] == [7]
    ev = splits.val.dataset.events(0)
    assert ev["t"].tolist() == [0, 2000, 4000] and ev["x"].tolist() == [3, 5, 7]
    frames, _ = splits.val[0]
    assert frames[0, 1, 4, 3] == 1 and frames[1, 1, 8, 7] == 1 and frames.sum() == 3


def test_ncaltech101_bin_tree(tmp_path):
    for cls, n in (("BACKGROUND_Google", 10), ("accordion", 3)):
        for i in range(1, n + 1):
            f = tmp_path / "Caltech101" / cls / f"image_{i:04d}.bin"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(_nmnist_bytes([50, 60, 239], [40, 41, 179], [0, 100, 200], [1, 0, 1]))
    splits = E.ncaltech101(_cfg("ncaltech101", tmp_path, T=2, img_size=None))
    assert splits.num_classes == 2 and (len(splits.train), len(splits.val)) == (9 + 2, 1 + 1)
    assert [r.label for r in splits.val.dataset.recordings] == [0, 1]
    ev = E._read_ncaltech(splits.val.dataset.recordings[0].path)
    assert ev["x"].tolist() == [0, 10, 189] and ev["y"].tolist() == [0, 1, 139]  # shifted to 0
    assert splits.val[0][0].shape == (2, 2, 128, 128)


# ---------------------------------------------------------------- missing data, download
def test_missing_dataset_error_names_paths_and_remedy(tmp_path):
    for name in ("nmnist", "dvs_gesture", "cifar10_dvs", "ncaltech101", "ncars"):
        with pytest.raises(DatasetNotFoundError) as err:
            DATASETS.get(name)(_cfg(name, tmp_path / "nowhere"))
        msg = str(err.value)
        assert str(tmp_path / "nowhere") in msg and "To get it" in msg, msg


def test_offline_download_fails_with_clear_error(tmp_path, monkeypatch):
    import tonic.datasets

    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tonic.datasets.NMNIST, "download", offline)
    with pytest.raises(DatasetNotFoundError, match=r"download into .*NMNIST failed \(URLError"):
        E.nmnist(_cfg("nmnist", tmp_path, download=True))


# ------------------------------------------------------------------------ augmentation
def test_frame_transform_augmentations():
    counts = np.zeros((3, 2, 8, 8), np.int16)
    counts[:, 0, 2, 3] = 5
    flipped = E.FrameTransform(8, train=True, hflip=1.0)(counts)
    assert flipped[:, 0, 2, 4].eq(5).all() and flipped.sum() == 15
    assert E.FrameTransform(8, train=False, hflip=1.0)(counts)[:, 0, 2, 3].eq(5).all()
    torch.manual_seed(1)
    shifts = {tuple(torch.nonzero(E.FrameTransform(8, train=True, crop_padding=2)(counts)[0, 0])[0]
                    .tolist()) for _ in range(20)}
    assert len(shifts) > 1  # random crop moves the content, identically over T
    rotated = E.FrameTransform(8, train=True, rotate=90.0)(counts)
    assert torch.allclose(rotated[0], rotated[2])
    assert E.parse_event_augment("crop5-rot15") == {"crop": 5.0, "rot": 15.0}
    with pytest.raises(ValueError, match="crop<P>"):
        E.parse_event_augment("rand-m9-n1")


def test_event_config_rejects_image_only_options(shared_data):
    root = shared_data / "nmnist_small"
    with pytest.raises(ValueError, match="re_prob"):
        E.nmnist(_cfg("nmnist", root, re_prob=0.25))
    with pytest.raises(ValueError, match="interpolation"):
        E.nmnist(_cfg("nmnist", root, interpolation="lanczos"))


def test_flatten_time_for_mix_roundtrip():
    x = torch.arange(2 * 3 * 2 * 4 * 4, dtype=torch.float32).view(2, 3, 2, 4, 4)
    flat = E.flatten_time_for_mix(x)
    assert flat.shape == (2, 6, 4, 4) and torch.equal(flat.view_as(x), x)


# ------------------------------------------------------------- quick training (slow)
@pytest.mark.slow
def test_quick_events_preset_learns_nmnist_through_fit(shared_data, tmp_path):
    """params/presets/quick_events.yaml through the real trainer: frames [B, T, 2, H, W] go
    time-first and unnormalized into a small Spikformer; >= 80 % on the 100 test recordings."""
    from stlib.params import load_params
    from stlib.train import fit

    config = load_params("params/spikformer/cifar10.yaml", preset="quick_events", overrides=[
        f"experiment.output_dir={tmp_path}", f"data.root={shared_data / 'nmnist_small'}",
        "train.progress=false"])
    summary = fit(config).summary
    print(f"quick_events N-MNIST: {summary['final_acc1']:.1f} % in {summary['seconds']} s")
    assert summary["dataset"] == "nmnist" and summary["status"] == "finished"
    assert summary["final_acc1"] >= 80.0, summary
    with pytest.raises(ValueError, match="cannot apply to event data"):
        fit(load_params("params/spikformer/cifar10.yaml", preset="quick_events", overrides=[
            f"experiment.output_dir={tmp_path / 'b'}", f"data.root={shared_data / 'nmnist_small'}",
            "model.encoding=rate"]))


def test_frame_conversion_throughput_and_cache_equivalence(shared_data):
    """Events per second into frames: conversion (reader + binning) vs the disk cache, which
    must hand back exactly the frames the conversion makes."""
    root = shared_data / "nmnist_small"
    n = 100
    plain_cfg = _cfg("nmnist", root, T=10, img_size=34)
    plain_cfg.event_cache = False
    plain = E.nmnist(plain_cfg).train
    events = sum(len(plain.recordings.events(i)) for i in range(n))
    cached = E.nmnist(_cfg("nmnist", root, T=10, img_size=34)).train
    rates = {}
    for label, data in (("no cache", plain), ("cache fill", cached), ("cache read", cached)):
        start = time.perf_counter()
        frames = [data[i][0] for i in range(n)]
        rates[label] = events / (time.perf_counter() - start)
        assert sum(f.sum().item() for f in frames) == events  # no event lost on either path
    assert torch.equal(plain[n - 1][0], cached[n - 1][0])
    print({k: f"{v:,.0f} events/s" for k, v in rates.items()}, f"({events:,} events)")


# ------------------------------------------------------------------------------ configs
REPO = Path(__file__).resolve().parents[1]
EVENT_CONFIGS = sorted(str(p.relative_to(REPO))
                       for name in ("cifar10_dvs", "dvs_gesture", "ncaltech101", "nmnist")
                       for p in (REPO / "params").glob(f"*/{name}.yaml"))


@pytest.mark.parametrize("path", EVENT_CONFIGS)
def test_event_configs_load_and_build_their_model(path):
    from stlib.models import create_model
    from stlib.params import load_params

    config = load_params(path)
    assert config.data.name in E.DEFAULT_TIME_STEPS
    E.parse_event_augment(config.data.auto_augment)  # a valid event augmentation spec
    size = config.data.img_size or E.DEFAULT_FRAME_SIZE[config.data.name]
    # the trainer's merge: dataset facts first, the file's kwargs win
    arch = dict(T=config.model.T, img_size=size, in_chans=2, num_classes=11)
    model = create_model(config.model.name, **{**arch, **config.model.kwargs})
    assert model.in_chans == 2 and model.T == config.model.T


def test_quick_events_preset_one_step(shared_data):
    from stlib.losses import tet_loss
    from stlib.models import create_model
    from stlib.params import load_params

    config = load_params("params/spikformer/cifar10.yaml", preset="quick_events")
    assert (config.data.name, config.model.T, config.data.img_size) == ("nmnist", 4, 16)
    cfg = config.data
    cfg.time_steps = config.model.T
    cfg.root = str(shared_data / "nmnist_small")
    frames, labels = zip(*(E.nmnist(cfg).val[i] for i in range(0, 100, 25)))
    x = torch.stack(frames).permute(1, 0, 2, 3, 4)  # [B, T, 2, H, W] -> [T, B, 2, H, W]
    model = create_model(config.model.name, T=4, img_size=16, in_chans=2, num_classes=10,
                         per_step_logits=True, **config.model.kwargs)
    logits = model(x)
    assert logits.shape == (4, 4, 10)
    tet_loss(logits, torch.tensor(labels)).backward()
    assert all(p.grad is not None for p in model.parameters())
