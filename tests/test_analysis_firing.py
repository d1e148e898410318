"""stlib.analysis.firing: rates per layer and time step from forward hooks, on real batches."""
from __future__ import annotations

import pytest
import torch

import stlib
from stlib.analysis.firing import (calibrate_batchnorm, firing_rates, firing_rates_per_step,
                                   firing_table, mean_firing_rate, record_spikes)
from stlib.analysis.gradcam import load_run
from stlib.models import create_model
from stlib.neurons import neurons_of
from stlib.registry import UnknownNameError

TINY = dict(img_size=8, in_chans=1, embed_dim=16, depth=1, num_heads=2, T=3,
            pool_stages=(False, False, False, True))


@pytest.fixture
def active_model():
    torch.manual_seed(0)
    net = create_model("spikformer_4_384", **TINY)
    x = torch.rand(6, 1, 8, 8)
    return calibrate_batchnorm(net, [x]), x


def test_per_step_rates_are_the_nonzero_fraction_of_each_step(active_model):
    net, x = active_model
    batches = [x[:3], x[3:]]
    per_step = firing_rates_per_step(net, batches)
    spikes = record_spikes(net, x)
    assert list(per_step) == [name for name, _ in neurons_of(net)] == list(spikes)
    for name, rates in per_step.items():
        s = spikes[name]  # [T, B, ...]
        assert len(rates) == 3
        expected = [s[t].ne(0).float().mean().item() for t in range(3)]
        assert rates == pytest.approx(expected), name
    assert any(max(r) > 0 for r in per_step.values()), "no layer fired: the check is vacuous"


def test_layer_rates_average_the_steps_and_loaders_may_carry_labels(active_model):
    net, x = active_model
    labelled = [(x, torch.zeros(len(x), dtype=torch.long))]
    rates = firing_rates(net, labelled)
    per_step = firing_rates_per_step(net, [x])
    for name, rate in rates.items():
        assert rate == pytest.approx(sum(per_step[name]) / 3)
        assert 0.0 <= rate <= 1.0
    assert mean_firing_rate(rates) == pytest.approx(sum(rates.values()) / len(rates))
    assert mean_firing_rate({}) is None


def test_max_batches_and_training_flag(active_model):
    net, x = active_model
    net.train()
    first = firing_rates(net, [x[:2], torch.full_like(x[:2], 50.0)], max_batches=1)
    both = firing_rates(net, [x[:2], torch.full_like(x[:2], 50.0)], max_batches=None)
    assert first != both
    assert net.training  # restored


def test_record_spikes_picks_layers_and_names_unknown_ones(active_model):
    net, x = active_model
    picked = record_spikes(net, x, layers=["blocks.0.mlp.fc1_neuron", "patch_embed.neurons.0"])
    assert list(picked) == ["blocks.0.mlp.fc1_neuron", "patch_embed.neurons.0"]
    assert picked["blocks.0.mlp.fc1_neuron"].shape == (3, 6, 16, 64)  # [T, B, N = 4x4, hidden]
    with pytest.raises(UnknownNameError, match="patch_embed.neurons.0"):
        record_spikes(net, x, layers=["patch_embed.neuron.0"])


def test_calibration_changes_statistics_not_weights():
    torch.manual_seed(0)
    net = create_model("spikformer_4_384", **TINY)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    bn = net.patch_embed.stages[0].bn
    calibrate_batchnorm(net, [torch.rand(4, 1, 8, 8)])
    assert not net.training and bn.momentum == 0.1
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_trained_run_rates_differ_across_layers(quick_run):
    config, model, bundle = quick_run
    table = firing_table(model, bundle.val_loader, max_batches=1)
    assert list(table.columns) == ["layer", "t0", "t1", "rate"]
    assert len(table) == len(neurons_of(model))
    values = table[["t0", "t1", "rate"]].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    assert table["rate"].nunique() > len(table) // 2, "rates do not differ across layers"
    assert (table["rate"] > 0).all(), "a silent layer in a trained run"
    # the summary's number is the same measurement
    assert mean_firing_rate(dict(zip(table["layer"], table["rate"]))) == pytest.approx(
        mean_firing_rate(firing_rates(model, bundle.val_loader, max_batches=1)))
