"""Spikformer + SEMM: exact parameter counts, router gating, EMSP grid, the model contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import TINY, count, threshold, assert_every_parameter_learns
from stlib.layers import ATTENTIONS
from stlib.layers.semm import EMSA, EMSP
from stlib.models import create_model
from stlib.models.spikformer import default_neuron
from stlib.neurons import neuron_factory
from stlib.params import load_params

SEMM_TINY = dict(TINY, pool_stages=(False, False, False, True))  # 8x8 -> 4x4 tokens


@pytest.mark.parametrize("num_classes, expected", [(10, 7_739_242), (100, 7_773_892)])
def test_parameter_count_matches_the_port(num_classes, expected):
    assert count(create_model("spikformer_semm_4_384", num_classes=num_classes)) == expected


def test_parameter_breakdown_and_wiring():
    model = create_model("spikformer_semm_4_384")
    block = model.blocks[0]
    assert count(model.patch_embed) == 2_201_520  # Spikformer's SPS
    assert count(block.attn) == 484_524 and count(block.mlp) == 898_944
    attn = block.attn
    assert attn.num_experts == 4 and attn.expert_dim == 96 and attn.scale == 0.125
    assert len(attn.attn_neurons) == 4 and len(attn.q_neurons) == 4
    assert all(threshold(n) == 0.5 for n in attn.attn_neurons)
    assert threshold(attn.router_neuron) == 1.0
    assert block.mlp.dwconv.body[0].groups == 768  # depthwise over the 2D-wide half


def test_router_spikes_gate_the_experts(monkeypatch):
    torch.manual_seed(0)
    busy = neuron_factory("IF", v_threshold=0.2)  # low threshold: k, v, q and router all fire
    attn = EMSA(16, num_heads=1, neuron=busy, scale=1.0, num_experts=2)
    seen = []
    attn.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0]))  # Y = sum_i R_i O_i
    x = torch.rand(2, 2, 9, 16) * 4
    attn(x)
    assert seen[-1].sum() > 0 and set(seen[-1].unique().tolist()) <= {0.0, 1.0, 2.0}
    # no router spike: every expert is masked out and Y = 0 whatever the experts say
    monkeypatch.setattr(attn.router_neuron, "forward", lambda u: torch.zeros_like(u))
    attn(x)
    assert not seen[-1].any()


def test_emsp_uses_the_token_grid_and_refuses_a_non_square_one():
    mlp = EMSP(8, 32, neuron=default_neuron(2))
    assert mlp(torch.rand(2, 1, 16, 8) * 3).shape == (2, 1, 16, 8)
    with pytest.raises(ValueError, match="12 tokens do not form a square grid"):
        mlp(torch.rand(2, 1, 12, 8))
    with pytest.raises(ValueError, match="odd"):
        EMSP(8, 9, neuron=default_neuron(2))


def test_emsa_is_registered_and_plugs_into_spikformer():
    assert ATTENTIONS.get("emsa") is EMSA
    model = create_model("spikformer_4_384", attn="emsa", **SEMM_TINY)
    assert isinstance(model.blocks[0].attn, EMSA)
    assert_every_parameter_learns(model, torch.rand(2, 2, 1, 8, 8) * 3, 3)


def test_forward_shapes_and_cam_target():
    model = create_model("spikformer_semm_4_384", **SEMM_TINY)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 3)
    assert model.cam_target_layer() is model.blocks[-1].mlp.input
    per_step = create_model("spikformer_semm_4_384", per_step_logits=True, **SEMM_TINY)
    assert per_step(torch.rand(2, 2, 1, 8, 8)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="argument .*'attn'"):
        create_model("spikformer_semm_4_384", attn="ssa")  # the attention is EMSA or its random-Q/K ablation


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    train = load_params(f"params/spikformer_semm/{dataset}.yaml").train
    recipe = (train.lr, train.weight_decay, train.epochs, train.mixup, train.mixup_off_epoch)
    assert recipe == (1e-3, 0.06, 400, 0.5, 200)


def test_port_router_reads_the_ports_reshape_of_the_router():
    torch.manual_seed(0)
    model = create_model("spikformer_semm_4_384", port_router=True, **SEMM_TINY)
    attn = model.blocks[0].attn
    x = torch.rand(2, 3, 16, 16)  # [T, B, N, D] tokens
    seen = {}
    attn.router_neuron.register_forward_hook(lambda m, i, o: seen.setdefault("in", i[0]))
    attn(x)
    route = attn.router(x)  # [T, B, N, E]
    # the port applies BN1d to [T*B, E, N] and reshapes it to [T, B, N, E] without a transpose
    assert torch.equal(seen["in"], route.transpose(-2, -1).reshape(route.shape))
    assert not torch.equal(seen["in"], route)
    assert "port_router=True" in repr(attn)
