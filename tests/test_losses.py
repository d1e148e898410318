"""TET loss (stlib.losses): per-time-step cross-entropy plus the MSE regulariser."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stlib.losses import TETLoss, tet_loss


def _logits(T=4, B=3, C=5, seed=0):
    return torch.randn(T, B, C, generator=torch.Generator().manual_seed(seed)) * 2


def test_tet_is_mean_of_per_step_ce_plus_weighted_mse():
    logits, y = _logits(), torch.tensor([0, 3, 4])
    lam, phi = 0.3, 0.5
    ce_t = [F.cross_entropy(logits[t], y) for t in range(logits.shape[0])]
    mse = ((logits - phi) ** 2).mean()
    expected = (1 - lam) * torch.stack(ce_t).mean() + lam * mse
    assert tet_loss(logits, y, lam=lam, phi=phi).item() == pytest.approx(expected.item(), rel=1e-6)


def test_tet_differs_from_ce_of_the_mean_and_defaults():
    logits, y = _logits(), torch.tensor([1, 1, 2])
    pure = tet_loss(logits, y, lam=0.0)
    assert pure.item() != pytest.approx(F.cross_entropy(logits.mean(0), y).item(), rel=1e-3)
    # one step, no regulariser: plain cross-entropy
    assert tet_loss(logits[:1], y, lam=0.0).item() == pytest.approx(
        F.cross_entropy(logits[0], y).item(), rel=1e-6)
    module = TETLoss()
    assert (module.lam, module.phi) == (1e-3, 1.0) and "lam=0.001" in repr(module)
    assert module(logits, y).item() == pytest.approx(
        (0.999 * pure + 1e-3 * ((logits - 1) ** 2).mean()).item(), rel=1e-6)


def test_tet_soft_targets_and_smoothing():
    logits, y = _logits(), torch.tensor([0, 2, 4])
    soft = F.one_hot(y, 5).float()
    assert tet_loss(logits, soft).item() == pytest.approx(tet_loss(logits, y).item(), rel=1e-6)
    smoothed = tet_loss(logits, y, lam=0.0, smoothing=0.1)
    manual = torch.stack([F.cross_entropy(logits[t], y, label_smoothing=0.1)
                          for t in range(4)]).mean()
    assert smoothed.item() == pytest.approx(manual.item(), rel=1e-6)


def test_tet_gradient_reaches_every_step_and_checks_shape():
    logits = _logits().requires_grad_()
    tet_loss(logits, torch.tensor([0, 1, 2])).backward()
    assert torch.all(logits.grad.abs().sum(dim=(1, 2)) > 0)
    with pytest.raises(ValueError, match=r"\[T, B, classes\]"):
        tet_loss(torch.zeros(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="lambda"):
        tet_loss(_logits(), torch.tensor([0, 1, 2]), lam=1.5)
