"""stlib.train: a real (tiny) training run, its record, resume, atomic checkpoints, CLI."""
from __future__ import annotations

import json

import pytest
import torch

import stlib.train as train_mod
from stlib import atomic
from stlib.record import save_checkpoint
from stlib.params import load_params
from stlib.train import RunRecord, fit, main

SUMMARY_KEYS = {"model", "dataset", "neuron", "encoding", "T", "params", "epochs_done",
                "best_acc1", "final_acc1", "mean_firing_rate", "energy_mj", "seconds", "device",
                "config_hash"}


def tiny_config(tmp_path, *extra):
    return load_params("params/spikformer/cifar10.yaml", preset="quick", overrides=[
        f"experiment.output_dir={tmp_path}", "train.epochs=3", "train.progress=false",
        "model.T=2", "model.kwargs.embed_dim=32", "data.batch_size=64", *extra])


def test_fit_writes_the_run_record(tmp_path):
    config = tiny_config(tmp_path)
    record = fit(config)
    run = tmp_path / config.experiment.study / config.run_id
    assert record.run_dir == run
    for name in ["config.yaml", "metrics.csv", "summary.json", "firing.csv",
                 "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "finished" and summary["epochs_done"] == 3
    assert summary["neuron"] == "LIF" and summary["dataset"] == "digits" and summary["T"] == 2
    # the quick preset shrinks the model: its label says so, its name stays the registered one
    assert summary["model"] == "spikformer_4_384"
    assert summary["model_label"] == "spikformer_4_384 [depth=1, embed_dim=32, num_heads=4]"
    assert summary["params"] == sum(p.numel() for p in
                                    train_mod.build_model(config, _bundle(config)).parameters())
    assert 0.0 < summary["mean_firing_rate"] < 1.0
    assert summary["best_acc1"] >= summary["final_acc1"] > 10.0  # above chance after 3 epochs
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,lr,train_loss,train_acc1,val_loss,val_acc1,val_acc5,seconds"
    assert [r["epoch"] for r in record.metrics] == [0, 1, 2]
    rates = (run / "firing.csv").read_text().splitlines()
    assert rates[0] == "layer,firing_rate,t0,t1" and len(rates) == 1 + 12
    assert summary["energy_mj"] > 0
    # the same settings again: the finished record comes back without training
    again = fit(tiny_config(tmp_path))
    assert again.summary == record.summary


def _bundle(config):
    from stlib.data import build_dataloaders

    return build_dataloaders(config.data, seed=0)


def crash_in_the_second_epoch(monkeypatch):
    """Make the next fit die at the start of its second epoch; returns the real epoch."""
    real, calls = train_mod.train_one_epoch, {"n": 0}

    def dies_in_the_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_one_epoch", dies_in_the_second_epoch)
    return real


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    straight = fit(tiny_config(tmp_path / "a"))

    real = crash_in_the_second_epoch(monkeypatch)
    config = tiny_config(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        fit(config)
    partial = RunRecord.load(config.run_dir)
    assert partial.summary["status"] == "running" and partial.summary["epochs_done"] == 1
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    resumed = fit(config)
    assert resumed.summary["epochs_done"] == 3
    for a, b in zip(straight.metrics, resumed.metrics):
        for key in ["lr", "train_loss", "val_loss", "val_acc1"]:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["epoch"], key)
    wa = torch.load(straight.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    wb = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)


def test_foreign_or_truncated_checkpoint_is_refused_and_kept(tmp_path):
    config = tiny_config(tmp_path)
    last = config.run_dir / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        fit(config)
    assert last.read_bytes() == b"not a checkpoint"  # nothing written over
    torch.save({"weights": 1}, last)
    with pytest.raises(RuntimeError, match="not an stlib checkpoint"):
        fit(config)
    torch.save({"config_hash": "other", "model": {}}, last)
    with pytest.raises(RuntimeError, match="belongs to config 'other'.*--force"):
        fit(config)
    assert torch.load(last, weights_only=True)["config_hash"] == "other"  # kept


def test_resuming_with_another_thread_count_warns_in_one_line(tmp_path, monkeypatch):
    real = crash_in_the_second_epoch(monkeypatch)
    config = tiny_config(tmp_path, "train.epochs=2")
    with pytest.raises(KeyboardInterrupt):
        fit(config)
    last = torch.load(config.run_dir / "checkpoints/last.pt", weights_only=True)
    assert (last["threads"], last["device"]) == (1, "cpu")
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    torch.set_num_threads(2)
    with pytest.warns(RuntimeWarning) as caught:
        record = fit(config)
    message = str(caught[0].message)
    assert "2 torch thread(s)" in message and "trained with 1" in message and "\n" not in message
    assert "last digits" in message
    assert record.summary["threads"] == 2 and record.finished


def test_progress_bar_shows_loss_accuracy_and_lr_and_tensorboard_gets_the_curves(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = fit(tiny_config(tmp_path, "train.epochs=2", "train.progress=true"))
    bar = capsys.readouterr().err
    assert "epoch 1" in bar and "loss=" in bar and "acc=" in bar and "lr=" in bar
    events = EventAccumulator(str(record.run_dir / "tensorboard"))
    events.Reload()
    assert {"loss/train", "loss/val", "acc1/val", "lr"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("acc1/val")]
    assert logged == [(r["epoch"], pytest.approx(r["val_acc1"], abs=1e-3)) for r in record.metrics]


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def explode(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.atomic_write_bytes(target, explode)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


def test_atomic_writes_get_the_mode_of_any_new_file(tmp_path):
    """mkstemp makes 0600 files; results must be readable like any other file (0666 - umask)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic.atomic_write_text(tmp_path / "summary.json", "{}")
        save_checkpoint({"x": 1}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    for name in ("summary.json", "last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_command_line_trains_and_rejects_bad_keys(tmp_path, capsys):
    code = main(["params/spikformer/cifar10.yaml", "--preset", "quick",
                 "--set", f"experiment.output_dir={tmp_path}", "--set", "train.epochs=1",
                 "--set", "train.progress=false", "--set", "model.T=1",
                 "--set", "model.kwargs.embed_dim=16", "--set", "neuron.type=IFSoft"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["neuron"] == "IFSoft" and summary["epochs_done"] == 1
    assert main(["params/spikformer/cifar10.yaml", "--set", "train.epohcs=1"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err


def test_cli_ends_a_missing_dataset_in_one_line_and_names_the_run_directory(tmp_path, capsys):
    args = ["params/spikformer/cifar10.yaml", "--set", f"experiment.output_dir={tmp_path}",
            "--set", f"data.root={tmp_path / 'nowhere'}", "--set", "train.device=cpu",
            "--set", "data.download=false"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"run directory: {tmp_path}")
    assert len(err) == 2 and err[1].startswith("error: DatasetNotFoundError: cifar10 not found")
    assert "Traceback" not in "".join(err)
    from stlib.data import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError):  # --debug: the exception itself
        main([*args, "--debug"])


def test_unknown_names_fail_when_the_config_loads(tmp_path):
    from stlib.registry import UnknownNameError

    for override, valid in [("neuron.type=LIFF", "PLIF"), ("model.name=spikformer_9", "spikformer_4_384"),
                            ("model.encoding=ratee", "rate"), ("data.name=digitz", "digits")]:
        with pytest.raises(UnknownNameError, match=valid):
            tiny_config(tmp_path, override)
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_data_root_is_one_clear_error(tmp_path):
    from stlib.data import DatasetNotFoundError

    config = load_params("params/spikformer/cifar10.yaml", overrides=[
        f"data.root={tmp_path / 'nowhere'}", "data.download=false", "train.device=cpu",
        f"experiment.output_dir={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        fit(config)


def test_tet_loss_trains_on_per_step_logits(tmp_path):
    config = tiny_config(tmp_path, "train.loss=tet", "train.epochs=2")
    model = train_mod.build_model(config, _bundle(config))
    assert model.net.head.per_step  # TET needs [T, B, classes]
    record = fit(config)
    assert record.finished and record.summary["final_acc1"] > 10.0
    losses = [r["train_loss"] for r in record.metrics]
    assert losses[1] < losses[0]


def test_cpu_bf16_trains_under_bf16_autocast_without_a_scaler(tmp_path, monkeypatch):
    from stlib import build
    from stlib.run import Run

    config = tiny_config(tmp_path, "train.cpu_bf16=true", "train.epochs=2")
    assert build.autocast_dtype(config, torch.device("cpu")) is torch.bfloat16
    assert build.autocast_dtype(tiny_config(tmp_path), torch.device("cpu")) is None  # amp is CUDA-only
    assert build.autocast_dtype(tiny_config(tmp_path, "train.amp=true"), torch.device("cuda")) is torch.float16
    seen = []
    real = torch.autocast

    def spy(device_type, dtype=None, enabled=True, **kwargs):
        seen.append((device_type, dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled, **kwargs)

    monkeypatch.setattr(train_mod.torch, "autocast", spy)
    record = fit(config)
    monkeypatch.undo()
    assert seen and set(seen) == {("cpu", torch.bfloat16, True)}
    assert not Run.set_up(config).scaler.is_enabled()
    assert record.finished and record.summary["final_acc1"] > 10.0
    losses = [r["train_loss"] for r in record.metrics]
    assert losses[1] < losses[0]


@pytest.mark.slow
def test_pixel_sequences_train_through_fit(tmp_path, shared_data, monkeypatch):
    """psMNIST through the real trainer (MNIST cut to 256 / 128 images to stay fast): the
    sequence goes to Spikformer's sequence tokenizer and the permutation lands in the record."""
    import dataclasses

    from torch.utils.data import Subset

    from stlib.data import DATASETS

    full = DATASETS.get("mnist")

    def small_mnist(cfg):
        splits = full(cfg)
        return dataclasses.replace(splits, train=Subset(splits.train, range(256)),
                                   val=Subset(splits.val, range(128)))

    monkeypatch.setitem(DATASETS._entries, "mnist", small_mnist)
    config = load_params("params/spikformer/psmnist.yaml", preset="quick", overrides=[
        f"experiment.output_dir={tmp_path}", f"data.root={shared_data / 'mnist'}",
        "data.name=psmnist", "data.val_batch_size=128", "train.epochs=1", "train.progress=false",
        "model.T=2", "model.kwargs.embed_dim=32"])
    record = fit(config)
    assert record.finished and record.summary["dataset"] == "psmnist"
    assert record.summary["sequence_order"]["order"] == "permuted"
    assert len(record.summary["sequence_order"]["permutation_sha256"]) == 16
    with pytest.raises(ValueError, match="cannot apply to psmnist pixel sequences"):
        fit(load_params("params/spikformer/psmnist.yaml", preset="quick", overrides=[
            f"experiment.output_dir={tmp_path / 'b'}", f"data.root={shared_data / 'mnist'}",
            "data.name=psmnist", "train.mixup=0.5", "train.epochs=1"]))


def test_the_cli_runs_without_a_runtime_warning_and_names_its_run_directory(tmp_path):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-W", "error::RuntimeWarning", "-m", "stlib.train",
               "params/spikformer/cifar10.yaml", "--preset", "quick",
               "--set", f"experiment.output_dir={tmp_path}", "--set", "train.epochs=1",
               "--set", "train.progress=false", "--set", "model.T=1",
               "--set", "model.kwargs.embed_dim=16"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RuntimeWarning" not in result.stderr and "sys.modules" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("run directory: ")]
    run_dir = json.loads(result.stdout)["run_id"]
    assert len(lines) == 2 and all(run_dir in line for line in lines)
    assert lines[1].endswith("(finished)")
