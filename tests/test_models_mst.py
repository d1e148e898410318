"""MST (Masked Spiking Transformer): counts, the QCFS sites, shifted windows, Random Spike
Masking, conversion, params files. Shared tests: test_model_contract.py; official layouts:
test_official_weights.py (fixtures mst, mst_cifar10); the QCFS and converted IF neurons:
test_neurons.py."""
from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock

from _zoo import QUICK, REPO, check_params_file, meta_count, meta_model, quick_model_name
from stlib.evaluation import conversion_accuracy
from stlib.layers.multistep import SampleDropPath
from stlib.layers.window import shifted_window_mask, tokens_of, windows_of
from stlib.models import create_model
from stlib.neurons import QCFS, ConvertedIF, convert_to_snn, neurons_of

TINY = dict(img_size=16, in_chans=1, num_classes=3, embed_dim=16, patch_size=2,
            depths=(2, 1), num_heads=(1, 2), window_size=4)


# bic-L/Masked-Spiking-Transformer models/mst.py with configs/mst/MST.yaml, after
# replace_activation_by_floor(t=16) (its 124 QCFS clips included), counted by building it
@pytest.mark.parametrize("name, expected", [
    ("mst", 28_332_638), ("mst_cifar10", 27_527_168), ("mst_cifar100", 27_596_378)])
def test_parameter_counts_match_the_official_code(name, expected):
    assert meta_count(name) == expected


def test_default_is_the_qcfs_ann_at_every_one_of_the_124_sites():
    model = meta_model("mst")
    found = neurons_of(model)
    assert len(found) == 124 and model.T == 1
    assert all(type(n) is QCFS and n.levels == 16 for _, n in found)
    block = model.layers[2].blocks[1]
    assert (block.window, block.shift) == (7, 3) and block.attn_mask.shape == (4, 49, 49)
    assert model.layers[3].blocks[1].shift == 0  # a 7x7 grid is one window: no shift


def test_clips_start_at_two_and_the_mlp_bn_follows_the_dataset():
    model = create_model("mst_cifar10", **TINY)
    assert {n.threshold.item() for _, n in neurons_of(model)} == {2.0}
    assert isinstance(model.layers[0].blocks[0].mlp.fc1, torch.nn.Linear)  # CIFAR: no MLP BN
    assert hasattr(create_model("mst", **TINY).layers[0].blocks[0].mlp.fc1, "bn")


def test_windows_round_trip_and_the_shift_mask_is_swins():
    x = torch.randn(2, 3, 64, 5)  # [T, B, 8x8, C]
    for shift in (0, 2):
        windows = windows_of(x, (8, 8), 4, shift)
        assert windows.shape == (2, 3 * 4, 16, 5)
        assert torch.equal(tokens_of(windows, (8, 8), 4, shift), x)
    swin = SwinTransformerBlock(dim=4, input_resolution=(8, 8), num_heads=1, window_size=4, shift_size=2)
    assert torch.equal(shifted_window_mask((8, 8), 4, 2), swin.attn_mask)
    assert shifted_window_mask((8, 8), 4, 0) is None


def _mst(**kwargs) -> torch.nn.Module:
    """A tiny MST in eval mode with weights large enough for the attention map to fire (the
    std-0.02 init leaves Q K^T far below one level)."""
    torch.manual_seed(0)
    model = create_model("mst_cifar10", **{**TINY, **kwargs}).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(30.0)
        for _, neuron in neurons_of(model):
            neuron.threshold.fill_(1.0)
    return model


def test_random_spike_masking_drops_q_k_and_attention_spikes_in_eval_too():
    x = torch.rand(2, 1, 16, 16) * 3
    inputs = {}

    def record(name, model):
        model.layers[0].blocks[0].attn.attn_neuron.register_forward_hook(
            lambda m, i, o: inputs.update({name: i[0]}))
        return model

    masked, full = record("masked", _mst(masking_ratio=0.75)), record("full", _mst())
    first = masked(x)
    assert not torch.equal(first, masked(x))  # a fresh mask every forward, at inference too
    full(x)
    # Q K^T over the kept Q and K spikes: about (1 - 0.75)^2 of the products survive
    kept = inputs["masked"].abs().sum() / inputs["full"].abs().sum()
    assert 0.03 < kept < 0.1
    state = torch.random.get_rng_state()
    out = full(x)
    assert torch.equal(state, torch.random.get_rng_state())  # ratio 0: no random draw
    assert torch.equal(out, full(x))


def test_conversion_makes_an_if_network_of_t_steps_from_the_learned_clips():
    torch.manual_seed(0)
    ann = create_model("mst_cifar10", **TINY).eval()
    with torch.no_grad():
        for i, (_, n) in enumerate(neurons_of(ann)):
            n.threshold.fill_(0.5 + 0.1 * i)
    snn = convert_to_snn(ann, T=6)
    pairs = list(zip(neurons_of(ann), neurons_of(snn)))
    assert snn.T == 6 and ann.T == 1
    assert all(type(s) is ConvertedIF and s.scale == pytest.approx(a.threshold.item())
               for (_, a), (_, s) in pairs)
    seen = []
    snn.patch_embed.neuron.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    x = torch.rand(2, 1, 16, 16)
    assert snn(x).shape == (2, 3) and seen == [6]


def test_conversion_accuracy_reports_the_ann_then_each_t(tmp_path):
    torch.manual_seed(0)
    model = create_model("mst_cifar10", **{**TINY, "img_size": 8, "window_size": 2})
    images, labels = torch.rand(12, 1, 8, 8), torch.arange(12) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=6)
    rows = conversion_accuracy(model, loader, steps=(2, 4))
    assert [(r["network"], r["T"]) for r in rows] == [("ANN", 1), ("SNN", 2), ("SNN", 4)]
    assert all(0.0 <= r["val_acc1"] <= 100.0 for r in rows)
    assert {type(n) for _, n in neurons_of(model)} == {QCFS}  # the ANN is left as it was


def test_drop_path_drops_whole_samples_at_every_step():
    torch.manual_seed(0)
    drop = SampleDropPath(0.5).train()
    y = drop(torch.ones(3, 64, 5))
    kept = y[0, :, 0] > 0
    assert torch.equal(y, kept[None, :, None].expand_as(y) * 2.0)  # same choice at each t
    assert 10 < int(kept.sum()) < 54
    assert torch.equal(drop.eval()(torch.ones(2, 2)), torch.ones(2, 2))
    with pytest.raises(ValueError, match="drop path"):
        SampleDropPath(1.0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="masking_ratio"):
        create_model("mst_cifar10", masking_ratio=1.0)
    with pytest.raises(ValueError, match="patches of 4"):
        create_model("mst_cifar10", img_size=30)
    with pytest.raises(ValueError, match="differ in length"):
        create_model("mst_cifar10", depths=(2, 2), num_heads=(1, 2, 4))


def test_quick_preset_keeps_the_stages_the_digits_can_halve_into():  # training: the contract
    name = quick_model_name("params/mst/cifar10.yaml")
    model = create_model(name, **QUICK)
    assert (model.depths, model.num_heads) == ((1, 1), (4, 8))  # 2x2 patches: two stages
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("path, name", [("params/mst/cifar10.yaml", "mst_cifar10"),
                                        ("params/mst/imagenet.yaml", "mst")])
def test_params_files_load(path, name):
    check_params_file(path, name)


def test_the_params_file_builds_qcfs_with_the_official_clip_and_levels():
    from stlib.build import build_model
    from stlib.data import build_dataloaders
    from stlib.params import load_params

    config = load_params(REPO / "params/mst/cifar10.yaml", preset="quick")
    assert config.data.img_size is None  # the digits' own 8x8, not the recipe's 224
    model = build_model(config, build_dataloaders(config.data, seed=0))
    found = neurons_of(model)
    assert {type(n) for _, n in found} == {QCFS}
    assert {(n.threshold.item(), n.levels) for _, n in found} == {(2.0, 16)}


def test_conversion_report_names_bad_steps_before_loading_anything():
    from stlib.evaluation import conversion_report
    from stlib.params import load_params

    config = load_params(REPO / "params/mst/cifar10.yaml", preset="quick")
    with pytest.raises(ValueError, match="whole numbers of time steps.*'8,x'"):
        conversion_report(config, "no-such-file.pth", steps="8,x")
