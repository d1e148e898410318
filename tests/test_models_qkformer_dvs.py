"""QKFormer on event frames (``qkformer_dvs_2_256``): exact counts, the x8 pyramid embedding,
two stages, gradients everywhere, the quick preset, and its params files."""
from __future__ import annotations

import pytest
import torch

from _zoo import meta_model, QUICK, count, assert_every_parameter_learns
from stlib.layers.qk_attention import QKTokenAttention
from stlib.models import create_model
from stlib.models.qkformer import PyramidSPEDS, QKFormer
from stlib.params import load_params

#: tiny event model: 2-channel frames, stages 8/16 wide
TINY_DVS = dict(img_size=32, in_chans=2, num_classes=3, T=2, embed_dim=16, num_heads=2)


@pytest.mark.parametrize("overrides, expected", [
    (dict(), 1_504_138),  # CIFAR10-DVS: 10 classes, mlp_ratio 1
    (dict(num_classes=11, mlp_ratio=4.0), 1_999_371),  # DVS128 Gesture
])
def test_parameter_counts_match_the_official_code(overrides, expected):
    model = meta_model("qkformer_dvs_2_256", **overrides)
    assert count(model) == expected


def test_cifar10_dvs_breakdown_and_layout():
    model = meta_model("qkformer_dvs_2_256")
    assert [count(m) for m in model.patch_embeds] == [101_888, 919_040]
    assert [count(m) for m in model.stages] == [83_584, 397_056]
    assert isinstance(model.patch_embeds[0], PyramidSPEDS)
    assert isinstance(model.stages[0][0].attn, QKTokenAttention)
    assert type(model.stages[1][0].attn).__name__ == "SSA"
    assert model.stages[1][0].attn.num_heads == 16 and model.stages[0][0].attn.num_heads == 16


def test_pyramid_embedding_downsamples_by_8_then_by_2():
    model = create_model("qkformer_dvs_2_256", **TINY_DVS).eval()
    x = torch.rand(2, 1, 2, 32, 32)
    first = model.patch_embeds[0](x)
    assert first.shape == (2, 1, 8, 4, 4)  # 32 / 8, width D/2
    assert set(first.unique().tolist()) <= {0.0, 1.0, 2.0}  # spike + shortcut spike
    assert model.forward_features(x).shape == (2, 1, 4, 16)  # 2x2 tokens, width D


def test_forward_shape_and_every_parameter_gets_a_gradient():
    model = create_model("qkformer_dvs_2_256", **TINY_DVS)
    x = (torch.rand(2, 1, 2, 32, 32) < 0.3).float() * 2  # event counts
    assert_every_parameter_learns(model, x, 3)
    per_step = create_model("qkformer_dvs_2_256", per_step_logits=True, **TINY_DVS)
    assert per_step(x).shape == (2, 1, 3)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="early_depths.*2 stage"):
        QKFormer(early_depths=(1,))
    with pytest.raises(ValueError, match="divisible by 2 \\* num_heads"):
        QKFormer(embedding="dvs", early_depths=(1,), embed_dim=36, num_heads=4)
    with pytest.raises(ValueError, match="divisible by 8"):
        QKFormer(embedding="dvs", early_depths=(1,), embed_dim=24, num_heads=4)


def test_quick_preset_builds_on_digits():  # its training: test_model_contract.py
    assert create_model("qkformer_dvs_2_256", **QUICK)(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("dataset, classes, mlp_ratio", [("cifar10_dvs", 10, 1.0),
                                                          ("dvs_gesture", 11, 4.0)])
def test_params_files_give_the_official_recipe(dataset, classes, mlp_ratio):
    config = load_params(f"params/qkformer/{dataset}.yaml")
    assert config.model.name == "qkformer_dvs_2_256" and config.data.name == dataset
    assert config.model.T == 16 and config.data.batch_size == 16
    assert config.train.lr == 5e-3 and config.train.weight_decay == 0.06
    assert config.train.epochs + config.train.cooldown_epochs == 106
    assert config.model.kwargs.get("mlp_ratio", 1.0) == mlp_ratio
