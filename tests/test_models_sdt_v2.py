"""Meta-SpikeFormer (SDT v2): counts, stage shapes, RepConv / SDSA-3, every neuron, quick preset."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _zoo import (QUICK, count, threshold, meta_count, quick_model_name,
                  check_params_file)
from stlib.layers.spike_driven import SDSA3, BNAndPad, RepConv, RepConvBN
from stlib.models import create_model
from stlib.neurons import neuron_factory

# depth 4 -> 3 blocks in stage 3 and 1 in stage 4, so both transformer stages are exercised
TINY = dict(img_size=8, in_chans=1, embed_dim=16, last_dim=24, depth=4, num_heads=2, T=2,
            num_classes=3, strides=(1, 1, 2, 2, 1))


@pytest.mark.parametrize("name, expected", [
    ("sdt_v2_15m", 15_112_208), ("sdt_v2_31m", 31_333_864), ("sdt_v2_55m", 55_350_248)])
def test_parameter_counts_match_the_official_code(name, expected):
    assert meta_count(name) == expected  # 1000 classes, no --kd head


def test_cifar_variant_count_and_imagenet_8_384_at_10_classes():
    assert meta_count("sdt_v2_31m", num_classes=10) == 30_857_674  # reference section 4
    assert meta_count("sdt_v2_15m_cifar") == 14_754_818


def test_stage_shapes_follow_the_imagenet_strides():
    model = create_model("sdt_v2_31m", embed_dim=32, last_dim=40, depth=4, num_heads=2,
                         num_classes=5, T=1, img_size=64)
    x = model.to_sequence(torch.rand(1, 3, 64, 64))
    shapes = []
    for stage in (model.stage1, model.stage2, model.stage3, model.stage4):
        x = stage(x)
        shapes.append(tuple(x.shape[2:]))
    assert shapes == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (40, 4, 4)]  # /4, /8, /16, /16
    assert model.head(x).shape == (1, 5)
    assert model.cam_target_layer() is model.stage4


def test_cifar_variant_keeps_an_8x8_token_grid():
    model = create_model("sdt_v2_15m_cifar", embed_dim=32, last_dim=40, depth=4, num_heads=2, T=1)
    assert model.strides == (1, 1, 2, 2, 1)
    x = model.stage2(model.stage1(model.to_sequence(torch.rand(1, 3, 32, 32))))
    assert tuple(model.stage3(x).shape) == (1, 1, 32, 8, 8)


def test_rep_conv_parameter_counts():
    d = 12
    assert count(RepConv(d, d)) == 2 * d * d + 13 * d
    assert count(RepConvBN(d)) == 2 * d * d + 15 * d  # the official Sequential(RepConv, BN)


def test_bn_and_pad_equals_bn_of_a_zero_padded_input_in_eval():
    torch.manual_seed(0)
    layer = BNAndPad(4, pad=1)
    layer.bn.running_mean.uniform_(-1, 1)
    layer.bn.running_var.uniform_(0.5, 2)
    layer.bn.weight.data.uniform_(0.5, 2)
    layer.bn.bias.data.uniform_(-1, 1)
    layer.eval()
    x = torch.randn(2, 4, 5, 5)
    out = layer(x)
    assert out.shape == (2, 4, 7, 7)
    torch.testing.assert_close(out, layer.bn(F.pad(x, [1] * 4)))


def test_sdsa_3_maths_and_threshold():
    torch.manual_seed(0)
    attn = SDSA3(8, num_heads=2, neuron=neuron_factory("LIF", T=2, detach_reset=True)).eval()
    assert threshold(attn.attn_neuron) == 0.5 and attn.scale == 0.125
    seen = {}
    attn.attn_neuron.register_forward_hook(lambda m, i, o: seen.update(inp=i[0]))
    x = torch.randn(2, 1, 9, 8) * 3  # a 3x3 token grid
    assert attn(x).shape == (2, 1, 9, 8)
    from stlib.layers.grid import grid_to_tokens, tokens_to_grid
    s = tokens_to_grid(attn.shortcut_neuron(x))
    q, k, v = (attn.heads(n(grid_to_tokens(conv(s)))) for n, conv in
               [(attn.q_neuron, attn.q), (attn.k_neuron, attn.k), (attn.v_neuron, attn.v)])
    torch.testing.assert_close(seen["inp"], attn.merge(q @ (k.transpose(-2, -1) @ v)) * 0.125)
    with pytest.raises(ValueError, match="square grid"):
        attn(torch.randn(2, 1, 6, 8))


def test_head_neuron_follows_the_paper_and_the_code_quirk_is_an_option():
    spiking = create_model("sdt_v2_15m_cifar", **TINY)
    official = create_model("sdt_v2_15m_cifar", head_lif=False, **TINY)
    assert threshold(spiking.head.neuron) == 1.0
    assert isinstance(official.head.neuron, torch.nn.Identity)
    assert count(spiking) == count(official)
    seen = {}
    official.head.fc.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    official(torch.rand(2, 2, 1, 8, 8))
    assert not set(seen["x"].unique().tolist()) <= {0.0, 1.0}  # real-valued token mean


def test_bad_inputs_are_named():
    model = create_model("sdt_v2_15m_cifar", **TINY)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        model(torch.rand(2, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="not divisible"):
        create_model("sdt_v2_15m_cifar", **{**TINY, "img_size": 10})


def test_quick_preset_fits_the_strides_to_digits():  # its training: test_model_contract.py
    name = quick_model_name("params/sdt_v2/cifar10.yaml")
    assert create_model(name, **QUICK).strides == (1, 1, 2, 2, 1)  # 8 -> 2x2 tokens


@pytest.mark.parametrize("path, name", [("params/sdt_v2/cifar10.yaml", "sdt_v2_15m_cifar"),
                                        ("params/sdt_v2/imagenet.yaml", "sdt_v2_31m")])
def test_params_files_load(path, name):
    check_params_file(path, name)
