"""QSD-Transformer: LSQ 4-bit weights, IE-LIF (MultiSpike, half-up rounding, counts / 2 at the
attention), layer scales, counts, params files. Shared tests: test_model_contract.py; official
layout: test_official_weights.py (fixture qsd_8_15m)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from _zoo import QUICK, check_params_file, meta_count, quick_model_name
from stlib.layers.quantized import QuantConv2d, QuantLinear, lsq_weight, quantize_weights
from stlib.models import create_model
from stlib.neurons import LIF, MultiSpike, neuron_factory, neurons_of

TINY = dict(img_size=8, in_chans=1, embed_dim=16, last_dim=24, depth=4, num_heads=2,
            num_classes=3, strides=(1, 1, 2, 2, 1))


# bollossom/QSD-Transformer classification/models.py, 1000 classes, 4-bit, counted by building
# the official spikformer_8_*_CAFormer, less its identity ActLSQ tensors (alpha, zero_point)
@pytest.mark.parametrize("name, expected, official_with_dead_actlsq", [
    ("qsd_8_15m", 15_160_432, 15_245_862), ("qsd_8_384", 31_403_360, 31_527_302),
    ("qsd_8_512", 55_442_576, 55_607_830)])
def test_parameter_counts_match_the_official_code(name, expected, official_with_dead_actlsq):
    model = create_model(name, weight_bits=0)  # the dead tensors: 2 x in-channels per layer
    dead = sum(2 * (m.in_channels if isinstance(m, nn.Conv2d) else m.in_features)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert meta_count(name) == expected == official_with_dead_actlsq - dead


def test_full_precision_option_has_no_step_sizes():
    quantized, plain = meta_count("qsd_8_15m"), meta_count("qsd_8_15m", weight_bits=0)
    model = create_model("qsd_8_15m_cifar", weight_bits=0, **TINY)
    assert not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules())
    # one step size per output channel of every conv and linear layer
    steps = sum(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
                for m in create_model("qsd_8_15m", weight_bits=0).modules()
                if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert quantized - plain == steps


def test_every_weight_layer_is_quantized_and_neurons_are_ie_lif():
    model = create_model("qsd_8_15m_cifar", **TINY)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(isinstance(m, (QuantConv2d, QuantLinear)) and m.bits == 4 for m in layers)
    found = dict(neurons_of(model))
    assert all(type(n) is MultiSpike and n.v_threshold == 0.25 and n.round_half_up
               for n in found.values())
    attn = model.stage3[1].blocks[0].attn
    assert attn.attn_neuron.norm == 2.0 and attn.q_neuron.norm == 4.0 and attn.scale == 0.25
    block = model.stage3[1].blocks[0]
    assert torch.equal(block.layer_scale1, torch.full((16,), 1e-6))
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3) and model.T == 1


def test_ie_lif_rounds_ties_up_like_the_official_floor():
    x = torch.tensor([[0.125, 0.375, 0.625]])  # 4x = 0.5, 1.5, 2.5: exact ties
    assert MultiSpike(v_threshold=0.25, round_half_up=True)(x).tolist() == [[0.25, 0.5, 0.75]]
    assert MultiSpike(v_threshold=0.25)(x).tolist() == [[0.0, 0.5, 0.5]]  # torch.round: to even


def test_a_swapped_neuron_reaches_every_site():
    model = create_model("qsd_8_15m_cifar", neuron=neuron_factory("LIF", T=2), T=2, **TINY)
    assert all(type(n) is LIF for _, n in neurons_of(model))


def test_lsq_weight_levels_gradients_and_step_size_scale():
    torch.manual_seed(0)
    w = torch.randn(3, 5, requires_grad=True)
    alpha = torch.tensor([0.1, 0.2, 0.5], requires_grad=True)
    wq = lsq_weight(w, alpha, 4)
    levels = wq / alpha[:, None]
    assert torch.equal(levels, levels.round()) and levels.min() >= -8 and levels.max() <= 7
    torch.testing.assert_close(wq, torch.round(torch.clamp(w / alpha[:, None], -8, 7)) * alpha[:, None])
    wq.sum().backward()
    inside = ((w / alpha[:, None]) >= -8) & ((w / alpha[:, None]) <= 7)
    assert torch.equal(w.grad, inside.float())  # straight through inside the range, 0 outside
    g = 1 / math.sqrt(w.numel() * 7)
    q = w.detach() / alpha.detach()[:, None]
    expected = (torch.where(inside, q.round() - q, q.clamp(-8, 7))).sum(1) * g
    torch.testing.assert_close(alpha.grad, expected)


def test_step_size_is_set_from_the_weights_at_the_first_training_forward():
    layer = QuantLinear(4, 2)
    with torch.no_grad():
        layer.weight.mul_(10)  # changed (or loaded) after construction
    layer.eval()(torch.ones(1, 4))
    assert layer.init_state.item() == 0
    layer.train()(torch.ones(1, 4))
    expected = 2 * layer.weight.abs().mean() / math.sqrt(7)
    assert layer.init_state.item() == 1 and torch.allclose(layer.alpha, expected.expand(2))
    with torch.no_grad():
        layer.weight.mul_(2)
    layer(torch.ones(1, 4))
    assert torch.allclose(layer.alpha, expected.expand(2))  # only once


def test_quantize_weights_keeps_names_and_many_bits_approach_full_precision():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(64, 3))
    x = torch.randn(2, 2, 4, 4)
    ref = net(x)
    keys = set(net.state_dict())
    errors = {}
    for bits in (4, 16):
        quantized = quantize_weights(copy.deepcopy(net), bits)
        assert set(quantized.state_dict()) == keys | {"0.alpha", "0.init_state", "2.alpha",
                                                      "2.init_state"}
        errors[bits] = (quantized(x) - ref).abs().max().item()
    assert errors[16] < 1e-2 and errors[16] < errors[4] / 30
    with pytest.raises(ValueError, match="weight bits"):
        QuantLinear(2, 2, weight_bits=1)


def test_quick_preset_fits_the_strides_to_digits():  # its training: test_model_contract.py
    name = quick_model_name("params/qsd/cifar10.yaml")
    assert create_model(name, **QUICK).strides == (1, 1, 2, 2, 1)


@pytest.mark.parametrize("path, name", [("params/qsd/cifar10.yaml", "qsd_8_15m_cifar"),
                                        ("params/qsd/imagenet.yaml", "qsd_8_15m")])
def test_params_files_load(path, name):
    check_params_file(path, name)


def test_energy_counts_the_quantized_weights_as_weights_not_inputs():
    from stlib.analysis.energy import energy_report

    class TwoLayers(nn.Module):  # an analog first layer, then a layer fed with spikes
        T = 1

        def __init__(self):
            super().__init__()
            self.first, self.second = QuantLinear(8, 8), QuantLinear(8, 4)

        def forward(self, x):
            return self.second((self.first(x) > 0).float())

    torch.manual_seed(0)
    model = TwoLayers()
    x = torch.randn(16, 8)
    spikes = (model.first(x) > 0).float()
    report = energy_report(model, x)
    second = report["layers"][1]
    # the quantized weight is computed in the forward: it must not count as an input
    assert second["input_kind"] == "spikes" and second["input_rate"] == pytest.approx(spikes.mean().item())
    assert report["mac_first_layer"] == 8 * 8
