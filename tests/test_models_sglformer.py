"""SGLFormer: exact parameter counts, strided windows, the head, the model contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import meta_model, TINY, count, meta_count, threshold
from stlib.layers.bias_free import BiasFreeSSA
from stlib.models import create_model
from stlib.models.sglformer import SGLFormer, integrate, partition
from stlib.params import load_params


@pytest.mark.parametrize("num_classes, expected", [(10, 8_852_874), (100, 8_887_524)])
def test_cifar_parameter_count_matches_the_official_code(num_classes, expected):
    assert meta_count("sglformer_4_384", num_classes=num_classes) == expected


def test_cifar_parameter_breakdown_per_part():
    model = meta_model("sglformer_4_384")
    block = model.blocks[0]
    assert count(model.patch_embed.convs[0]) == 1_856  # stem
    assert count(model.patch_embed) - 1_856 == 2_213_952
    assert count(block.loc) == 1_204_608
    assert [count(a) for a in block.attns] == [592_896] * 3
    assert [count(m) for m in block.mlps] == [1_183_488] * 3
    assert count(model.head.mix) == 98_688 and count(model.head.bn) == 768


def test_partition_makes_strided_windows_and_integrate_inverts_it():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(1, 2, 1, 8, 8)
    windows = partition(x, 2)
    assert windows.shape == (1, 8, 1, 4, 4)
    # window (b_h=0, b_w=1) of image 0 holds pixels (2a, 2c + 1): a dilated grid
    assert torch.equal(windows[0, 1, 0], x[0, 0, 0, 0::2, 1::2])
    assert torch.equal(integrate(windows, 2), x)


def test_cifar_shapes_tokens_and_head():
    model = create_model("sglformer_4_384", depth=1, embed_dim=48, num_heads=4).eval()
    x = torch.rand(4, 2, 3, 32, 32)
    tokens = model.patch_embed(x)
    assert tokens.shape == (4, 2, 64, 48)  # 8x8 = 64 tokens, as the head's (64, T) kernel needs
    assert model.head.mix.kernel_size == (64, 4)
    assert model(x).shape == (2, 10) and model(x[0]).shape == (2, 10)


def test_attention_scale_threshold_and_bias_free_layers():
    model = create_model("sglformer_4_384", **TINY)
    local, glob = model.blocks[0].attns[0], model.blocks[0].attns[1]
    assert isinstance(glob, BiasFreeSSA) and glob.scale == 0.125
    assert threshold(local.attn.attn_neuron) == 0.5 and threshold(glob.q_neuron) == 1.0
    linears = [m for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.bias is None for m in linears)


def test_bad_inputs_and_settings_are_named():
    model = SGLFormer(**TINY)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        model(torch.rand(2, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by 8.*12"):
        SGLFormer(img_size=12, in_chans=1, embed_dim=16, num_heads=2, T=2)
    with pytest.raises(ValueError, match="no per-step logits"):
        SGLFormer(per_step_logits=True)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    config = load_params(f"params/sglformer/{dataset}.yaml")
    assert config.model.name == "sglformer_4_384" and config.data.name == dataset
    assert config.train.lr == 1e-3 and config.data.batch_size == 64
