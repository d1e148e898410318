"""Long runs: DDP under torchrun (gloo on CPU), kill-and-resume, stop signals, NaN, integrity."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import stlib.run as run_mod
from stlib.params import load_params
from stlib.train import RunRecord, fit

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.progress=false", "model.T=2", "model.kwargs.embed_dim=32", "data.batch_size=64",
        "train.deterministic=true"]


def config_for(out: Path, *extra: str):
    return load_params("params/spikformer/cifar10.yaml", preset="quick",
                       overrides=[f"experiment.output_dir={out}", "train.epochs=3", *TINY, *extra])


def cli(out: Path, *extra: str) -> list[str]:
    args = ["params/spikformer/cifar10.yaml", "--preset", "quick"]
    for item in [f"experiment.output_dir={out}", "train.epochs=3", *TINY, *extra]:
        args += ["--set", item]
    return args


def child_env() -> dict[str, str]:
    # one thread per process: same float reduction order as the in-process runs (conftest)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def weights(record: RunRecord) -> dict[str, torch.Tensor]:
    return torch.load(record.run_dir / "checkpoints/last.pt", weights_only=True)["model"]


def assert_same_run(a: RunRecord, b: RunRecord) -> None:
    assert len(a.metrics) == len(b.metrics)
    for ra, rb in zip(a.metrics, b.metrics):
        for key in ["lr", "train_loss", "train_acc1", "val_loss", "val_acc1"]:
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["epoch"], key)
    wa, wb = weights(a), weights(b)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> RunRecord:
    """The uninterrupted reference run."""
    return fit(config_for(tmp_path_factory.mktemp("straight")))


def wait_for(predicate, process, timeout=240.0):
    start = time.time()
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"training exited early with {process.returncode}: "
                                 f"{process.stderr.read().decode()[-2000:]}")
        if time.time() - start > timeout:
            process.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.05)


def metrics_rows(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return len(path.read_text().splitlines()) - 1 if path.is_file() else 0


def train_into_second_epoch(out: Path):
    """Start ``python -m stlib.train`` in a child process; return once epoch 0 is recorded and
    the child is a little way into epoch 1."""
    config = config_for(out)
    process = subprocess.Popen([sys.executable, "-m", "stlib.train", *cli(out)], cwd=REPO,
                               env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: metrics_rows(config.run_dir) >= 1, process)
    time.sleep(0.3)  # into the second epoch
    return config, process


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tmp_path, straight):
    config, process = train_into_second_epoch(tmp_path)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert RunRecord.load(config.run_dir).summary["status"] == "running"
    resumed = fit(config)
    assert resumed.finished
    assert_same_run(straight, resumed)


@pytest.mark.slow
def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(tmp_path, straight):
    config, process = train_into_second_epoch(tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 130
    assert "stopped by signal" in process.stderr.read().decode()
    state = torch.load(config.run_dir / "checkpoints/last.pt", weights_only=True)
    assert state["step"] > 0, "the stop should land mid-epoch"
    resumed = fit(config)
    assert_same_run(straight, resumed)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    """torchrun with 2 CPU processes vs 1 process accumulating the same 2 shares.

    BatchNorm normalizes over each process's share (SyncBatchNorm is CUDA-only), so the
    single-process reference splits every global batch into the same 2 interleaved
    micro-batches (``train.accum_steps=2``); the parameters must then agree.
    """
    single = fit(config_for(tmp_path / "one", "train.epochs=2", "train.accum_steps=2"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port=29517", "-m", "stlib.train",
               *cli(tmp_path / "two", "train.epochs=2")]
    done = subprocess.run(command, cwd=REPO, env=child_env(), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    two = RunRecord.load(config_for(tmp_path / "two", "train.epochs=2").run_dir)
    assert two.summary["world_size"] == 2 and two.finished
    wa = torch.load(single.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    wb = torch.load(two.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    params = [k for k in wa if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 20
    for key in params:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=key)
    for a, b in zip(single.metrics, two.metrics):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = run_mod.build_optimization
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        optimizer, scheduler, epochs, mixup, loss_fn = real(*args, **kwargs)

        def loss(logits, target):
            calls["n"] += 1
            value = loss_fn(logits, target)
            return value * float("nan") if calls["n"] == 30 else value  # 30 = epoch 1, step 7
        return optimizer, scheduler, epochs, mixup, loss

    monkeypatch.setattr(run_mod, "build_optimization", poisoned)
    config = config_for(tmp_path)
    with pytest.raises(FloatingPointError, match="epoch 1, step 7"):
        fit(config)
    state = torch.load(config.run_dir / "checkpoints/last.pt", weights_only=True)
    assert state["epoch"] == 0 and state["step"] == 0  # the good end-of-epoch-0 checkpoint
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_resume_from_another_config_needs_force(tmp_path):
    source = fit(config_for(tmp_path / "a", "train.epochs=1"))
    other = config_for(tmp_path / "b", "train.epochs=2")
    ckpt = source.run_dir / "checkpoints/last.pt"
    with pytest.raises(RuntimeError, match="refusing to resume"):
        fit(other, resume_from=ckpt)
    record = fit(other, resume_from=ckpt, force=True)
    assert record.finished and [r["epoch"] for r in record.metrics] == [1]


def test_batch_larger_than_the_dataset_and_bad_image_size_are_clear(tmp_path):
    with pytest.raises(ValueError, match="data.batch_size=5000 is larger"):
        fit(config_for(tmp_path, "data.batch_size=5000"))
    with pytest.raises(ValueError, match="not divisible by the SPS downsampling"):
        fit(config_for(tmp_path, "data.img_size=10"))
    assert not any(tmp_path.iterdir())  # nothing was written
