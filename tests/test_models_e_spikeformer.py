"""E-SpikeFormer (SDT v3): counts, the MultiSpike neuron at every site, the linear attention,
the conv mixer of the transformer blocks, params files. Shared tests: test_model_contract.py;
official layout: test_official_weights.py (fixture e_spikeformer_s)."""
from __future__ import annotations

import pytest
import torch

from _zoo import QUICK, REPO, check_params_file, meta_count, quick_model_name, threshold
from stlib.layers.spike_driven import LinearSDSA
from stlib.models import create_model
from stlib.models.e_spikeformer import TokenSepConv
from stlib.neurons import LIF, MultiSpike, neuron_factory, neurons_of

TINY = dict(img_size=8, in_chans=1, embed_dim=16, last_dim=24, depth=4, num_heads=2,
            num_classes=3, strides=(1, 1, 2, 2, 1))


# BICLab/Spike-Driven-Transformer-V3 Model_Base/models.py, 1000 classes, counted by building the
# official Efficient_Spiking_Transformer_{t,s,m,l}; the README's "5.1M / 10M / 19M"
@pytest.mark.parametrize("name, expected", [
    ("e_spikeformer_t", 2_702_048), ("e_spikeformer_s", 5_105_608),
    ("e_spikeformer_m", 10_023_112), ("e_spikeformer_l", 18_987_504)])
def test_parameter_counts_match_the_official_code(name, expected):
    assert meta_count(name) == expected


def test_cifar_variant_count():
    # strides change no weight; the head is 192 x 10 (+10) instead of 192 x 1000 (+1000)
    assert meta_count("e_spikeformer_s_cifar") == 5_105_608 - 193 * 990 == 4_914_538


def test_default_is_t1_multispike_everywhere_with_a_counting_head():
    model = create_model("e_spikeformer_s_cifar", **TINY)
    assert model.T == 1
    found = neurons_of(model)
    assert found and all(type(n) is MultiSpike for _, n in found)
    assert {n.norm for p, n in found if p != "head.neuron"} == {4.0}
    assert model.head.neuron.norm == 1.0  # official MultiSpike(Norm=1): counts 0..4 into the Linear
    x = torch.rand(2, 1, 8, 8)
    assert model(x).shape == (2, 3)
    assert isinstance(model.stage3[1].blocks[0].conv, TokenSepConv)


def test_a_swapped_neuron_reaches_every_site_including_the_head():
    model = create_model("e_spikeformer_s_cifar", neuron=neuron_factory("LIF", T=2), T=2, **TINY)
    assert all(type(n) is LIF for _, n in neurons_of(model))
    assert threshold(model.stage3[1].blocks[0].attn.attn_neuron) == 1.0  # no 0.5 attention site


def test_linear_sdsa_maths_widths_and_scale():
    torch.manual_seed(0)
    dim, heads = 8, 2
    attn = LinearSDSA(dim, num_heads=heads, neuron=neuron_factory("MultiSpike"),
                      scale=2 * (dim // heads) ** -0.5).eval()
    assert attn.v.linear.weight.shape == (4 * dim, dim) and attn.proj.linear.weight.shape == (dim, 4 * dim)
    assert attn.q.linear.bias is None and attn.proj.linear.bias is None
    seen = {}
    attn.attn_neuron.register_forward_hook(lambda m, i, o: seen.update(inp=i[0]))
    x = torch.randn(1, 2, 9, dim) * 3
    assert attn(x).shape == (1, 2, 9, dim)
    s = attn.shortcut_neuron(x)
    q, k, v = (attn.heads(n(p(s))) for n, p in
               [(attn.q_neuron, attn.q), (attn.k_neuron, attn.k), (attn.v_neuron, attn.v)])
    assert v.shape == (1, 2, heads, 9, 4 * dim // heads)
    assert attn.scale == 1.0  # 2 / sqrt(8 / 2)
    torch.testing.assert_close(seen["inp"], attn.merge((q @ k.transpose(-2, -1)) @ v) * 1.0)


def test_each_stage_scale_follows_its_own_width():
    model = create_model("e_spikeformer_s_cifar", **TINY)  # c2 = 16, c3 = 24, 2 heads
    assert model.stage3[1].blocks[0].attn.scale == pytest.approx(2 / 8 ** 0.5)
    assert model.stage4[1].blocks[0].attn.scale == pytest.approx(2 / 12 ** 0.5)
    assert create_model("e_spikeformer_s_cifar", attn_scale=0.3, **TINY).stage4[1].blocks[0].attn.scale == 0.3


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="not divisible"):
        create_model("e_spikeformer_s_cifar", **{**TINY, "img_size": 10})
    with pytest.raises(Exception, match="'head_spike'.*valid: .*head_lif"):
        create_model("e_spikeformer_s", head_spike=True)


def test_quick_preset_fits_the_strides_to_digits():  # its training: test_model_contract.py
    name = quick_model_name("params/e_spikeformer/cifar10.yaml")
    assert create_model(name, **QUICK).strides == (1, 1, 2, 2, 1)


@pytest.mark.parametrize("path, name", [("params/e_spikeformer/cifar10.yaml", "e_spikeformer_s_cifar"),
                                        ("params/e_spikeformer/imagenet.yaml", "e_spikeformer_s")])
def test_params_files_load(path, name):
    check_params_file(path, name)


def test_the_params_file_builds_multispike_and_a_changed_reset_setting_is_refused():
    from stlib.build import build_model
    from stlib.data import build_dataloaders
    from stlib.params import load_params

    path = "params/e_spikeformer/cifar10.yaml"
    config = load_params(REPO / path, preset="quick")
    assert config.neuron.detach_reset is True  # inherited from SDT's recipe, dropped for MultiSpike
    model = build_model(config, build_dataloaders(config.data, seed=0))
    assert {type(n) for _, n in neurons_of(model)} == {MultiSpike}
    config = load_params(REPO / path, preset="quick", overrides=["neuron.detach_reset=false"])
    with pytest.raises(ValueError, match="no setting 'detach_reset'; valid: alpha, max_spikes"):
        build_model(config, build_dataloaders(config.data, seed=0))
