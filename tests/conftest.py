"""Shared fixtures: the real data folder beside the checkout, and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels are checked through its interpreter on CPU machines. The flag must be set
    # before anything imports triton (spikingjelly, timm or torch's flop counter may do so
    # from another test module in the same worker), so it is set here, first.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests are tiny: one thread avoids oversubscription under pytest-xdist. Set at import, before
# any fixture trains, so a module-scoped reference run and a resumed child process (started
# with OMP_NUM_THREADS=1) reduce floats in the same order whichever test runs first.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real MNIST, Fashion-MNIST, N-MNIST, ...); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the checkout)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _small_torch():
    """Every test starts from one thread (a test may change it) and a fixed seed."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def quick_run_dir(tmp_path_factory) -> Path:
    """A 2-epoch quick-preset digits run (T=2, 32 wide), trained once per worker: ``fit``
    returns the finished record to every later module that asks for the same settings."""
    import stlib

    out = tmp_path_factory.getbasetemp() / "analysis_quick_run"
    record = stlib.fit(stlib.load_params("params/spikformer/cifar10.yaml", preset="quick", overrides=[
        f"experiment.output_dir={out}", "train.epochs=2", "train.progress=false", "model.T=2",
        "model.kwargs.embed_dim=32"]))
    return record.run_dir


@pytest.fixture(scope="module")
def quick_run(quick_run_dir):
    """The quick run rebuilt for analysis: ``(config, model, bundle)``."""
    from stlib.analysis.gradcam import load_run

    return load_run(quick_run_dir)


def pytest_collection_modifyitems(items):
    """The README commands (about five minutes on one worker) start first, so that under
    pytest-xdist the other worker runs the rest of the suite meanwhile (pyproject's
    ``--no-loadscope-reorder`` keeps this order; xdist would otherwise put files with many
    tests first)."""
    items.sort(key=lambda item: item.path.name != "test_readme_commands.py")
