"""Helpers shared by the model-zoo tests: the model contract, checked the same way for
every family (quick-preset kwargs, gradients reaching every parameter, neuron swaps, params
files)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from stlib.data import DATASETS
from stlib.models import create_model
from stlib.params import load_params

REPO = Path(__file__).resolve().parents[1]

#: what the quick preset and the trainer pass for 8x8 one-channel digits
QUICK = dict(img_size=8, in_chans=1, num_classes=10, T=4, embed_dim=64, depth=1, num_heads=4)
TINY = dict(img_size=8, in_chans=1, num_classes=3, T=2, embed_dim=16, depth=1, num_heads=2)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def threshold(neuron) -> float:
    return float(torch.as_tensor(neuron.v_threshold).detach())


def assert_every_parameter_learns(model: torch.nn.Module, x: torch.Tensor, classes: int) -> None:
    """One forward/backward: finite logits of the right shape, a gradient on every parameter."""
    logits = model(x)
    assert logits.shape == (x.shape[1], classes) and torch.isfinite(logits).all()
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def digits(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real digits training images ``[n, 1, 8, 8]`` in [0, 1] and their labels, through
    stlib's own loader (the quick preset's dataset)."""
    from stlib.data.static import digits as build_digits
    from stlib.params import DataConfig

    images, labels = build_digits(DataConfig(name="digits")).train.tensors
    return images[:n], labels[:n]


def assert_quick_preset_trains(name: str, steps: int = 6, ratio: float = 0.92, **extra) -> None:
    """The quick preset's kwargs (plus ``extra``) build, and its optimiser on 64 real digits
    images lowers the full-batch loss below ``ratio`` x its start (2.30 = chance)."""
    losses = quick_preset_losses(name, steps=steps, **extra)
    assert losses[-1] < ratio * losses[0], losses



def quick_preset_losses(name: str, steps: int = 6, **extra) -> list[float]:
    """Training losses of ``steps`` full-batch AdamW steps with the quick preset's kwargs."""
    torch.manual_seed(0)
    model = create_model(name, **{**QUICK, **extra})
    x, y = digits()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_quick_preset_learns(name: str, steps: int = 6, **extra) -> None:
    """The quick preset's kwargs build, and a few optimiser steps lower the training loss."""
    losses = quick_preset_losses(name, steps, **extra)
    assert all(v == v for v in losses), losses  # no NaN
    assert losses[-1] < 0.9 * losses[0], losses


def meta_model(name: str, **overrides) -> torch.nn.Module:
    """The model built on the meta device: shapes and counts without memory or init cost
    (ImageNet models have up to 66M parameters)."""
    with torch.device("meta"):
        return create_model(name, **overrides)


def meta_count(name: str, **overrides) -> int:
    """Parameter count without allocating."""
    return count(meta_model(name, **overrides))


def quick_model_name(params_file: str) -> str:
    """The model of ``params_file``, checking that the quick preset on top of it asks for
    exactly what the quick-training helper builds (``QUICK``)."""
    config = load_params(REPO / params_file, preset="quick")
    assert {**config.model.kwargs, "T": config.model.T}.items() <= QUICK.items()
    return config.model.name


def check_params_file(path: str, model_name: str) -> None:
    """Load a params file (skipped while its dataset is not registered) and check its model."""
    data_name = (yaml.safe_load((REPO / path).read_text()).get("data") or {}).get("name")
    if data_name is not None and data_name not in DATASETS:
        pytest.skip(f"dataset {data_name!r} of {path} is not registered in stlib.data yet")
    assert load_params(REPO / path).model.name == model_name


