"""stlib.models: registry, Spikformer fidelity (parameter count, thresholds), every neuron."""
from __future__ import annotations

import pytest
import torch

from stlib.models import create_model, list_models
from stlib.models.spikformer import Spikformer
from stlib.neurons import neurons_of
from stlib.registry import UnknownNameError

TINY = dict(img_size=8, in_chans=1, embed_dim=16, depth=1, num_heads=2, T=2,
            pool_stages=(False, False, False, True))


def count(model):
    return sum(p.numel() for p in model.parameters())


def threshold(neuron) -> float:
    return float(torch.as_tensor(neuron.v_threshold).detach())


def test_registry_lists_and_refuses_unknown_names():
    assert "spikformer_4_384" in list_models("spikformer*")
    with pytest.raises(UnknownNameError) as err:
        create_model("spikformer_4_38")
    assert "spikformer_4_384" in str(err.value)


def test_misspelt_model_argument_is_a_clear_error():
    with pytest.raises(UnknownNameError, match="embed_dims.*did you mean 'embed_dim'"):
        create_model("spikformer_4_384", embed_dims=64)


@pytest.mark.parametrize("num_classes, expected", [(10, 9_324_730), (100, 9_359_380)])
def test_spikformer_4_384_parameter_count_matches_the_official_code(num_classes, expected):
    # official: 9,330,874 (10 classes) / 9,365,524 (100) minus 6,144 never-used LayerNorm params
    assert count(create_model("spikformer_4_384", num_classes=num_classes)) == expected


def test_spikformer_other_cifar_sizes():
    assert count(create_model("spikformer_4_256")) == 4_159_274 - 4_096
    assert count(create_model("spikformer_2_384")) == 5_768_122 - 3_072


def test_spikformer_cifar_shapes_follow_the_paper():
    model = create_model("spikformer_4_384", depth=1)
    x = torch.rand(4, 2, 3, 32, 32)
    tokens = model.patch_embed(x)
    assert tokens.shape == (4, 2, 64, 384)  # 8x8 patches of 4x4 pixels
    assert set(tokens.unique().tolist()) <= {0.0, 1.0, 2.0}  # x_feat + RPE spikes
    assert model(x).shape == (2, 10)
    assert model(x[0]).shape == (2, 10)  # [B, C, H, W] is repeated over T (direct encoding)


def test_spikformer_wiring_attention_scale_and_thresholds():
    model = create_model("spikformer_4_384")
    attn = model.blocks[0].attn
    assert attn.scale == 0.125 and attn.num_heads == 12
    assert threshold(attn.attn_neuron) == 0.5
    assert threshold(attn.q_neuron) == 1.0 and attn.q_neuron.detach_reset
    assert type(attn.q_neuron).__name__ == "LIF" and attn.q_neuron.tau == 2.0


def test_bad_inputs_are_named():
    model = Spikformer(**TINY)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        model(torch.rand(2, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="not divisible"):
        Spikformer(img_size=10, in_chans=1, embed_dim=16, depth=1, num_heads=2, T=2)
    with pytest.raises(ValueError, match="T must be a positive"):
        Spikformer(T=0)


def test_per_step_logits_for_tet():
    model = create_model("spikformer_4_384", per_step_logits=True, **TINY)
    assert model(torch.rand(2, 2, 1, 8, 8)).shape == (2, 2, 10)


def test_spikformer_has_the_papers_neurons():
    found = [name for name, _ in neurons_of(create_model("spikformer_4_384", **TINY))]
    assert len(found) == 4 + 1 + 5 + 2  # SPS 4 + RPE + SSA (q, k, v, attn, proj) + MLP 2
