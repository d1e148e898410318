"""Spikingformer: exact parameter counts, pre-activation wiring, thresholds, every neuron,
quick preset."""
from __future__ import annotations

import pytest
import torch

from _zoo import threshold, meta_count, check_params_file
from stlib.models import create_model

TINY = dict(img_size=8, in_chans=1, embed_dim=16, depth=1, num_heads=2, T=2, num_classes=3)


@pytest.mark.parametrize("name, kwargs, expected", [
    ("spikingformer_4_384", {}, 9_320_122),  # official 9,326,266 minus 6,144 unused LayerNorm
    ("spikingformer_4_384", dict(num_classes=100, num_heads=8), 9_360_916 - 6_144),
    ("spikingformer_8_768", {}, 66_363_208 - 24_576),
])
def test_parameter_counts_match_the_official_code(name, kwargs, expected):
    assert meta_count(name, **kwargs) == expected


def test_imagenet_config_has_the_official_yml_heads():
    # zhouchenlin2096/Spikingformer imagenet/imagenet.yml: dim 768, num_heads 8 (heads hold no
    # parameters, so the count above cannot tell)
    assert create_model("spikingformer_8_768", depth=1).blocks[0].attn.num_heads == 8


def test_tokenizer_shapes_and_real_valued_residual_stream():
    model = create_model("spikingformer_4_384", depth=1, embed_dim=64, num_heads=4)
    x = torch.rand(4, 2, 3, 32, 32)
    tokens = model.patch_embed(x)
    assert tokens.shape == (4, 2, 64, 64)  # 8x8 tokens
    assert not set(tokens.unique().tolist()) <= {0.0, 1.0, 2.0}  # BN output, not spikes
    assert model(x).shape == (2, 10) and model(x[0]).shape == (2, 10)


def test_every_linear_sees_spikes():
    model = create_model("spikingformer_4_384", **TINY)
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.startswith("head"):
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0]))
    model(torch.rand(2, 2, 1, 8, 8) * 3)
    assert len(seen) == 6  # q, k, v, proj, fc1, fc2
    for name, inp in seen.items():
        assert set(inp.unique().tolist()) <= {0.0, 1.0}, name


def test_wiring_scale_bias_and_thresholds():
    model = create_model("spikingformer_4_384")
    attn = model.blocks[0].attn
    assert attn.scale == 0.125 and attn.num_heads == 12
    assert attn.q.linear.bias is None and attn.proj.linear.bias is not None
    assert threshold(attn.attn_neuron) == 0.5 and threshold(attn.q_neuron) == 1.0
    assert not hasattr(attn, "proj_neuron")  # no output neuron: membrane shortcut
    assert model.cam_target_layer() is model.blocks[-1].mlp.input


@pytest.mark.parametrize("path", ["params/spikingformer/cifar10.yaml",
                                  "params/spikingformer/cifar100.yaml"])
def test_params_files_load(path):
    check_params_file(path, "spikingformer_4_384")
