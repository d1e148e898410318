"""ViT baseline (ANN on Spikformer's SPS tokens): count, no neurons, time handling, contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import TINY, count, assert_every_parameter_learns, assert_quick_preset_learns
from stlib.models import create_model
from stlib.models.vit import ViT
from stlib.neurons import NEURONS, neurons_of
from stlib.params import load_params


@pytest.mark.parametrize("num_classes, expected", [(10, 9_303_994), (100, 9_338_644)])
def test_cifar_parameter_count(num_classes, expected):
    with torch.device("meta"):
        model = create_model("vit_4_384", num_classes=num_classes)
    assert count(model) == expected
    assert count(model.patch_embed) == 2_201_520  # exactly Spikformer-4-384's SPS


def test_same_token_grid_as_spikformer_and_no_neurons():
    vit = create_model("vit_4_384", embed_dim=48, num_heads=4, depth=1)
    snn = create_model("spikformer_4_384", embed_dim=48, num_heads=4, depth=1)
    x = torch.rand(4, 2, 3, 32, 32)
    assert vit.patch_embed(x).shape == snn.patch_embed(x).shape == (4, 2, 64, 48)
    assert neurons_of(vit) == []


@pytest.mark.parametrize("name", NEURONS.names())
def test_neuron_is_accepted_and_ignored(name):
    torch.manual_seed(0)
    plain = create_model("vit_4_384", **TINY)
    torch.manual_seed(0)
    model = create_model("vit_4_384", neuron=name, **TINY)
    assert neurons_of(model) == [] and count(model) == count(plain)
    assert_every_parameter_learns(model, torch.rand(2, 2, 1, 8, 8), classes=3)


def test_images_run_once_and_sequences_average_over_time():
    model = create_model("vit_4_384", **TINY).eval()
    x = torch.rand(3, 1, 8, 8)
    once = model(x)
    assert torch.allclose(model(x.unsqueeze(0).repeat(2, 1, 1, 1, 1)), once, atol=1e-6)
    per_step = create_model("vit_4_384", per_step_logits=True, **TINY).eval()
    assert per_step(x).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))


def test_cam_target_is_the_last_mlp_input():
    model = ViT(**TINY)
    assert model.cam_target_layer() is model.blocks[-1].mlp[0]


def test_quick_preset_builds_and_trains_on_digits():
    assert_quick_preset_learns("vit_4_384")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    config = load_params(f"params/vit/{dataset}.yaml")
    assert config.model.name == "vit_4_384" and config.data.name == dataset
