"""Spike-driven Transformer v1: counts, SDSA maths, spike modes, plug-in attention, quick preset."""
from __future__ import annotations

import pytest
import torch

from _zoo import threshold, meta_count, check_params_file
from stlib.layers import ATTENTIONS
from stlib.layers.spike_driven import SDSA
from stlib.models import create_model
from stlib.neurons import neuron_factory, neurons_of

TINY = dict(img_size=8, in_chans=1, embed_dim=16, depth=1, num_heads=2, T=2, num_classes=3)
TALKING_HEADS = 64  # the official, never-called Conv1d(8, 8, 1, bias=False) per block


@pytest.mark.parametrize("name, classes, official, blocks", [
    ("sdt_2_512", 10, 10_233_546, 2),
    ("sdt_2_512", 100, 10_279_716, 2),  # the paper's 10.28M
    ("sdt_2_256", 10, 2_567_082, 2),
    ("sdt_8_768", 1000, 66_339_144, 8),
    # ImageNet configs with published checkpoints (official code counts, MODELS-1.md section 3)
    ("sdt_8_384", 1000, 16_816_536, 8),
    ("sdt_6_512", 1000, 23_373_736, 6),
    ("sdt_8_512", 1000, 29_689_896, 8),
    ("sdt_10_512", 1000, 36_006_056, 10),
])
def test_parameter_counts_are_the_official_minus_talking_heads(name, classes, official, blocks):
    assert meta_count(name, num_classes=classes) == official - blocks * TALKING_HEADS


def test_ms_sps_shapes_and_membrane_output():
    model = create_model("sdt_2_512", depth=1, embed_dim=64)
    x = torch.rand(4, 2, 3, 32, 32)
    tokens = model.patch_embed(x)
    assert tokens.shape == (4, 2, 64, 64)  # 8x8 tokens
    assert not set(tokens.unique().tolist()) <= {0.0, 1.0, 2.0}  # x_feat + RPE, real-valued
    assert model(x).shape == (2, 10) and model(x[0]).shape == (2, 10)


def test_sdsa_is_q_masked_by_the_spiking_column_sum_of_k_times_v():
    torch.manual_seed(0)
    attn = SDSA(8, num_heads=2, neuron=neuron_factory("LIF", T=2, detach_reset=True)).eval()
    seen = {}
    attn.attn_neuron.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    attn.proj.register_forward_hook(lambda m, i, o: seen.update(y=i[0]))
    x = torch.randn(2, 1, 5, 8) * 3
    attn(x)
    s = attn.shortcut_neuron(x)
    q, k, v = (attn.heads(n(lin(s))) for n, lin in
               [(attn.q_neuron, attn.q), (attn.k_neuron, attn.k), (attn.v_neuron, attn.v)])
    assert seen["inp"].shape == (2, 1, 2, 1, 4)  # a column sum over the 5 tokens per head
    torch.testing.assert_close(seen["inp"], (k * v).sum(3, keepdim=True))
    torch.testing.assert_close(seen["y"], attn.merge(q * seen["out"]))
    assert set(seen["y"].unique().tolist()) <= {0.0, 1.0}  # Q ⊙ mask stays binary


def test_wiring_head_neuron_and_thresholds():
    model = create_model("sdt_2_512")
    attn = model.blocks[0].attn
    assert isinstance(attn, SDSA) and attn.num_heads == 8
    assert threshold(attn.attn_neuron) == 0.5 and threshold(model.head.neuron) == 1.0
    assert attn.q.linear.bias is None and attn.proj.linear.bias is not None
    assert not any("talking" in n for n, _ in model.named_modules())
    assert model.cam_target_layer() is model.blocks[-1].mlp.input


@pytest.mark.parametrize("mode, cls", [("lif", "LIF"), ("if", "IFHard"), ("if_soft", "IFSoft")])
def test_spike_modes_replace_every_neuron_and_keep_the_attention_threshold(mode, cls):
    model = create_model("sdt_2_512", neuron=mode, **TINY)
    found = neurons_of(model)
    assert len(found) == 4 + 5 + 2 + 1  # SPS 3 + RPE; shortcut, q, k, v, talking heads; MLP; head
    assert {type(m).__name__ for _, m in found} == {cls}
    for name, m in found:
        assert threshold(m) == (0.5 if name.endswith("attn.attn_neuron") else 1.0), name
    if mode == "if_soft":
        assert all(m.v_reset is None for _, m in found)  # soft reset: V = H - v_th S


def test_attention_is_taken_by_name_with_its_extras():
    assert {"sdsa", "sdsa_3"} <= set(ATTENTIONS.names())
    model = create_model("sdt_2_512", attn="statten_sdsa", attn_kwargs={"chunk_size": 2},
                         **{**TINY, "T": 4})
    attn = model.blocks[0].attn
    assert type(attn).__name__ == "STAttenSDSA" and attn.chunk_size == 2
    assert model(torch.rand(4, 2, 1, 8, 8)).shape == (2, 3)
    sdsa3 = create_model("sdt_2_512", attn="sdsa_3", **TINY)
    assert type(sdsa3.blocks[0].attn).__name__ == "SDSA3"
    with pytest.raises(Exception, match="sdsa"):
        create_model("sdt_2_512", attn="sdsaa", **TINY)


def test_per_step_logits_for_tet():
    model = create_model("sdt_2_512", per_step_logits=True, **TINY)
    assert model(torch.rand(2, 2, 1, 8, 8)).shape == (2, 2, 3)


@pytest.mark.parametrize("path, name", [("params/sdt/cifar10.yaml", "sdt_2_512"),
                                        ("params/sdt/cifar100.yaml", "sdt_2_512"),
                                        ("params/sdt/cifar10_if_soft.yaml", "sdt_2_256"),
                                        ("params/sdt/imagenet.yaml", "sdt_8_768")])
def test_params_files_load(path, name):
    check_params_file(path, name)


def test_imagenet_recipe_is_the_official_lamb_one():
    from stlib.build import build_optimization
    from stlib.params import load_params, params_for

    config = load_params(params_for("sdt_8_768", "imagenet"))
    optimizer, _, epochs, mixup, _ = build_optimization(config, create_model("sdt_2_512", **TINY), 1000)
    assert type(optimizer).__name__ == "Lamb" and optimizer.defaults["lr"] == 1e-3
    assert epochs == 310 and mixup.mixup_alpha == 0.2 and mixup.cutmix_alpha == 1.0


# ------------------------------------------------------------------------ DVS mode ("Erode")
def _official_grid(tokens: torch.Tensor) -> torch.Tensor:
    """[T, B, N, D] -> the official layout [T, B, C, H, W]."""
    T, B, N, D = tokens.shape
    side = int(N ** 0.5)
    return tokens.transpose(2, 3).reshape(T, B, D, side, side)


def _official_heads(grid: torch.Tensor, h: int) -> torch.Tensor:
    """[T, B, C, H, W] -> [T, B, h, N, C/h], as the official code reshapes."""
    T, B, C, H, W = grid.shape
    return grid.flatten(3).transpose(-1, -2).reshape(T, B, H * W, h, C // h).permute(0, 1, 3, 2, 4)


def test_max3x3_is_the_official_maxpool3d():
    from stlib.layers.grid import max3x3

    x = torch.randn(3, 2, 5, 4, 6)
    erode = torch.nn.MaxPool3d(kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
    assert torch.equal(max3x3(x), erode(x))


def test_dvs_sdsa_pools_k_v_kv_and_y_where_the_official_does():
    """Written the official way (5-D MaxPool3d on [T, B, C, H, W] for K and V, on the head
    layout [T, B, h, N, d] for K ⊙ V and Y) from the module's own layers and neurons."""
    torch.manual_seed(0)
    h, D = 2, 8
    attn = SDSA(D, num_heads=h, neuron=neuron_factory("IF", v_threshold=0.3), dvs=True).eval()
    pool = torch.nn.MaxPool3d(kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
    x = torch.randn(3, 2, 16, D) * 2  # 4x4 tokens
    s = attn.shortcut_neuron(x)
    q = _official_heads(_official_grid(attn.q_neuron(attn.q(s))), h)
    k = _official_heads(pool(_official_grid(attn.k_neuron(attn.k(s)))), h)
    v = _official_heads(pool(_official_grid(attn.v_neuron(attn.v(s)))), h)
    a = attn.attn_neuron(pool(k * v).sum(dim=-2, keepdim=True))
    y = pool(q * a)  # [T, B, h, N, d]
    expected = attn.proj(y.transpose(2, 3).reshape(3, 2, 16, D))
    out = attn(x)
    torch.testing.assert_close(out, expected)
    plain = SDSA(D, num_heads=h, neuron=neuron_factory("IF", v_threshold=0.3)).eval()
    plain.load_state_dict(attn.state_dict())  # same weights, no parameters added by dvs
    assert not torch.allclose(plain(x), out)


def test_dvs_params_turn_the_erode_on():
    from stlib.params import load_params

    for path in ("params/sdt/cifar10_dvs.yaml", "params/sdt/dvs_gesture.yaml",
                 "params/sdt/ncaltech101.yaml"):
        config = load_params(path)
        assert config.model.kwargs["attn_kwargs"] == {"dvs": True}, path
        model = create_model(config.model.name, **config.model.kwargs)
        assert all(block.attn.dvs for block in model.blocks)
        assert meta_count(config.model.name) == 2_567_082 - 2 * TALKING_HEADS  # nothing added
    assert not create_model("sdt_2_512").blocks[0].attn.dvs  # static data: off


def test_an_attention_extra_the_attention_does_not_take_is_named():
    # e.g. an SDT DVS config's dvs flag reaching Spikformer's SSA, or STAtten's chunk on SDSA
    with pytest.raises(ValueError, match=r"SSA does not take attn_kwargs 'dvs'; it takes: qkv_bias"):
        create_model("spikformer_4_384", depth=1, attn_kwargs={"dvs": True})
    with pytest.raises(ValueError, match=r"SDSA does not take attn_kwargs 'chunk_size'; it takes: dvs"):
        create_model("sdt_2_256", depth=1, attn_kwargs={"chunk_size": 2})
