"""Sequential images through Spikformer, SDT and Spikformer+SEMM: the STEP Conv1d tokenizer
(``embed="sequence"``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from stlib.encoders import InputEncoder
from stlib.layers.sequence import SequenceAsRow, SequenceEmbed, sequence_time_major
from stlib.models import create_model
from stlib.models.spikformer import default_neuron
from stlib.neurons import NEURONS, neuron_factory
from stlib.params import load_params

REPO = Path(__file__).resolve().parents[1]
TINY = dict(embed="sequence", embed_dim=32, depth=1, num_heads=4, T=2)
#: STEP's sequential table: params family -> model
HOSTS = {"spikformer": "spikformer_4_384", "sdt": "sdt_2_512",
         "spikformer_semm": "spikformer_semm_4_384"}


def _conv_bn(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_out * c_in * k + (c_out if bias else 0) + 2 * c_out


def _sequence_embed_params(c: int, d: int) -> int:
    """4 x Conv1d(k5, bias)+BN with widths D/8..D, then the k3 RPE conv (bias) + BN."""
    widths = [c, d // 8, d // 4, d // 2, d]
    return sum(_conv_bn(i, o, 5) for i, o in zip(widths, widths[1:])) + _conv_bn(d, d, 3)


def _sps_params(c: int, d: int) -> int:
    widths = [c, d // 8, d // 4, d // 2, d]
    # 3x3 Conv2d without bias (BN follows) = 9 weights per channel pair
    return sum(_conv_bn(i, o, 9, bias=False) for i, o in zip(widths, widths[1:])) \
        + _conv_bn(d, d, 9, bias=False)


@pytest.mark.parametrize("length, chans, expected", [(784, 1, 8_052_970), (1024, 3, 8_053_450)])
def test_parameter_counts(length, chans, expected):
    model = create_model("spikformer_4_384", embed="sequence", img_size=length, in_chans=chans)
    assert sum(p.numel() for p in model.parameters()) == expected
    # the same blocks and head as the image model; only the embedding differs
    image = create_model("spikformer_4_384")
    assert sum(p.numel() for p in image.parameters()) == 9_324_730
    assert expected == 9_324_730 - _sps_params(3, 384) + _sequence_embed_params(chans, 384)


@pytest.mark.parametrize("model, image, expected", [
    ("sdt_2_512", 10_233_418, {784: 7_972_490, 1024: 7_973_130}),
    ("spikformer_semm_4_384", 7_739_242, {784: 6_467_482, 1024: 6_467_962})])
def test_parameter_counts_sdt_and_semm(model, image, expected):
    """The image model's count with its native tokenizer swapped for the sequence one."""
    native = create_model(model, in_chans=1)
    assert sum(p.numel() for p in create_model(model).parameters()) == image
    blocks_and_head = sum(p.numel() for p in native.parameters()) - sum(
        p.numel() for p in native.patch_embed.parameters())
    for (length, chans), count in zip([(784, 1), (1024, 3)], expected.values()):
        seq = create_model(model, embed="sequence", img_size=length, in_chans=chans)
        assert sum(p.numel() for p in seq.parameters()) == expected[length]
        assert count == blocks_and_head + _sequence_embed_params(chans, seq.embed_dim)


def test_tokenizer_strides_and_tokens():
    neuron = default_neuron(2)
    short = SequenceEmbed(seq_len=784, in_chans=1, embed_dim=32, neuron=neuron)
    long = SequenceEmbed(seq_len=1024, in_chans=3, embed_dim=32, neuron=neuron)
    assert short.strides == (1, 2, 2, 2) and long.strides == (2, 2, 2, 2)
    assert short(torch.rand(2, 3, 1, 784)).shape == (2, 3, 64, 32)
    assert long(torch.rand(2, 3, 3, 1024)).shape == (2, 3, 64, 32)
    for embed, length, lengths in [(short, 784, [784, 391, 195, 97]),
                                   (long, 1024, [511, 255, 127, 63])]:  # STEP's padding rule
        x, seen = torch.rand(1, embed.in_chans, length), []
        for stage in embed.stages:
            x = stage(x)
            seen.append(x.shape[-1])
        assert seen == lengths
    with pytest.raises(ValueError, match="divisible by 8"):
        SequenceEmbed(seq_len=784, in_chans=1, embed_dim=36, neuron=neuron)


def test_input_forms_agree_and_mismatches_are_refused():
    torch.manual_seed(0)
    model = create_model("spikformer_4_384", img_size=100, in_chans=1, **TINY).eval()
    seq = torch.rand(3, 1, 100)
    out = model(seq)
    assert out.shape == (3, 10)
    repeated = seq.unsqueeze(0).repeat(2, 1, 1, 1)
    assert torch.allclose(model(repeated), out)
    assert torch.allclose(model(repeated.unsqueeze(3)), out)  # [T, B, C, 1, L] from the encoder
    with pytest.raises(ValueError, match=r"\(C, L\)"):
        model(torch.rand(3, 1, 99))
    with pytest.raises(ValueError, match=r"\(C, L\)"):
        model(torch.rand(3, 2, 100))
    with pytest.raises(ValueError, match="T=2"):
        model(torch.rand(4, 3, 1, 100))
    with pytest.raises(ValueError, match=r"\[T, B, C, 1, L\]"):
        model(torch.rand(2, 3, 1, 10, 10))
    with pytest.raises(ValueError, match="embed"):
        create_model("spikformer_4_384", embed="conv1d")


def test_sequence_time_major_repeats_over_T():
    seq = torch.rand(2, 3, 5)
    x = sequence_time_major(seq, T=4, in_chans=3, length=5, model="m")
    assert x.shape == (4, 2, 3, 5) and all(torch.equal(x[t], seq) for t in range(4))


def test_per_step_logits_and_cam_target():
    model = create_model("spikformer_4_384", img_size=64, in_chans=1, per_step_logits=True, **TINY)
    assert model(torch.rand(3, 1, 64)).shape == (2, 3, 10)
    assert model.cam_target_layer() is model.blocks[-1].mlp.input


def test_backward_reaches_every_parameter():
    model = create_model("spikformer_4_384", img_size=128, in_chans=3, **TINY)
    model(torch.rand(4, 3, 128)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.patch_embed.parameters())


@pytest.mark.parametrize("model", list(HOSTS.values()))
def test_every_host_builds_and_trains_on_sequences(model):
    """Tiny sizes: the sequence tokenizer, forward on [B, C, L] and [T, B, C, L], finite
    gradients on every parameter; an image [T, B, C, H, W] is refused."""
    torch.manual_seed(0)
    net = create_model(model, img_size=96, in_chans=3, num_classes=5, **TINY)
    assert isinstance(net.patch_embed, SequenceEmbed) and net.patch_embed.seq_len == 96
    x = torch.rand(3, 3, 96)
    out = net(x)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert torch.allclose(net(x.unsqueeze(0).repeat(2, 1, 1, 1)), out, atol=1e-5)
    out.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for p in net.patch_embed.parameters())
    with pytest.raises(ValueError, match="reads sequences"):
        net(torch.rand(2, 3, 3, 4, 96))  # an image, not [T, B, C, 1, L]


@pytest.mark.parametrize("model", list(HOSTS.values()))
def test_sequence_embedding_replaces_only_the_tokenizer(model):
    image = create_model(model, img_size=32, in_chans=1, **{**TINY, "embed": "sps"})
    seq = create_model(model, img_size=784, in_chans=1, **TINY)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(seq) - count(seq.patch_embed) == count(image) - count(image.patch_embed)
    assert count(seq.patch_embed) == _sequence_embed_params(1, TINY["embed_dim"])


@pytest.mark.parametrize("name", NEURONS.names())
def test_every_neuron_type(name):
    model = create_model("spikformer_4_384", img_size=64, in_chans=1,
                         neuron=neuron_factory(name, T=2), **{**TINY, "embed_dim": 16})
    out = model(torch.rand(2, 1, 64))
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_trainer_pipeline_row_view_and_rate_encoding():
    """What build_model will assemble for sequences: row view -> image encoder -> model."""
    model = create_model("spikformer_4_384", img_size=64, in_chans=1, **TINY)
    pipe = nn.Sequential(SequenceAsRow(), InputEncoder("rate", 2, (0.13,), (0.31,), seed=0), model)
    assert pipe(torch.rand(3, 1, 64)).shape == (3, 10)
    assert SequenceAsRow()(torch.rand(2, 1, 4, 4)).shape == (2, 1, 4, 4)  # images untouched


@pytest.mark.parametrize("dataset", ["smnist", "psmnist", "scifar10"])
@pytest.mark.parametrize("family", list(HOSTS))
def test_params_files_load_and_build(family, dataset):
    import stlib.data.sequential  # noqa: F401  (registers the datasets)

    config = load_params(REPO / "params" / family / f"{dataset}.yaml")
    assert config.model.name == HOSTS[family]
    assert config.data.name == dataset and config.model.kwargs["embed"] == "sequence"
    assert config.train.mixup == 0 and config.train.cutmix == 0  # sequences: no image mixing
    length, chans = (1024, 3) if dataset == "scifar10" else (784, 1)
    model = create_model(config.model.name, img_size=length, in_chans=chans,
                         **{**config.model.kwargs, "embed_dim": 32, "depth": 1,
                            "num_heads": 4})
    assert model.patch_embed.seq_len == length and model.patch_embed.in_chans == chans


@pytest.mark.slow
def test_smnist_training_on_real_mnist(shared_data):
    """A few hundred real sMNIST sequences, 2 epochs: the loss goes down."""
    from torch.utils.data import DataLoader, Subset

    import stlib.data.sequential  # noqa: F401
    from stlib.data.base import DATASETS, DataConfig

    mnist = shared_data / "mnist"
    if not mnist.is_dir():
        pytest.skip(f"{mnist} is absent")
    splits = DATASETS.get("psmnist")(DataConfig(name="psmnist", root=str(mnist), num_workers=0))
    assert splits.kind == "sequence" and splits.img_size == 784
    assert splits.train.describe()["order"] == "permuted"
    data = Subset(splits.train, range(256))
    torch.manual_seed(0)
    model = create_model("spikformer_4_384", img_size=splits.img_size, in_chans=splits.in_chans,
                         **TINY)
    pipe = nn.Sequential(SequenceAsRow(), InputEncoder("direct", 2, splits.mean, splits.std),
                         model)
    opt = torch.optim.AdamW(pipe.parameters(), lr=3e-3)
    losses = []
    for _ in range(2):
        total = 0.0
        for x, y in DataLoader(data, batch_size=32, shuffle=True):
            loss = nn.functional.cross_entropy(pipe(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total)
    assert losses[1] < losses[0]


def test_notebook_config_and_sweep():
    """The notebook's config keeps the sequential data and the sequence embedding under the
    quick preset, and the sweep file names only the notebook's parameters and study."""
    import stlib.data.sequential  # noqa: F401
    from stlib.params import from_notebook, params_for
    from stlib.sweep import load_sweep

    params_file = params_for("spikformer_4_384", "psmnist")
    assert Path(params_file).name == "psmnist.yaml"
    config = from_notebook(params_file, "quick", dataset="psmnist", epochs=1,
                           study="sequential_classification")
    assert config.data.name == "psmnist" and config.train.epochs == 1
    assert config.model.kwargs["embed"] == "sequence" and config.model.kwargs["embed_dim"] == 64
    sweep = load_sweep(REPO / "params" / "sweeps" / "sequential.yaml")
    assert sweep.grid["dataset"] == ["smnist", "psmnist", "scifar10"]
    assert sweep.grid["model"] == list(HOSTS.values())
    for family, model in HOSTS.items():
        for dataset in sweep.grid["dataset"]:
            assert params_for(model, dataset) == f"params/{family}/{dataset}.yaml"
