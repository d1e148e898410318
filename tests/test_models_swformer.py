"""Spiking Wavelet Transformer: exact counts, Haar basis, ternary NegIF, the model contract."""
from __future__ import annotations

import pytest
import torch

from _zoo import meta_model, TINY, count, meta_count, threshold
from stlib.layers.wavelet import HaarDWT2d, HaarIDWT2d, NegIF, haar_matrix
from stlib.models import create_model
from stlib.models.swformer import SWformer
from stlib.neurons import neuron_factory
from stlib.params import load_params


@pytest.mark.parametrize("num_classes, expected", [(10, 7_479_226), (100, 7_513_876)])
def test_cifar_parameter_count_matches_the_official_code(num_classes, expected):
    assert meta_count("swformer_4_384", num_classes=num_classes) == expected


# the official factories, built with their run.sh / train.py settings (imagenet FL_blocks 2;
# event depth 2, flblocks 4, dim 256)
@pytest.mark.parametrize("name, expected", [
    ("swformer_6_512", 21_806_632), ("swformer_8_512", 27_600_424), ("swformer_dvs_2_256", 2_157_834)])
def test_imagenet_and_event_parameter_counts_match_the_official_code(name, expected):
    assert meta_count(name) == expected


def test_imagenet_config_has_the_spiking_head_and_256_input():
    model = meta_model("swformer_8_512")
    assert model.patch_embed.grid == 16 and model.blocks[0].mixer.haar_weight.shape == (2, 256, 256)
    assert type(model.head).__name__ == "SpikingTokenHead"
    with pytest.raises(ValueError, match="power-of-two token grid; image size 224 gives 14x14"):
        create_model("swformer_8_512", img_size=224)
    with pytest.raises(ValueError, match="unknown SWformer head 'cls'; valid: mean, spiking"):
        SWformer(head="cls", **TINY)


def test_haar_threshold_reaches_the_ternary_neurons():
    model = create_model("swformer_4_384", haar_threshold=0.5, **TINY)
    ternary = [m for m in model.modules() if isinstance(m, NegIF)]
    assert len(ternary) == 3 and all(threshold(n) == 0.5 and n.neg_v_threshold == 0.5 for n in ternary)


def test_event_mixer_reads_the_dilated_wavelet_output_in_its_conv_paths():
    torch.manual_seed(0)
    fatm = create_model("swformer_dvs_2_256", **{**TINY, "in_chans": 2}).blocks[0].mixer.eval()
    x = torch.randn(2, 3, 16, 16) * 3  # [T, B, N = 4x4, D]
    out = fatm(x)
    # by hand, from the module's own parts
    from stlib.layers.grid import grid_to_tokens, max3x3, tokens_to_grid
    from stlib.layers.multistep import seq_to_batch
    s = max3x3(fatm.x_neuron(tokens_to_grid(x)))
    a = fatm.haar_neuron(seq_to_batch(fatm.dwt_bn, fatm.dwt(s)))
    T, B, C, H, W = s.shape
    a = torch.einsum("tbgjhw,gjk->tbgkhw", a.reshape(T, B, fatm.groups, fatm.group_size, H, W), fatm.haar_weight).reshape(s.shape)
    w = max3x3(seq_to_batch(fatm.idwt_bn, fatm.idwt(seq_to_batch(fatm.mix_bn, a))))
    expected = fatm.grouped(fatm.conv1, fatm.conv1_bn, w) + fatm.grouped(fatm.conv2, fatm.conv2_bn, w)
    assert s.abs().sum() > 0 and torch.allclose(out, grid_to_tokens(expected))
    static = create_model("swformer_4_384", **TINY).blocks[0].mixer
    assert not static.event and fatm.event


def test_cifar_parameter_breakdown_per_part():
    model = meta_model("swformer_4_384")
    fatm = model.blocks[0].mixer
    assert count(model.patch_embed) == 2_201_520
    assert count(model.blocks[0]) == 1_318_464 and count(model.blocks[0].mlp) == 1_185_408
    assert fatm.haar_weight.shape == (4, 96, 96)
    assert count(fatm.conv1) == 9_312 and count(fatm.conv2) == 83_040


def test_haar_matrix_is_the_orthonormal_multilevel_basis():
    h = haar_matrix(8)
    assert torch.allclose(h @ h.T, torch.eye(8), atol=1e-6)
    assert torch.allclose(h[0], torch.full((8,), 8 ** -0.5))  # the coarsest (mean) row first
    assert torch.allclose(h[-1] * 2 ** 0.5, torch.tensor([0, 0, 0, 0, 0, 0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="power-of-two"):
        haar_matrix(6)


def test_negif_is_ternary_with_the_half_negative_threshold():
    neuron = NegIF()
    x = torch.tensor([1.0, -0.4, -0.2, -0.6, 0.3, 0.8]).reshape(6, 1)
    spikes = neuron(x).flatten().tolist()
    # V: 1 -> +1 (reset); -0.4; -0.6 -> -1 (reset); -0.6 -> -1; 0.3; 1.1 -> +1
    assert spikes == [1.0, 0.0, -1.0, -1.0, 0.0, 1.0]
    assert NegIF()(torch.full((1, 1), -0.5)).item() == 0.0  # fires only below -0.501
    # both sides carry a surrogate gradient
    x = torch.tensor([[0.9], [-0.45]], requires_grad=True)
    NegIF()(x).sum().backward()
    assert (x.grad.abs() > 0).all()


def test_spiking_haar_puts_negif_between_the_row_and_column_passes():
    x = torch.randn(3, 2, 4, 4, 4) * 2
    h = haar_matrix(4)
    assert torch.allclose(HaarDWT2d()(x), h @ NegIF()(x @ h.T))
    assert torch.allclose(HaarIDWT2d()(x), h.T @ (NegIF()(NegIF()(x) @ h)))
    # one separable Haar basis image (rows h[1], columns h[2]) gives one coefficient, at (1, 2)
    basis = torch.outer(h[1], h[2]).expand(1, 1, 1, 4, 4) * 4  # [T, B, C, H, W]
    z = HaarDWT2d()(basis)[0, 0, 0]
    assert z.nonzero().tolist() == [[1, 2]] and z[1, 2] > 0


def test_ternary_neurons_stay_negif_when_the_neuron_type_changes():
    factory = neuron_factory("PLIF", T=2, v_threshold=0.8, surrogate="atan", alpha=3.0)
    model = create_model("swformer_4_384", neuron=factory, **TINY)
    fatm = model.blocks[0].mixer
    ternary = [m for m in fatm.modules() if isinstance(m, NegIF)]
    assert len(ternary) == 3
    assert all(threshold(n) == 1.0 and n.neg_v_threshold == 0.5 for n in ternary)
    assert all(type(n.surrogate).__name__.lower() == "atan" and n.surrogate.alpha == 3.0 for n in ternary)
    assert type(fatm.x_neuron).__name__ == "PLIF" and threshold(fatm.x_neuron) == pytest.approx(0.8)


def test_cifar_shapes_and_per_step_logits():
    model = create_model("swformer_4_384", embed_dim=64, depth=1, per_step_logits=True).eval()
    x = torch.rand(4, 2, 3, 32, 32)
    assert model.patch_embed(x).shape == (4, 2, 64, 64)  # 8x8 tokens
    assert model(x).shape == (4, 2, 10)


def test_bad_inputs_and_settings_are_named():
    model = SWformer(**TINY)
    with pytest.raises(ValueError, match="3 time steps.*T=2"):
        model(torch.rand(3, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="power-of-two token grid.*24"):
        SWformer(img_size=24, in_chans=1, embed_dim=16, T=2)
    with pytest.raises(ValueError, match="not divisible by the 3 wavelet groups"):
        SWformer(img_size=8, in_chans=1, embed_dim=16, T=2, wavelet_groups=3)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_params_files_load(dataset):
    config = load_params(f"params/swformer/{dataset}.yaml")
    assert config.model.name == "swformer_4_384" and config.train.lr == 1.5e-3
    assert config.train.warmup_lr == (8e-5 if dataset == "cifar10" else 1e-5)


def test_imagenet_and_dvs_params_files_hold_the_official_recipes():
    imagenet = load_params("params/swformer/imagenet.yaml")
    assert (imagenet.model.name, imagenet.data.img_size, imagenet.train.opt) == ("swformer_8_512", 256, "lamb")
    assert (imagenet.train.warmup_epochs, imagenet.train.mixup_prob) == (30, 0.6)
    dvs = load_params("params/swformer/cifar10_dvs.yaml")
    assert (dvs.model.name, dvs.model.T, dvs.train.lr, dvs.train.mixup_off_epoch) == ("swformer_dvs_2_256", 16, 5e-3, 75)
