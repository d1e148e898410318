"""Spikformer's ImageNet and DVS configs (counts, pooling, bias, attention by name), plus the
helpers the Spikingformer / SDT / SDT v2 test files import from here (``meta_count``,
``quick_model_name``, ``check_params_file``); the zoo-wide contract helpers come from
tests/test_models_qkformer.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _zoo import (QUICK, threshold, assert_quick_preset_trains, meta_count,
                  check_params_file)
from stlib.layers.grid import fit_pools, fit_strides
from stlib.models import create_model

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- Spikformer
TINY_224 = dict(embed_dim=16, depth=1, num_heads=2, num_classes=3, T=1)


@pytest.mark.parametrize("name, expected", [
    ("spikformer_8_384", 16_816_024),  # official 16,828,312 minus 12,288 unused LayerNorm
    ("spikformer_8_768", 66_338_632),  # official 66,363,208 minus 24,576 unused LayerNorm
    ("spikformer_dvs_2_256", 2_566_666),  # official 2,585,610 minus pos_embed and LayerNorms
])
def test_spikformer_imagenet_and_dvs_parameter_counts(name, expected):
    assert meta_count(name) == expected


def test_spikformer_imagenet_pools_after_every_stage_and_drops_qkv_bias():
    model = create_model("spikformer_8_384", **TINY_224)
    attn = model.blocks[0].attn
    assert attn.q.linear.bias is None and attn.proj.linear.bias is not None
    assert model.patch_embed(torch.rand(1, 1, 3, 224, 224)).shape == (1, 1, 196, 16)  # 14x14


def test_spikformer_dvs_wiring():
    model = create_model("spikformer_dvs_2_256", embed_dim=32, depth=1, T=2)
    attn = model.blocks[0].attn
    assert attn.scale == 0.25 and attn.num_heads == 16 and attn.k.linear.bias is None
    assert threshold(attn.attn_neuron) == 0.5
    frames = (torch.rand(2, 1, 2, 128, 128) > 0.8).float()  # [T, B, polarity, H, W]
    assert model.patch_embed(frames).shape == (2, 1, 64, 32)  # 128 -> 8x8 tokens
    assert model(frames).shape == (1, 10)


def test_spikformer_takes_attention_by_name_and_passes_its_extras():
    model = create_model("spikformer_4_384", attn="statten", attn_kwargs={"chunk_size": 4},
                         T=4, img_size=8, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    assert type(model.blocks[0].attn).__name__ == "STAtten"
    assert model.blocks[0].attn.chunk_size == 4
    with pytest.raises(Exception, match="sdsa"):
        create_model("spikformer_4_384", attn="sdsaa")


def test_spikformer_imagenet_config_under_the_quick_kwargs_trains():
    model = create_model("spikformer_8_768", **QUICK)
    assert model.pool_stages == (False, False, True, True)  # 8 -> 2: the last two pools kept
    assert_quick_preset_trains("spikformer_8_768")


def test_small_images_keep_the_last_poolings_and_official_sizes_keep_all():
    assert fit_pools(224, (True,) * 4) == (True,) * 4
    assert fit_pools(128, (True,) * 4) == (True,) * 4
    assert fit_pools(8, (True,) * 4) == (False, False, True, True)
    assert fit_pools(32, (False, False, True, True)) == (False, False, True, True)
    assert fit_pools(10, (False, False, True, True)) == (False, False, True, True)  # left to SPS
    assert fit_strides(8, (2, 2, 2, 2, 1)) == (1, 1, 2, 2, 1)
    assert fit_strides(224, (2, 2, 2, 2, 1)) == (2, 2, 2, 2, 1)


@pytest.mark.parametrize("path, name", [
    ("params/spikformer/imagenet.yaml", "spikformer_8_768"),
    ("params/spikformer/cifar10_dvs.yaml", "spikformer_dvs_2_256"),
])
def test_spikformer_params_files_load(path, name):
    check_params_file(path, name)
