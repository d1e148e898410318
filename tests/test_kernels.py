"""Fused neurons (stlib/neurons/kernels) against the reference loop (stlib/neurons/reference.py).

Spikes and H must be bit-equal, gradients (input and learnable w / k) allclose. Without CUDA
the Triton kernels run through the Triton interpreter (``TRITON_INTERPRET=1``, set here before
triton is imported) on small CPU tensors; with CUDA the same sweep runs compiled on the GPU,
plus a full-size check. The fused torch path (the CPU ``auto`` backend) is checked the same way.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the kernels' @triton.jit decoration

from stlib.neurons import LIF, create_neuron, neuron_factory  # noqa: E402
from stlib.neurons import kernels  # noqa: E402
from stlib.neurons.surrogate import Sigmoid  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


def _triton_ops():
    """The kernels module; skips when triton is missing, or when the kernels were decorated
    before ``TRITON_INTERPRET`` was set here (``@triton.jit`` reads it once; nothing else in
    the suite imports them on a CPU machine, so this only guards an unusual test order)."""
    if kernels.triton_import_error() is not None:
        pytest.skip(kernels.triton_import_error())
    mod = sys.modules["stlib.neurons.kernels.triton_ops"]
    if not CUDA and not mod.interpreting():
        pytest.skip("triton_ops was imported before TRITON_INTERPRET=1: run this file in its own process")
    return mod


@pytest.fixture
def triton_kernels():
    """For tests that run the Triton backend: skips when triton is missing."""
    return _triton_ops()


# (id, neuron name, settings): every reset / charge form of every fused neuron
VARIANTS = [
    ("lif", "LIF", {}),
    ("lif_soft_nodecay", "LIF", {"v_reset": None, "decay_input": False}),
    ("lif_tau3_vreset", "LIF", {"tau": 3.0, "v_reset": -0.25}),
    ("if_hard", "IF", {}),
    ("if_soft", "IFSoft", {}),
    ("plif", "PLIF", {}),
    ("plif_soft_nodecay", "PLIF", {"v_reset": None, "decay_input": False, "init_tau": 3.0}),
    ("klif", "KLIF", {}),
    ("klif_scale_soft", "KLIF", {"scale_reset": True, "v_reset": None}),
    ("klif_scale_hard", "KLIF", {"scale_reset": True, "tau": 3.0}),
    ("clif", "CLIF", {}),
    ("glif", "GLIF", {}),
]
SURROGATES = ["sigmoid", "atan", "rectangle", "triangle"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = {1: (3, 37), 4: (5, 23), 16: (7, 9)}  # odd sizes, never a multiple of a block


def _perturb(neuron) -> None:
    """Move learnable scalars off their init so the w / k paths are exercised generically."""
    with torch.no_grad():
        if hasattr(neuron, "w"):
            neuron.w.add_(0.3)
        if hasattr(neuron, "k"):
            neuron.k.fill_(1.3)
        if hasattr(neuron, "gate_alpha"):  # GLIF: every raw off its init, gates off 0.5
            for i, p in enumerate(neuron.parameters()):
                p.add_(0.1 * (i - 3))


def _run(neuron, x, g):
    xx = x.clone().requires_grad_()
    out = neuron(xx)
    (out * g).sum().backward()
    return out, xx.grad, [p.grad.clone() for p in neuron.parameters()]


def _compare(name, settings, dtype, T, backend, device=DEVICE, shape=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (T, *(shape or SHAPES[T]))
    x = (torch.randn(shape, generator=gen) * 1.2 + 0.7).to(device=device, dtype=dtype)
    g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    ref = create_neuron(name, T=T, backend="reference", store_v_seq=True, **settings).to(device)
    fused = create_neuron(name, T=T, backend=backend, store_v_seq=True, **settings).to(device)
    _perturb(ref)
    fused.load_state_dict(ref.state_dict())
    s0, gx0, gp0 = _run(ref, x, g)
    s1, gx1, gp1 = _run(fused, x, g)
    assert s1.dtype == dtype and s1.shape == x.shape
    assert torch.equal(s0, s1), f"spikes differ in {int((s0 != s1).sum())} places"
    assert s0.sum() > 0 and (s0 == 0).any()  # the case exercises both branches
    close = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    if name == "CLIF":  # its state passes through sigmoid(M), whose last bit depends on the library
        torch.testing.assert_close(fused.v_seq, ref.v_seq, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(fused.v, ref.v, rtol=1e-6, atol=1e-6)
    else:  # H (KLIF: F) before the reset and the final V, fp32: bit-equal
        assert torch.equal(ref.v_seq, fused.v_seq) and torch.equal(ref.v, fused.v)
    torch.testing.assert_close(gx1.float(), gx0.float(), **close)
    assert gx0.abs().sum() > 0
    for a, b in zip(gp0, gp1):  # the w (PLIF) / k (KLIF) gradient: a sum over all elements
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    if name == "CLIF":
        torch.testing.assert_close(fused.m_seq, ref.m_seq, rtol=1e-6, atol=1e-6)


BASE = [v for v in VARIANTS if v[0] in ("lif", "if_hard", "if_soft", "plif", "klif", "clif", "glif")]


@pytest.mark.slow
@pytest.mark.parametrize("T", [1, 4, 16])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("vid,name,settings", BASE, ids=[v[0] for v in BASE])
def test_triton_matches_reference(triton_kernels, vid, name, settings, surrogate, dtype, T):
    """Every fused neuron x surrogate x dtype x T; detach_reset alternates over the sweep."""
    detach = (SURROGATES.index(surrogate) + DTYPES.index(dtype) + T) % 2 == 0
    _compare(name, {**settings, "surrogate": surrogate, "detach_reset": detach}, dtype, T, "triton")


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("vid,name,settings", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_triton_every_reset_and_charge_form(triton_kernels, vid, name, settings, detach):
    """Each variant (soft/hard, decay_input, v_reset, scale_reset, tau != 2) both ways of
    detach_reset at fp32 T=4, and once more in bf16 at T=16 with a non-default alpha."""
    _compare(name, {**settings, "alpha": 2.5, "detach_reset": detach}, torch.float32, 4, "triton", seed=1)
    if detach:
        _compare(name, {**settings, "surrogate": "atan", "alpha": 1.5}, torch.bfloat16, 16, "triton", seed=2)


TORCH_VARIANTS = [v for v in VARIANTS if v[1] in ("LIF", "IF", "IFSoft", "PLIF")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("vid,name,settings", TORCH_VARIANTS, ids=[v[0] for v in TORCH_VARIANTS])
def test_fused_torch_path_matches_reference(vid, name, settings, surrogate, dtype):
    for detach in (False, True):
        _compare(name, {**settings, "surrogate": surrogate, "detach_reset": detach}, dtype, 4, "auto",
                 device="cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("vid,name,settings", TORCH_VARIANTS, ids=[v[0] for v in TORCH_VARIANTS])
def test_fused_torch_path_across_chunk_boundaries(monkeypatch, vid, name, settings, dtype):
    """The CPU path steps column blocks of CHUNK neurons through all T one after another: with
    16-neuron blocks over 115 neurons (7 full blocks and a ragged one) every result, the PLIF
    w gradient summed over blocks included, still equals the reference."""
    from stlib.neurons.kernels import torch_ops

    monkeypatch.setattr(torch_ops, "CHUNK", 16)
    _compare(name, {**settings, "detach_reset": False}, dtype, 4, "auto", device="cpu", seed=3)


def test_auto_picks_the_fused_torch_path_on_cpu_and_the_loop_otherwise():
    x = torch.rand(4, 3)
    assert kernels.select(create_neuron("LIF"), x) is kernels.run_torch
    assert kernels.select(create_neuron("LIF", backend="reference"), x) is None
    assert kernels.select(create_neuron("GLIF", T=4), x) is None
    assert kernels.select(create_neuron("KLIF"), x) is None  # no torch-fused KLIF on CPU
    smooth = create_neuron("LIF")
    smooth.surrogate.spiking = False
    assert kernels.select(smooth, x) is None


def test_tie_fires_in_every_path(triton_kernels):
    # tau 2, V0 = 0, X = 2 -> H = 1.0 == v_threshold exactly: spikingjelly fires (>=)
    x = torch.tensor([[2.0, 1.9999999]])
    for backend in ("reference", "auto", "triton"):
        out = create_neuron("LIF", backend=backend)(x.to(DEVICE))
        assert out.tolist() == [[1.0, 0.0]], backend


def test_noncontiguous_input_and_shape_kept(triton_kernels):
    x = torch.randn(4, 6, 5, dtype=torch.float32).transpose(1, 2) * 2 + 0.5  # [T, 5, 6] strided
    ref = create_neuron("PLIF", backend="reference")(x)
    for backend in ("auto", "triton"):
        out = create_neuron("PLIF", backend=backend)(x.to(DEVICE))
        assert out.shape == x.shape and torch.equal(out.cpu(), ref)


def test_triton_backend_names_an_unsupported_neuron(triton_kernels):
    class MyLIF(LIF):  # a subclass may change a step: never fused silently
        pass

    x = torch.rand(4, 3, device=DEVICE)
    neuron = MyLIF()
    neuron.backend = "triton"
    with pytest.raises(ValueError, match="MyLIF"):
        neuron(x)
    assert create_neuron("LIF", backend="triton", surrogate=Sigmoid())(x).shape == x.shape


def test_triton_backend_refuses_smooth_surrogates_custom_modules_and_float64(triton_kernels):
    x = torch.rand(4, 3, device=DEVICE)
    smooth = create_neuron("LIF", backend="triton")
    smooth.surrogate.spiking = False
    with pytest.raises(ValueError, match="spiking=False"):
        smooth(x)

    class MySigmoid(Sigmoid):
        pass

    with pytest.raises(ValueError, match="MySigmoid"):
        create_neuron("LIF", backend="triton", surrogate=MySigmoid())(x)
    with pytest.raises(ValueError, match="float64"):
        create_neuron("LIF", backend="triton")(x.double())


def test_backend_setting_is_checked_and_travels_through_the_factory():
    with pytest.raises(ValueError, match="auto, reference, triton"):
        create_neuron("LIF", backend="cuda")
    assert create_neuron("LIF").backend == "auto"
    factory = neuron_factory("PLIF", backend="reference", detach_reset=True)
    built = factory(v_threshold=0.5)
    assert built.backend == "reference" and built.v_threshold == 0.5
    assert "backend='reference'" in repr(factory)
    assert factory != neuron_factory("PLIF", detach_reset=True)


def test_clif_state_after_a_fused_call(triton_kernels):
    x = torch.randn(4, 2, 3) + 1.0
    ref = create_neuron("CLIF", backend="reference")
    fused = create_neuron("CLIF", backend="triton")
    torch.testing.assert_close(fused(x.to(DEVICE)).cpu(), ref(x))
    torch.testing.assert_close(fused.m.cpu(), ref.m, rtol=1e-6, atol=1e-6)
    assert fused.m_seq is None and fused.m.shape == (2, 3) and not fused.m.requires_grad


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("vid,name,settings", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_triton_full_size_on_cuda(triton_kernels, vid, name, settings, dtype):
    # Spikformer-4-384 CIFAR: B 128, C 384, 8 x 8 tokens, T 4
    _compare(name, {**settings, "detach_reset": True}, dtype, 4, "triton", device="cuda",
             shape=(128, 384, 8, 8))
