"""QKFormer: exact parameter counts, SPEDS shapes, Q-K token attention, the model contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import meta_model, QUICK, TINY, count, threshold, assert_every_parameter_learns
from stlib.layers import ATTENTIONS
from stlib.layers.qk_attention import QKChannelAttention, QKTokenAttention
from stlib.models import create_model
from stlib.models.qkformer import QKFormer
from stlib.models.spikformer import default_neuron
from stlib.params import load_params

# ---------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("num_classes, expected", [(10, 6_706_234), (100, 6_740_884)])
def test_cifar_parameter_count_matches_the_official_code(num_classes, expected):
    assert count(create_model("qkformer_4_384", num_classes=num_classes)) == expected


def test_cifar_parameter_breakdown_per_part():
    model = create_model("qkformer_4_384")
    embeds = [count(m) for m in model.patch_embeds]
    stages = [count(m) for m in model.stages]
    assert embeds == [47_856, 517_248, 2_066_688]
    assert stages == [103_488, 409_728, 3_557_376]
    assert [len(s) for s in model.stages] == [1, 1, 2]


@pytest.mark.parametrize("name, expected", [("qkformer_10_384", 16_473_688),
                                            ("qkformer_10_512", 29_079_336),
                                            ("qkformer_10_768", 64_962_760)])
def test_imagenet_parameter_counts_match_the_official_code(name, expected):
    model = meta_model(name)
    assert count(model) == expected
    assert [len(s) for s in model.stages] == [1, 2, 7]


# ---------------------------------------------------------------------------------- shapes


def test_cifar_stage_widths_grids_and_heads():
    model = create_model("qkformer_4_384", embed_dim=32, num_heads=2).eval()
    x = torch.rand(2, 1, 3, 32, 32)
    shapes = []
    for embed in model.patch_embeds:
        x = embed(x)
        shapes.append(tuple(x.shape[2:]))
        assert set(x.unique().tolist()) <= {0.0, 1.0, 2.0}  # spike + shortcut spike
    assert shapes == [(8, 32, 32), (16, 16, 16), (32, 8, 8)]
    qkta = model.stages[0][0].attn
    assert isinstance(qkta, QKTokenAttention) and qkta.num_heads == 2
    ssa = model.stages[2][0].attn
    assert type(ssa).__name__ == "SSA" and ssa.scale == 0.125 and ssa.q.linear.bias is None
    assert create_model("qkformer_4_384").stages[0][0].attn.num_heads == 8


def test_imagenet_embedding_downsamples_by_16_and_still_runs_on_8x8():
    model = create_model("qkformer_10_384", img_size=64, embed_dim=32, num_heads=2, depth=1,
                         early_depths=(1, 1), num_classes=5, T=1)
    tokens = model.forward_features(torch.rand(1, 3, 64, 64))
    assert tokens.shape == (1, 1, 16, 32)  # 64 / 16 = 4x4 tokens
    small = create_model("qkformer_10_384", **QUICK)
    assert small(torch.rand(2, 1, 8, 8)).shape == (2, 10)  # 8 -> 2 -> 1 -> 1 (rounding up)


def test_forward_shapes_direct_and_sequence_input():
    model = create_model("qkformer_4_384", **TINY)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 3)
    assert model(torch.rand(2, 3, 1, 8, 8)).shape == (3, 3)
    per_step = create_model("qkformer_4_384", per_step_logits=True, **TINY)
    assert per_step(torch.rand(3, 1, 8, 8)).shape == (2, 3, 3)


def test_bad_inputs_and_settings_are_named():
    model = QKFormer(**TINY)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4 \\* num_heads"):
        QKFormer(embed_dim=40, num_heads=4)
    with pytest.raises(ValueError, match="embedding 'cifr'.*did you mean 'cifar'"):
        QKFormer(embedding="cifr")


# ---------------------------------------------------------------------------------- Q-K attention


def test_token_attention_mask_is_the_thresholded_channel_sum_per_head():
    # T=1 LIF (tau 2, decay_input): H = X / 2, so the 0.5-threshold mask fires where sum >= 1
    attn = QKTokenAttention(8, num_heads=2, neuron=default_neuron(1))
    q = torch.zeros(1, 1, 3, 2, 4)  # [T, B, N, h, d]
    q[0, 0, 0, 1, 2] = 1.0  # token 0: one spike in head 1 only
    q[0, 0, 2, 0, :] = 1.0  # token 2: four spikes in head 0
    mask = attn.mask(q)
    assert mask.shape == (1, 1, 3, 2, 1)
    expected = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert torch.equal(mask[0, 0, :, :, 0], expected)
    assert threshold(attn.attn_neuron) == 0.5 and attn.scale == 1.0


def test_channel_attention_sums_over_tokens():
    attn = QKChannelAttention(4, num_heads=1, neuron=default_neuron(1))
    q = torch.zeros(1, 1, 5, 1, 4)
    q[0, 0, :2, 0, 3] = 1.0  # channel 3 fires in two tokens
    q[0, 0, 0, 0, 1] = 1.0  # channel 1 in one token: sum 1 -> H = 0.5, fires too
    assert attn.mask(q).shape == (1, 1, 1, 1, 4)
    assert attn.mask(q).flatten().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_qk_attentions_are_registered_and_plug_into_spikformer():
    assert ATTENTIONS.get("qk_token") is QKTokenAttention
    assert ATTENTIONS.get("qk_channel") is QKChannelAttention
    model = create_model("spikformer_4_384", attn="qk_token",
                         pool_stages=(False, False, False, True), **TINY)
    assert_every_parameter_learns(model, torch.rand(2, 2, 1, 8, 8), 3)


# ---------------------------------------------------------------------------------- contract


def test_default_neuron_is_the_papers_lif():
    neuron = create_model("qkformer_4_384", **TINY).stages[1][0].mlp.fc1_neuron
    assert type(neuron).__name__ == "LIF" and neuron.tau == 2.0 and neuron.detach_reset


def test_cam_target_is_the_last_stage():
    model = create_model("qkformer_4_384", **TINY)
    seen = {}
    model.cam_target_layer().register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model(torch.rand(1, 1, 8, 8))
    assert model.cam_target_layer() is model.stages[-1]
    assert seen["out"].shape == (2, 1, 4, 16)  # [T, B, N = 2x2, D]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    config = load_params(f"params/qkformer/{dataset}.yaml")
    assert config.model.name == "qkformer_4_384" and config.data.name == dataset
    assert config.train.lr == 1e-3 and config.data.batch_size == 64 and config.train.epochs == 400


def test_imagenet_params_file_loads():
    from stlib.data import DATASETS

    if "imagenet" not in DATASETS:
        pytest.skip("no 'imagenet' dataset is registered in stlib.data yet")
    config = load_params("params/qkformer/imagenet.yaml")
    assert config.model.name == "qkformer_10_384" and config.train.epochs == 200


def test_batch_coupled_ssa_runs_the_output_neuron_over_the_flattened_batch():
    torch.manual_seed(0)
    coupled = create_model("qkformer_4_384", batch_coupled_ssa=True, **TINY).eval()
    attn = coupled.stages[-1][0].attn
    attn.proj.bn.weight.data.fill_(2.0)  # an output neuron that fires: near threshold
    attn.proj.bn.bias.data.fill_(0.6)
    plain = create_model("qkformer_4_384", **TINY).eval()
    plain.load_state_dict(coupled.state_dict())
    own = plain.stages[-1][0].attn
    tokens = torch.rand(2, 3, 4, attn.proj.linear.in_features) * 3  # [T, B, N, D]
    q, k, v = attn.spiking_heads(tokens)
    z = attn.proj(attn.attn_neuron(attn.merge((q @ k.transpose(-2, -1)) @ v * attn.scale)))
    # the official output neuron: T*B steps, t-major, its membrane crossing the samples
    assert torch.equal(attn(tokens), attn.proj_neuron(z.flatten(0, 1)).reshape(z.shape))
    assert not torch.equal(attn(tokens), own(tokens))  # a batch of 3 is not 3 single runs
    assert torch.equal(attn(tokens[:, :1]), own(tokens[:, :1]))  # one sample: its own T steps
