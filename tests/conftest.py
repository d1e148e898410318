"""Shared fixtures: the real data folder beside the checkout, and small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    """Tests are tiny: one thread avoids oversubscription under pytest-xdist."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
