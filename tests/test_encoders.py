"""stlib.encoders: property tests of the four encodings and of InputEncoder."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stlib.encoders import ENCODERS, InputEncoder, create_encoder, encode
from stlib.registry import UnknownNameError

NAMES = ["direct", "phase", "rate", "ttfs"]


def test_registry_lists_the_four_encodings():
    assert ENCODERS.names() == NAMES


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        create_encoder("rat", T=4)
    msg = str(err.value)
    assert "'rat'" in msg
    for name in NAMES:
        assert name in msg


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [0, -2])
def test_bad_T_names_T(name, T):
    with pytest.raises(ValueError, match=f"T={T}"):
        create_encoder(name, T)
    with pytest.raises(ValueError, match=f"T={T}"):
        InputEncoder(name, T, mean=None, std=None)


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_dtype(name):
    x = torch.rand(2, 3, 5, 4)
    out = encode(x, 3, method=name)
    assert out.shape == (3, 2, 3, 5, 4)
    assert out.dtype == x.dtype


def test_direct_equals_repeat_and_passes_gradient():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = encode(x, 5, method="direct")
    assert torch.equal(out, x.unsqueeze(0).repeat(5, 1, 1, 1, 1))
    out.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 5.0))


# ----------------------------------------------------------------------------------- rate
def test_rate_mean_matches_intensity():
    T = 2000
    x = torch.linspace(0, 1, 21).view(1, 1, 3, 7)
    spikes = encode(x, T, method="rate", seed=0)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.mean(0)
    # 5 binomial standard deviations (plus a floor for x in {0, 1}, where the std is 0)
    tol = 5 * torch.sqrt(x * (1 - x) / T) + 1e-6
    assert torch.all((rate - x).abs() <= tol), (rate - x).abs().max()
    assert torch.all(rate[x == 0] == 0) and torch.all(rate[x == 1] == 1)


def test_rate_clamps_out_of_range():
    x = torch.tensor([[-0.5, 1.5]])
    out = encode(x, 50, method="rate", seed=1)
    assert torch.all(out[..., 0] == 0) and torch.all(out[..., 1] == 1)


def test_rate_seeded_determinism():
    x = torch.rand(2, 1, 6, 6)
    a = create_encoder("rate", 8, seed=3)(x)
    b = create_encoder("rate", 8, seed=3)(x)
    assert torch.equal(a, b)
    assert torch.equal(a, encode(x, 8, method="rate", seed=3))
    assert not torch.equal(a, create_encoder("rate", 8, seed=4)(x))
    enc = create_encoder("rate", 8, seed=3)
    first, second = enc(x), enc(x)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the stream continues


# ----------------------------------------------------------------------------------- ttfs
@pytest.mark.parametrize("T", [1, 4, 7])
def test_ttfs_one_spike_per_pixel_and_monotone(T):
    x = torch.rand(3, 2, 5, 5)
    out = encode(x, T, method="ttfs")
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(out.sum(0) == 1)
    t_fire = out.argmax(0).flatten()
    order = torch.argsort(x.flatten())  # dimmest first
    fire_sorted = t_fire[order]
    assert torch.all(fire_sorted[1:] <= fire_sorted[:-1])  # brighter never fires later


def test_ttfs_edges_and_values():
    T = 5
    x = torch.tensor([1.0, 0.0, 0.5, 0.9, 0.3, -1.0, 2.0])
    t_fire = encode(x, T, method="ttfs").argmax(0)
    # (T-1)(1-x) = 0, 4, 2, 0.4, 2.8; out of range clamps to 0 / 1
    assert t_fire.tolist() == [0, T - 1, 2, 0, 3, T - 1, 0]


# ---------------------------------------------------------------------------------- phase
@pytest.mark.parametrize("T", [8, 12])
def test_phase_round_trip_8bit(T):
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(200, generator=gen),
                   torch.tensor([0.0, 1 / 256, 0.5, 255 / 256, 0.99999, 1.0])]).view(2, 1, -1)
    out = encode(x, T, method="phase")
    expected = np.minimum(np.floor(256 * x.double().numpy()), 255)
    recon = (out[:8] * 128).sum(0)
    assert np.array_equal(recon.double().numpy(), expected)
    # graded amplitudes: step i is 0 or 2^-(i mod 8)
    for i in range(T):
        assert set(out[i].unique().tolist()) <= {0.0, 2.0 ** -(i % 8)}


def test_phase_period_and_known_values():
    x = torch.tensor([0.5, 1.0, 0.0, 3 / 256])
    out = encode(x, 12, method="phase")
    assert torch.equal(out[8:], out[:4])
    assert out[:, 0].tolist()[:8] == [1, 0, 0, 0, 0, 0, 0, 0]  # q = 128
    assert out[:8, 1].tolist() == [2.0 ** -i for i in range(8)]  # q = 255, not BrainCog's 256
    assert torch.all(out[:, 2] == 0)
    assert out[:8, 3].tolist() == [0, 0, 0, 0, 0, 0, 2.0 ** -6, 2.0 ** -7]  # q = 3


# --------------------------------------------------------------------------- InputEncoder
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _manual_norm(s):
    return (s - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


@pytest.mark.parametrize("name", NAMES)
def test_input_encoder_encodes_then_normalizes(name):
    x = torch.rand(2, 3, 4, 4)
    enc = InputEncoder(name, 4, MEAN, STD, seed=7)
    got = enc(x)
    kw = {"seed": 7} if name == "rate" else {}
    expected = _manual_norm(encode(x, 4, method=name, **kw))
    assert got.shape == (4, 2, 3, 4, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got, encode(x, 4, method=name, **kw))  # normalization did happen


def test_input_encoder_without_normalization_is_the_encoder():
    x = torch.rand(2, 1, 3, 3)
    assert torch.equal(InputEncoder("phase", 9, None, None)(x), encode(x, 9, method="phase"))


def test_input_encoder_preencoded_passthrough_and_T_check():
    frames = torch.rand(4, 2, 3, 5, 5)
    enc = InputEncoder("rate", 4, MEAN, STD, seed=0)
    torch.testing.assert_close(enc(frames), _manual_norm(frames), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"T=3.*T=4"):
        enc(frames[:3])


def test_input_encoder_shape_and_argument_errors():
    enc = InputEncoder("direct", 2, MEAN, STD)
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        enc(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="1 channels"):
        enc(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="both"):
        InputEncoder("direct", 2, MEAN, None)
    with pytest.raises(ValueError, match="positive"):
        InputEncoder("direct", 2, (0.5,), (0.0,))
    with pytest.raises(UnknownNameError, match="ttfs"):
        InputEncoder("bogus", 2, None, None)


def test_input_encoder_buffers_follow_dtype_and_module_moves():
    enc = InputEncoder("direct", 2, MEAN, STD).to(torch.float64)
    x = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    out = enc(x)
    assert out.dtype == torch.float64
    assert math.isclose(out[0, 0, 0, 0, 0].item(), (x[0, 0, 0, 0].item() - MEAN[0]) / STD[0],
                        rel_tol=1e-6)
