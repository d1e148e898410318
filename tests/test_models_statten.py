"""STAtten: the chunked spatial-temporal core, and STAtten plugged into Spikformer and SDT v1."""
from __future__ import annotations

import pytest
import torch

from _zoo import TINY, count, threshold, assert_every_parameter_learns, assert_quick_preset_trains
from stlib.layers import ATTENTIONS, SSA
from stlib.layers.statten import STAtten, STAttenSDSA, spatial_temporal_attention
from stlib.models import create_model, list_models
from stlib.models.spikformer import default_neuron
from stlib.neurons import NEURONS, neuron_factory
from stlib.params import load_params

SPIKFORMER_TINY = dict(TINY, pool_stages=(False, False, False, True))  # 8x8 -> 4x4 tokens
SDT_TINY = dict(TINY, pool_stages=(False, False, False, True), embed_dim=16)


def spikes(*shape: int) -> torch.Tensor:
    return (torch.rand(*shape) < 0.5).float()


# ---------------------------------------------------------------------------------- the core


def test_chunk_of_one_is_per_step_attention_and_chunk_of_t_is_full():
    T, B, h, N, d = 4, 2, 2, 3, 5
    q, k, v = spikes(T, B, h, N, d), spikes(T, B, h, N, d), spikes(T, B, h, N, d)
    per_step = (q @ k.transpose(-2, -1)) @ v * 0.25  # SSA, step by step
    assert torch.equal(spatial_temporal_attention(q, k, v, chunk_size=1, scale=0.25), per_step)

    def over_time(x):  # every step's tokens in one sequence: [B, h, T*N, d]
        return x.permute(1, 2, 0, 3, 4).reshape(B, h, T * N, d)

    full = (over_time(q) @ over_time(k).transpose(-2, -1)) @ over_time(v) * 0.25
    out = spatial_temporal_attention(q, k, v, chunk_size=T, scale=0.25)
    assert torch.equal(over_time(out), full)


def test_queries_see_their_own_chunk_only():
    T, B, h, N, d = 4, 1, 1, 3, 4
    q, k, v = spikes(T, B, h, N, d), spikes(T, B, h, N, d), spikes(T, B, h, N, d)
    k2, v2 = k.clone(), v.clone()
    k2[1], v2[1] = 1.0, 1.0  # change step 1 only
    base = spatial_temporal_attention(q, k, v, chunk_size=2, scale=1.0)
    moved = spatial_temporal_attention(q, k2, v2, chunk_size=2, scale=1.0)
    changed = [not torch.equal(base[t], moved[t]) for t in range(T)]
    assert changed == [True, True, False, False]  # steps 0-1 share a chunk; 2-3 do not see it


def test_t_not_divisible_by_the_chunk_is_an_error():
    q = spikes(3, 1, 1, 2, 2)
    with pytest.raises(ValueError, match="T=3.*chunk_size=2"):
        spatial_temporal_attention(q, q, q, chunk_size=2, scale=1.0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        STAtten(8, num_heads=2, neuron=default_neuron(2), chunk_size=0)


# ---------------------------------------------------------------------------------- on Spikformer


def test_registered_names():
    assert ATTENTIONS.get("statten") is STAtten
    assert ATTENTIONS.get("statten_sdsa") is STAttenSDSA


def test_spikformer_with_statten_has_the_hosts_parameters():
    model = create_model("spikformer_4_384", attn="statten")
    assert count(model) == 9_324_730 == count(create_model("spikformer_4_384"))
    attn = model.blocks[0].attn
    assert isinstance(attn, STAtten) and attn.chunk_size == 2 and attn.scale == 0.125
    assert threshold(attn.attn_neuron) == 0.5


def test_chunk_size_reaches_the_attention_through_the_host():
    model = create_model("spikformer_4_384", attn="statten", attn_kwargs={"chunk_size": 1},
                         **SPIKFORMER_TINY)
    assert [b.attn.chunk_size for b in model.blocks] == [1]
    with pytest.raises(ValueError, match="T=2.*chunk_size=4"):
        create_model("spikformer_4_384", attn="statten", attn_kwargs={"chunk_size": 4},
                     **SPIKFORMER_TINY)(torch.rand(1, 1, 8, 8))


def test_statten_with_chunk_one_equals_ssa_with_the_same_weights():
    torch.manual_seed(0)
    neuron = default_neuron(4)
    ssa = SSA(16, num_heads=2, neuron=neuron, scale=1.0)  # train mode: BN on batch statistics, so
    statten = STAtten(16, num_heads=2, neuron=neuron, scale=1.0, chunk_size=1)  # q/k/v spike
    statten.load_state_dict(ssa.state_dict())
    x = spikes(4, 2, 9, 16) * 2
    assert ssa(x).sum() > 0 and torch.equal(statten(x), ssa(x))
    statten.chunk_size = 4  # the same weights attending across time give another answer
    assert not torch.equal(statten(x), ssa(x))


@pytest.mark.parametrize("name", NEURONS.names())
def test_every_neuron_type_runs_spikformer_statten(name):
    model = create_model("spikformer_4_384", attn="statten", neuron=name, **SPIKFORMER_TINY)
    assert_every_parameter_learns(model, torch.rand(2, 2, 1, 8, 8) * 3, 3)


@pytest.mark.parametrize("name", ["PLIF", "GLIF"])
def test_attention_threshold_survives_a_neuron_swap(name):
    factory = neuron_factory(name, T=2, v_threshold=0.8)
    attn = create_model("spikformer_4_384", attn="statten", neuron=factory,
                        **SPIKFORMER_TINY).blocks[0].attn
    assert threshold(attn.attn_neuron) == pytest.approx(0.5)
    assert threshold(attn.q_neuron) == pytest.approx(0.8)


def test_spikformer_statten_trains_on_the_quick_preset():
    assert_quick_preset_trains("spikformer_4_384", attn="statten")


# ---------------------------------------------------------------------------------- on SDT v1


needs_sdt = pytest.mark.skipif("sdt_2_512" not in list_models("sdt*"),
                               reason="SDT v1 (stlib/models/sdt.py) is not registered")


@needs_sdt
def test_sdt_with_statten_sdsa_has_the_hosts_parameters():
    model = create_model("sdt_2_512", attn="statten_sdsa", attn_kwargs={"chunk_size": 4})
    assert count(model) == count(create_model("sdt_2_512")) == 10_233_418
    attn = model.blocks[0].attn
    assert isinstance(attn, STAttenSDSA) and attn.chunk_size == 4 and attn.scale == 0.125
    assert threshold(attn.attn_neuron) == 0.5


@needs_sdt
@pytest.mark.parametrize("attn", ["statten_sdsa", "statten"])
def test_sdt_runs_and_trains_with_statten(attn):
    model = create_model("sdt_2_512", attn=attn, **SDT_TINY)
    assert_every_parameter_learns(model, torch.rand(2, 2, 1, 8, 8) * 3, 3)


def test_statten_dvs_mode_is_the_official_one():
    """Q, K, V and the shortcut spikes max-pooled over the 3x3 grid, scale 1/(H*H*c), and
    Y = SN_0.5(core) * s_pool + s_pool; written from the module's own layers."""
    from stlib.layers.grid import grid_max3x3

    torch.manual_seed(0)
    T, B, N, D, c = 4, 2, 16, 8, 2
    attn = STAttenSDSA(D, num_heads=2, neuron=neuron_factory("IF", v_threshold=0.3),
                       chunk_size=c, dvs=True).eval()
    x = torch.randn(T, B, N, D) * 2
    s = attn.shortcut_neuron(x)
    q, k, v = (attn.heads(grid_max3x3(n(lin(s)))) for n, lin in
               [(attn.q_neuron, attn.q), (attn.k_neuron, attn.k), (attn.v_neuron, attn.v)])
    core = spatial_temporal_attention(q, k, v, chunk_size=c, scale=1 / (4 * 4 * c))
    s_pool = grid_max3x3(s)
    expected = attn.proj(attn.attn_neuron(attn.merge(core)) * s_pool + s_pool)
    torch.testing.assert_close(attn(x), expected)
    static = STAttenSDSA(D, num_heads=2, neuron=neuron_factory("IF", v_threshold=0.3),
                         chunk_size=c).eval()
    static.load_state_dict(attn.state_dict())
    assert not torch.allclose(static(x), attn(x))


@needs_sdt
@pytest.mark.parametrize("dataset", ["cifar10_dvs", "dvs_gesture"])
def test_dvs_params_files_turn_the_dvs_mode_on(dataset):
    config = load_params(f"params/statten/{dataset}.yaml")
    assert config.model.kwargs == {"attn": "statten_sdsa",
                                   "attn_kwargs": {"chunk_size": 4, "dvs": True}}
    model = create_model(config.model.name, T=config.model.T, **config.model.kwargs)
    assert all(b.attn.dvs and b.attn.chunk_size == 4 for b in model.blocks)


@needs_sdt
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    config = load_params(f"params/statten/{dataset}.yaml")
    assert config.model.kwargs == {"attn": "statten_sdsa", "attn_kwargs": {"chunk_size": 2}}
    assert config.train.epochs == 200 and config.data.name == dataset
    model = create_model(config.model.name, T=config.model.T, **config.model.kwargs)
    assert isinstance(model.blocks[0].attn, STAttenSDSA)
