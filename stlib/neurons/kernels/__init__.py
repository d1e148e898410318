"""Fused multi-step neurons: the backends behind ``neuron.backend``.

``neuron.backend`` (set by ``create_neuron(..., backend=...)`` or as an attribute) is one of
:data:`BACKENDS`:

* ``"reference"``: reference.py's Python loop over T with autograd (the executable spec);
* ``"triton"``: the fused Triton kernels of :mod:`.triton_ops` (one forward and one backward
  launch over all T). Needs a CUDA tensor, or CPU tensors with ``TRITON_INTERPRET=1`` set
  before triton is imported (how CI checks the kernels). Raises ``ValueError`` naming what is
  unsupported (neuron type, surrogate, dtype, device);
* ``"auto"`` (default): Triton on CUDA tensors when supported; else the fused torch function
  of :mod:`.torch_ops` (LIF, IF, IFSoft, PLIF with a built-in surrogate; the CPU fast path);
  else the reference loop. Under ``torch.compile``, always the reference loop, which the
  compiler fuses itself (:func:`select`).

Fused (Triton): LIF, IF (hard), IFSoft, PLIF (with the ``w`` gradient), KLIF (with the ``k``
gradient, both ``scale_reset`` forms), CLIF, GLIF (with the gradients of all eight raw
parameters, the per-step conductance included). Fused torch (CPU auto): LIF, IF, IFSoft, PLIF.
Surrogates: sigmoid, atan, rectangle, triangle, any ``alpha``; ``detach_reset`` both ways.
Every fused path repeats the reference's forward operations in order, so spikes and H are
bit-equal (CLIF: its state goes through sigmoid(M), whose last bit is library-specific, so H and
V agree to about an ulp and a spike could in principle flip at an exact tie), gradients agree
within float tolerance (tests/test_kernels.py). The state is left as the loop leaves it:
``neuron.v`` / ``v_seq``, CLIF's ``m`` / ``m_seq``, GLIF's ``prev_spike``.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

from stlib.neurons.kernels.spec import HALF_DTYPES, Spec, describe, unsupported_reason
from stlib.neurons.kernels.torch_ops import TORCH_KINDS, lif_family_torch

__all__ = ["BACKENDS", "select", "triton_unsupported_reason", "triton_import_error", "run_triton",
           "run_torch", "Spec", "describe", "unsupported_reason"]

BACKENDS = ("auto", "reference", "triton")
_TRITON_DTYPES = (torch.float32, *HALF_DTYPES)


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    """``None`` if ``stlib.neurons.kernels.triton_ops`` imports, else the import error in words."""
    try:
        from stlib.neurons.kernels import triton_ops  # noqa: F401
    except Exception as err:  # triton absent or broken: the reference paths still work
        return f"triton is unavailable ({type(err).__name__}: {err})"
    return None


def triton_unsupported_reason(neuron, x_seq: Tensor) -> str | None:
    """``None`` if the Triton backend can run ``neuron(x_seq)``; otherwise why not, in words."""
    reason = unsupported_reason(neuron)
    if reason is not None:
        return reason
    if x_seq.dtype not in _TRITON_DTYPES:
        return f"input dtype {x_seq.dtype} (Triton kernels take float32, float16, bfloat16)"
    params = [p for p in neuron.parameters()]
    if any(p.dtype != torch.float32 for p in params):
        return "neuron parameters must be float32 (state math is fp32)"
    if triton_import_error() is not None:
        return triton_import_error()
    from stlib.neurons.kernels.triton_ops import interpreting
    if not x_seq.is_cuda and not (x_seq.device.type == "cpu" and interpreting()):
        return f"a {x_seq.device.type} tensor (needs CUDA, or CPU tensors with TRITON_INTERPRET=1)"
    if any(p.device != x_seq.device for p in params):
        return "neuron parameters are on another device than the input"
    return None


def _torch_unsupported_reason(neuron, x_seq: Tensor) -> str | None:
    reason = unsupported_reason(neuron)
    if reason is None and describe(neuron).kind not in TORCH_KINDS:
        reason = f"{type(neuron).__name__} has no fused torch path"
    return reason


def select(neuron, x_seq: Tensor) -> Callable | None:
    """The fused runner for ``neuron(x_seq)`` under ``neuron.backend``, or ``None`` for the loop.

    Under ``torch.compile`` ``"auto"`` always takes the loop: Dynamo unrolls it over T and
    Inductor fuses the steps (forward and backward) into a few kernels. The fused torch
    function is the opposite of what it can use: a Python loop over column chunks with
    in-place ``out=`` writes, which it traces as hundreds of mutating ops (on 2 CPU cores
    about 6x slower than eager, after a 100 s compile, against about 4x faster than eager
    for the traced loop).
    """
    backend = neuron.backend
    if backend == "reference" or (backend == "auto" and torch.compiler.is_compiling()):
        return None
    if backend == "triton":
        reason = triton_unsupported_reason(neuron, x_seq)
        if reason is not None:
            raise ValueError(f"backend='triton' cannot run {type(neuron).__name__} here: {reason}")
        return run_triton
    # auto: triton is imported only for CUDA inputs, so CPU runs never pay for (or depend on) it
    if x_seq.is_cuda and triton_unsupported_reason(neuron, x_seq) is None:
        return run_triton
    if _torch_unsupported_reason(neuron, x_seq) is None:
        return run_torch
    return None


def _k_tensor(neuron, spec: Spec, like: Tensor) -> Tensor:
    """The learnable scalar the kernels take: sigmoid(w) for PLIF (autograd carries its gradient
    to w), k for KLIF, and a dummy otherwise."""
    if spec.kind == "plif":
        return torch.sigmoid(neuron.w)
    if spec.kind == "klif":
        return neuron.k
    return torch.zeros((), dtype=torch.float32, device=like.device)


def _finish(neuron, spec: Spec, shape, v_last: Tensor, h: Tensor, k: Tensor) -> None:
    """Leave the neuron's state as reference.py's loop does."""
    neuron.v = v_last.reshape(shape[1:])
    if not neuron.store_v_seq:
        neuron.v_seq = None
    elif spec.kind == "klif":
        neuron.v_seq = torch.relu(k.detach() * h).reshape(shape)  # KLIF's v_seq is F = ReLU(k H)
    else:
        neuron.v_seq = h.reshape(shape)


def run_triton(neuron, x_seq: Tensor) -> Tensor:
    """``neuron(x_seq)`` through the fused Triton kernels (checks done by :func:`select`)."""
    from stlib.neurons.kernels import triton_ops

    spec = describe(neuron)
    shape = x_seq.shape
    x = x_seq.reshape(shape[0], -1).contiguous()  # [T, N]
    if spec.kind == "clif":
        spikes, v_last, h, m = triton_ops.clif(x, spec)
        _finish(neuron, spec, shape, v_last, h, None)
        neuron.m = m[-1].reshape(shape[1:])
        # CLIF.forward stacks these after the step loop; hand it the fused trajectory
        neuron._m_seq = list(m.reshape(shape).unbind(0)) if neuron.store_v_seq else []
        return spikes.reshape(shape)
    if spec.kind == "glif":
        # the per-step scalars, with reference.py's torch ops (bit-equal); autograd takes the
        # kernel's gradients for them back to the raw parameters
        a, b, g = neuron.gate_alpha, neuron.gate_beta, neuron.gate_gamma
        p = torch.stack([1.0 - a * (1.0 - neuron.tau), (1.0 - a) * neuron.leak,
                         (1.0 - g) * neuron.v_subreset, g, neuron.v_threshold])
        c = 1.0 - b * (1.0 - neuron.conduct)
        spikes, v_last, s_last, v = triton_ops.glif(x, p, c, spec)
        _finish(neuron, spec, shape, v_last, v, None)
        neuron.prev_spike = s_last.reshape(shape[1:])
        return spikes.reshape(shape)
    k = _k_tensor(neuron, spec, x)
    spikes, v_last, h = triton_ops.lif_family(x, k, spec)
    _finish(neuron, spec, shape, v_last, h, k)
    return spikes.reshape(shape)


def run_torch(neuron, x_seq: Tensor) -> Tensor:
    """``neuron(x_seq)`` through the fused torch function (LIF, IF, IFSoft, PLIF)."""
    spec = describe(neuron)
    k = _k_tensor(neuron, spec, x_seq)
    spikes, v_last, h = lif_family_torch(x_seq, k, spec, neuron.surrogate.grad)
    _finish(neuron, spec, x_seq.shape, v_last, h, k)
    return spikes
