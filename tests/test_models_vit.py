"""ViT baseline (ANN on Spikformer's SPS tokens): count, no neurons, time handling, contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import meta_model, TINY, count
from stlib.models import create_model
from stlib.neurons import neurons_of
from stlib.params import load_params


@pytest.mark.parametrize("num_classes, expected", [(10, 9_303_994), (100, 9_338_644)])
def test_cifar_parameter_count(num_classes, expected):
    model = meta_model("vit_4_384", num_classes=num_classes)
    assert count(model) == expected
    assert count(model.patch_embed) == 2_201_520  # exactly Spikformer-4-384's SPS


def test_same_token_grid_as_spikformer_and_no_neurons():
    vit = create_model("vit_4_384", embed_dim=48, num_heads=4, depth=1)
    snn = create_model("spikformer_4_384", embed_dim=48, num_heads=4, depth=1)
    x = torch.rand(4, 2, 3, 32, 32)
    assert vit.patch_embed(x).shape == snn.patch_embed(x).shape == (4, 2, 64, 48)
    assert neurons_of(vit) == []


def test_images_run_once_and_sequences_average_over_time():
    model = create_model("vit_4_384", **TINY).eval()
    x = torch.rand(3, 1, 8, 8)
    once = model(x)
    assert torch.allclose(model(x.unsqueeze(0).repeat(2, 1, 1, 1, 1)), once, atol=1e-6)
    per_step = create_model("vit_4_384", per_step_logits=True, **TINY).eval()
    assert per_step(x).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    config = load_params(f"params/vit/{dataset}.yaml")
    assert config.model.name == "vit_4_384" and config.data.name == dataset
