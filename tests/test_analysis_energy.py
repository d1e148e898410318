"""stlib.analysis.energy: the papers' energy convention, checked on a hand-computed network."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stlib.analysis.energy import E_AC_PJ, E_MAC_PJ, energy_report, energy_table, time_steps
from stlib.analysis.firing import calibrate_batchnorm
from stlib.encoders import InputEncoder
from stlib.models import create_model, list_models
from stlib.models._registry import model_class

TINY = dict(img_size=32, embed_dim=64, depth=1, num_heads=4, T=2, num_classes=3)


class Step(nn.Module):
    """A stand-in neuron: spike where the input is positive."""

    def forward(self, x):
        return (x > 0).float()


class SpikeProduct(nn.Module):
    """A spike-spike product like SSA's ``Q K^T``: ``s [T, B, N, D] @ s^T -> [T, B, N, N]``."""

    def forward(self, s):
        return s @ s.transpose(-2, -1)


class HandNet(nn.Module):
    """``x [T, B, 1, 4, 4]`` -> Conv3x3 (1 -> 2, padding 1) -> Step -> tokens [T, B, 2, 16]
    -> Linear(32 -> 3) on the flattened spikes, plus a spike-spike product of the tokens."""

    def __init__(self, T: int = 2):
        super().__init__()
        self.T = T
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():  # channel 0 copies the pixel (> 0: fires), channel 1 negates it
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1, 1] = 1.0
            self.conv.weight[1, 0, 1, 1] = -1.0
        self.sn = Step()
        self.attn = SpikeProduct()
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        T, B = x.shape[:2]
        s = self.sn(self.conv(x.flatten(0, 1))).reshape(T, B, 2, 16)  # rate exactly 1/2
        a = self.attn(s)  # [T, B, 2, 2]
        return self.fc(s.flatten(2)).mean(0) + a.sum((0, 2, 3))[:, None]


def test_hand_computed_network():
    T, B = 2, 3
    x = (torch.rand(B, 1, 4, 4) * 0.9 + 0.1).unsqueeze(0).repeat(T, 1, 1, 1, 1)  # direct, > 0
    report = energy_report(HandNet(T), x)
    # first layer: 3*3 kernel * 4*4 outputs * 1 in * 2 out = 288 MACs, once per image (not T)
    assert report["mac_first_layer"] == 288
    # Linear 32 -> 3 on spikes at rate 1/2: FL 96, SOPs 0.5 * T * 96 = 96
    # spike product [2, 16] @ [16, 2]: FL 2*16*2 = 64, SOPs 0.5 * T * 64 = 64
    assert report["sops"] == pytest.approx(96 + 64)
    expected_pj = 4.6 * 288 + 0.9 * (96 + 64)  # 1468.8 pJ
    assert report["energy_mj"] == pytest.approx(expected_pj * 1e-9)
    assert report["flops"] == 288 + 96 + 64 and report["T"] == T and report["images"] == B
    assert report["ann_energy_mj"] == pytest.approx(4.6 * (288 + 96 + 64) * 1e-9)
    rows = {r["name"]: r for r in report["layers"]}
    assert rows["conv"]["type"] == "Conv2d" and rows["conv"]["input_kind"] == "analog"
    assert rows["fc"]["type"] == "Linear" and rows["fc"]["input_rate"] == pytest.approx(0.5)
    assert rows["attn"]["type"] == "SpikeProduct" and rows["attn"]["flops"] == 64
    assert rows["attn"]["input_kind"] == "spikes"
    assert report["first_layer"] == "conv"
    table = energy_table(report)
    assert table["energy_pj"].iloc[-1] == pytest.approx(expected_pj)
    assert table["energy_pj"].iloc[:-1].sum() == pytest.approx(expected_pj)


def test_spike_input_to_the_first_layer_is_counted_as_sops():
    T, B = 2, 1
    x = (torch.rand(T, B, 1, 4, 4) > 0.5).float()  # rate-encoded: already spikes
    report = energy_report(HandNet(T), x)
    assert report["mac_first_layer"] == 0
    rate = x.mean().item()
    conv = next(r for r in report["layers"] if r["name"] == "conv")
    assert conv["input_kind"] == "spikes"
    assert conv["sops"] == pytest.approx(rate * T * 288)


def test_constants_and_formula_are_the_papers():
    assert (E_MAC_PJ, E_AC_PJ) == (4.6, 0.9)
    doc = inspect.getmodule(energy_report).__doc__
    assert "E_MAC = 4.6 pJ" in doc and "SOP_l = fr_l * T * FL_l" in doc


def test_operation_count_matches_torch_flop_counter():
    torch.manual_seed(0)
    net = create_model("spikformer_4_384", **TINY)
    model = nn.Sequential(InputEncoder("direct", 2, (0.5,) * 3, (0.25,) * 3), net)
    x = torch.rand(2, 3, 32, 32)
    report = energy_report(model, x)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    # torch counts 2 FLOPs per MAC over the whole batch and every step (the first layer T
    # times, which the convention counts once: per step both agree)
    assert report["flops"] == counter.get_total_flops() / 2 / 2 / 2
    ssa = [r for r in report["layers"] if r["type"] == "SSA"]
    assert len(ssa) == 1 and ssa[0]["flops"] == 2 * 64 ** 2 * 64  # Q K^T and (Q K^T) V: 2 N^2 D
    assert report["first_layer"] == "1.patch_embed.stages.0.conv"
    assert report["mac_first_layer"] == 3 * 3 * 32 * 32 * 3 * 8  # k^2 H W C_in C_out, D/8 = 8


def test_time_steps_are_found_or_refused():
    assert time_steps(HandNet(3)) == 3
    with pytest.raises(ValueError, match="time steps"):
        time_steps(nn.Linear(2, 2))


def test_firing_makes_energy_grow():
    torch.manual_seed(0)
    net = create_model("spikformer_4_384", **TINY)
    x = torch.rand(4, 3, 32, 32)
    silent = energy_report(net, x)  # untrained BatchNorm statistics: almost no spikes
    calibrate_batchnorm(net, [x])
    active = energy_report(net, x)
    assert active["sops"] > 10 * max(silent["sops"], 1.0)
    assert active["energy_mj"] > silent["energy_mj"]
    assert active["mac_first_layer"] == silent["mac_first_layer"]
    assert active["energy_mj"] < active["ann_energy_mj"]  # sparse spikes beat dense MACs here


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_an_energy(name):
    default = inspect.signature(model_class(name).__init__).parameters.get("in_chans")
    if default is not None and default.default not in (1, 3):
        pytest.skip(f"{name} takes event input")
    torch.manual_seed(0)
    net = create_model(name, **TINY)
    if getattr(net, "in_chans", 3) not in (1, 3):
        pytest.skip(f"{name} takes event input")
    x = torch.rand(2, net.in_chans, 32, 32)
    report = energy_report(net, x)
    assert report["mac_first_layer"] > 0 and report["flops"] > report["mac_first_layer"]
    assert 0 < report["energy_mj"] < float("inf")
    rates = [r["input_rate"] for r in report["layers"] if r["input_rate"] is not None]
    assert rates and all(0.0 <= r <= 1.0 for r in rates)
    types = {r["type"] for r in report["layers"]}  # QSD's are QuantConv2d / QuantLinear
    assert any(t.endswith(("Conv2d", "Conv1d", "Linear")) for t in types)


@pytest.mark.slow
def test_spikformer_4_384_on_cifar_input():
    torch.manual_seed(0)
    net = create_model("spikformer_4_384")
    report = energy_report(net, torch.rand(1, 3, 32, 32))
    # per step: SPS convs 3->48->96->192->384 (+ RPE) on 32, 32, 16, 8 and 8x8 maps, then
    # 4 blocks of q, k, v, proj (N D^2 each), 2 N^2 D attention, MLP 2 * 4 N D^2, head
    N, D = 64, 384
    sps = 9 * (3 * 48 * 32 * 32 + 48 * 96 * 32 * 32 + 96 * 192 * 32 * 32 + 192 * 384 * 16 * 16
               + 384 * 384 * 8 * 8)
    blocks = 4 * (4 * N * D * D + 2 * N * N * D + 8 * N * D * D)
    assert report["flops"] == sps + blocks + D * 10
