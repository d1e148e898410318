"""SpikingResformer: exact counts, DSSA firing-rate scaling, size mapping, the model contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import meta_model, TINY, count, meta_count
from stlib.models import create_model
from stlib.models.spikingresformer import DSSA, GWFFN, SpikingResformer
from stlib.neurons import neuron_factory, neurons_of
from stlib.params import load_params


@pytest.mark.parametrize("num_classes, expected", [(10, 10_793_152), (100, 10_827_712)])
def test_cifar_parameter_count_matches_the_official_code(num_classes, expected):
    assert meta_count("spikingresformer_ti_cifar", num_classes=num_classes) == expected


def test_cifar_parameter_breakdown_and_stage_layout():
    model = meta_model("spikingresformer_ti_cifar")
    s1, s2, s3 = model.stages
    assert count(model.prologue) == 1_856
    assert [count(m) for m in s1] == [135_552, 181_376]
    assert count(s2[0]) == 110_976 and [count(m) for m in s2[1:3]] == [332_928, 740_736]
    assert count(s3[0]) == 664_320 and [count(m) for m in s3[1:3]] == [444_672, 2_071_296]
    assert [len(s) for s in model.stages] == [2, 1 + 4, 1 + 6]
    assert [m.num_heads for m in model.modules() if isinstance(m, DSSA)] == [1, 3, 3, 6, 6, 6]
    assert model.head.bias is None
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_cifar_shapes_and_per_step_logits():
    model = create_model("spikingresformer_ti_cifar", embed_dim=96, num_heads=6, depth=1,
                         per_step_logits=True)
    x = torch.rand(4, 2, 3, 32, 32)
    assert model.forward_features(x).shape == (4, 2, 96, 8, 8)
    assert model(x).shape == (4, 2, 10)


def test_dssa_tracks_firing_rates_in_training_and_freezes_them_in_eval():
    torch.manual_seed(0)
    dssa = DSSA(8, num_heads=2, patch_size=2, neuron=neuron_factory("LIF", T=2))
    x = torch.rand(2, 3, 8, 4, 4) * 4
    y = dssa(x)
    assert y.shape == x.shape
    first = dssa.rate_x.clone()
    spikes = dssa.in_neuron(x).reshape(2, 3, 2, 4, 16)
    assert torch.allclose(first, spikes.mean((0, 1, 3, 4), keepdim=True))  # started from batch 1
    dssa(x * 0.5)
    assert not torch.equal(dssa.rate_x, first)  # EMA moved
    dssa.eval()
    frozen = dssa.rate_x.clone()
    dssa(x * 3)
    assert torch.equal(dssa.rate_x, frozen)


def test_gwffn_groups_are_64_channels_wide():
    ffn = GWFFN(64, neuron=neuron_factory("LIF", T=2))
    conv = ffn.conv.body[0]
    assert conv.groups == 4 and conv.in_channels == 256


def test_default_neuron_is_lif_with_atan_and_swaps_keep_the_type():
    model = create_model("spikingresformer_ti_cifar", **TINY)
    found = neurons_of(model)
    assert all(type(n).__name__ == "LIF" and type(n.surrogate).__name__.lower() == "atan"
               and n.surrogate.alpha == 2.0 for _, n in found)
    swapped = create_model("spikingresformer_ti_cifar", neuron=neuron_factory("PLIF", T=2), **TINY)
    assert {type(n).__name__ for _, n in neurons_of(swapped)} == {"PLIF"}


def test_bad_inputs_and_settings_are_named():
    model = SpikingResformer(**TINY)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4.*10"):
        SpikingResformer(img_size=10, in_chans=1, embed_dim=16, num_heads=2, T=2)
    with pytest.raises(ValueError, match="not divisible by its"):
        SpikingResformer(img_size=8, in_chans=1, embed_dim=18, num_heads=4, T=2)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    config = load_params(f"params/spikingresformer/{dataset}.yaml")
    assert config.model.name == "spikingresformer_ti_cifar" and config.train.epochs == 600
    assert config.neuron.surrogate == "atan" and config.neuron.alpha == 2.0


@pytest.mark.parametrize("name, expected", [  # the official factories at 1000 classes
    ("spikingresformer_ti", 11_180_992), ("spikingresformer_s", 17_813_824),
    ("spikingresformer_m", 35_601_472), ("spikingresformer_l", 60_375_680)])
def test_imagenet_parameter_counts_match_the_official_code(name, expected):
    assert meta_count(name) == expected


def test_imagenet_prologue_quarters_the_image_before_the_stages():
    model = meta_model("spikingresformer_ti").eval()  # eval: DSSA's firing rates stay as built
    assert model.prologue_kind == "imagenet" and model.img_size == 224
    with torch.device("meta"):
        tokens = model.forward_features(torch.zeros(4, 1, 3, 224, 224))
    assert tokens.shape == (4, 1, 384, 14, 14)  # 224 -> 56 (conv s2 + pool) -> 28 -> 14
    with pytest.raises(ValueError, match="valid: cifar, imagenet"):
        create_model("spikingresformer_ti", prologue="tiny")
    with pytest.raises(ValueError, match="imagenet prologue.*image size 40"):
        create_model("spikingresformer_ti", img_size=40)
