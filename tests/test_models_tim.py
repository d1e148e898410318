"""TIM (Spikformer-2-256 DVS + Temporal Interaction Module): counts, TIM recurrence, contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import meta_model, QUICK, count, meta_count, threshold
from stlib.layers import ATTENTIONS
from stlib.layers.tim import TemporalInteraction, TIMSSA
from stlib.models import create_model
from stlib.models.tim import TIMSpikformer
from stlib.neurons import neuron_factory
from stlib.params import load_params

#: 8x8 two-channel frames (the four DVS pools shrink to the last two: 2x2 = 4 tokens)
TINY = dict(img_size=8, in_chans=2, num_classes=3, T=3, embed_dim=16, depth=1, num_heads=2)


@pytest.mark.parametrize("num_classes, expected", [(10, 2_568_746), (101, 2_592_133)])
def test_dvs_parameter_count_matches_the_official_code_without_unused_layernorms(num_classes, expected):
    # official 2,570,794 / 2,594,181 minus the 2 x 1,024 never-used LayerNorm parameters
    assert meta_count("tim_spikformer_2_256_dvs", num_classes=num_classes) == expected


def test_dvs_parameter_breakdown_and_wiring():
    model = meta_model("tim_spikformer_2_256_dvs")
    attn = model.blocks[0].attn
    assert count(model.patch_embed) == 978_944 and model.patch_embed.num_patches == 16
    assert count(model.blocks[0]) == 794_640 - 1_024
    assert count(attn.tim) == 1_296 and attn.tim.interactor.kernel_size == (5,)
    assert attn.scale == 0.25 and attn.tim.alpha == 0.5
    assert threshold(attn.attn_neuron) == 0.5
    assert threshold(attn.tim.in_neuron) == pytest.approx(0.3) and threshold(attn.tim.out_neuron) == 0.5
    assert all(m.bias is None for m in (attn.q.linear, attn.k.linear, attn.v.linear, attn.proj.linear))
    assert model.T == 10 and model.img_size == 64 and model.in_chans == 2


def test_init_follows_the_official_code():
    # only the head Linear is trunc_normal(0.02); the token layers keep PyTorch's default
    # kaiming-uniform (the official Conv1d), std 1/sqrt(3 * fan_in) = 0.072 at fan_in 64
    model = create_model("tim_spikformer_2_256_dvs", embed_dim=64, num_heads=4, T=2)
    assert model.head.fc.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert model.blocks[0].mlp.fc1.linear.weight.std().item() == pytest.approx(0.072, rel=0.1)
    assert model.blocks[0].attn.q.linear.weight.std().item() == pytest.approx(0.072, rel=0.1)


def test_tim_is_registered_as_an_attention():
    assert ATTENTIONS.get("ssa_tim") is TIMSSA


def test_tim_keeps_the_first_query_and_mixes_later_ones():
    tim = TemporalInteraction(4, neuron=neuron_factory("LIF", T=3), alpha=0.5)
    q = (torch.rand(3, 2, 2, 4, 8) > 0.5).float()
    out = tim(q)
    assert out.shape == q.shape and torch.equal(out[0], q[0])
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():  # alpha = 0: Q~[t] = SN_out(Q[t]): the history is ignored
        tim.alpha = 0.0
        tim.interactor.weight.fill_(100.0)
        lone = tim(q)
    assert torch.equal(lone[1], (q[1] >= 0.5).float())


def test_dvs_forward_on_event_frames():
    model = create_model("tim_spikformer_2_256_dvs", embed_dim=32, num_heads=2, T=2)
    frames = torch.rand(2, 2, 2, 64, 64)  # [T, B, 2, 64, 64]
    assert model(frames).shape == (2, 10)


def test_untransposed_head_split_option():
    model = create_model("tim_spikformer_2_256_dvs", embed_dim=64, num_heads=4, T=2,
                         untransposed_head_split=True)
    assert model(torch.rand(2, 1, 2, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="N == D / heads"):
        create_model("tim_spikformer_2_256_dvs", embed_dim=64, num_heads=2, untransposed_head_split=True)


def test_quick_preset_builds_with_the_last_two_pools():  # its training: test_model_contract.py
    model = create_model("tim_spikformer_2_256_dvs", **QUICK)
    assert model.pool_stages == (False, False, True, True)  # 8 -> 2: 4 tokens
    assert model.blocks[0].attn.tim.num_tokens == 4


def test_bad_inputs_are_named():
    model = TIMSpikformer(**TINY)
    with pytest.raises(ValueError, match="2 time steps.*T=3"):
        model(torch.rand(2, 3, 2, 8, 8))


def test_params_file_loads_when_the_dvs_dataset_is_registered():
    try:
        config = load_params("params/tim/cifar10_dvs.yaml")
    except ValueError as err:  # ConfigError / UnknownNameError naming the dataset
        if "cifar10_dvs" in str(err):
            pytest.skip(f"the CIFAR10-DVS dataset is not registered yet: {err}")
        raise
    assert config.model.name == "tim_spikformer_2_256_dvs" and config.model.T == 10
    assert config.data.img_size == 64 and config.train.lr == pytest.approx(5e-3 * 16 / 1024)
