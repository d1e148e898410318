"""Fused multi-step LIF / IF / PLIF in plain torch: one ``autograd.Function`` per call.

The CPU path. reference.py's loop builds about ten autograd nodes per step and keeps every
intermediate alive for backward; this function runs the same forward operations (so the
spikes and H are bit-identical) under ``no_grad``, saves only H (plus X for PLIF's ``w``
gradient) and runs a hand-written backward in reverse time (NEURONS.md 1.1 "Gradient", 4 "CPU
and other speed tricks"). The state dtype is ``promote(x.dtype, float32)``, as in reference.py.

Two CPU habits keep it ahead of spikingjelly's eager path: the neurons are processed in column
blocks of :data:`CHUNK` (all T steps of a block, then the next), so the temporaries of a step
stay in cache; and spikes and masks are written as floats by comparisons with ``out=``, never
as bool tensors, whose casts and mixed-dtype products are unvectorised on CPU.
"""
from __future__ import annotations

import torch
from torch import Tensor

from stlib.neurons.kernels.spec import Spec

__all__ = ["lif_family_torch", "TORCH_KINDS"]

TORCH_KINDS = ("lif", "if", "plif")


def _charge_into(h: Tensor, v: Tensor, x: Tensor, k: Tensor | None, spec: Spec) -> None:
    """Write H_t into ``h``: reference.py's ``charge``, operation for operation (so bit-equal),
    with the temporaries updated in place. ``v - 0.0`` is skipped: it returns ``v`` exactly."""
    v_r = spec.v_reset
    if spec.kind == "if":
        torch.add(v, x, out=h)
        return
    rel = v - v_r if v_r != 0.0 else v                    # V_{t-1} - V_r
    if spec.decay_input:                                  # V + (X - rel) / tau  |  V + k (X - rel)
        tmp = x - rel
        tmp = tmp.div_(spec.tau) if spec.kind == "lif" else k * tmp
        torch.add(v, tmp, out=h)
    else:                                                 # V - rel / tau + X  |  V - k rel + X
        tmp = rel / spec.tau if spec.kind == "lif" else k * rel
        torch.sub(v, tmp, out=h)
        h.add_(x)


def _hard_reset(h: Tensor, s: Tensor, v_reset: float) -> Tensor:
    """``H (1 - S) + V_r S`` for float spikes ``s`` in {0, 1}, as ``H - H S (+ V_r S)``: exact
    (``H - H`` is 0, ``H - 0`` is H) and one fused pass."""
    v = torch.addcmul(h, h, s, value=-1.0)
    return v.add_(s, alpha=v_reset) if v_reset != 0.0 else v


def _fire_into(s: Tensor, h: Tensor, th: float) -> Tensor:
    """``s = 1[H >= th]`` as floats written straight into ``s`` (a comparison with a float
    ``out=`` is one vectorised pass; a bool result plus a cast is four times slower on CPU).
    ``H >= th`` equals the reference's ``H - th >= 0``: the subtraction is 0 only at H == th."""
    return torch.ge(h, th, out=s)


def _spike_term(gs: Tensor, u: Tensor, spec: Spec, surrogate_grad) -> Tensor:
    """``gS * psi(u)``; the sigmoid case in three passes (aten's fused sigmoid_backward)."""
    if spec.surrogate == 0:
        sg = torch.sigmoid(u * spec.alpha)
        return torch.ops.aten.sigmoid_backward(gs, sg).mul_(spec.alpha)
    return gs * surrogate_grad(u)


#: Neurons per chunk and thread: every step of a chunk runs before the next chunk starts, so a
#: step's temporaries (about eight chunk-sized tensors) stay in the cores' L2 caches instead of
#: streaming full-size tensors through memory once per elementwise op.
CHUNK = 1 << 15


def _chunks(n: int):
    # torch splits an elementwise op over threads only in pieces of at least 32K elements (its
    # grain size), so a 32K chunk would run on one thread: give every thread one
    size = CHUNK * max(1, torch.get_num_threads())
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _forward_chunk(x: Tensor, h_seq: Tensor, spikes: Tensor, k: Tensor, spec: Spec) -> Tensor:
    """Steps ``x [T, n]`` through the neuron, writing ``h_seq`` and ``spikes``; returns V_T."""
    v = torch.full_like(h_seq[0], spec.v_reset)
    th = spec.v_threshold
    # half outputs get their spikes through an fp32 buffer (the reset needs them in fp32)
    direct = spikes.dtype == h_seq.dtype
    buffer = None if direct else torch.empty_like(v)
    for t in range(x.shape[0]):
        h = h_seq[t]
        # half inputs are converted one step at a time (exact: bf16/fp16 -> fp32 is lossless);
        # mixed-dtype elementwise ops take torch's slow, unvectorised casting path on CPU
        _charge_into(h, v, x[t].to(h.dtype), k, spec)
        fired = _fire_into(spikes[t] if direct else buffer, h, th)
        if not direct:
            spikes[t] = fired
        # the reference's reset, value for value (up to the sign of a zero): hard H (1 - S) + V_r S,
        # soft H - th S
        v = _hard_reset(h, fired, spec.v_reset) if spec.hard else torch.sub(h, fired, alpha=th)
    return v


def _backward_chunk(g_spikes: Tensor, h_seq: Tensor, xs: Tensor | None, gx: Tensor, k: Tensor,
                    spec: Spec, surrogate_grad) -> Tensor | None:
    """Reverse-time gradient of one chunk: writes ``gx [T, n]``; returns PLIF's dL/dk part."""
    th, v_r = spec.v_threshold, spec.v_reset
    same = gx.dtype == h_seq.dtype
    gv = torch.zeros_like(h_seq[0])
    gk = torch.zeros((), dtype=h_seq.dtype, device=h_seq.device) if spec.kind == "plif" else None
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h = h_seq[t]
        u = h - th
        gs = g_spikes[t].to(h_seq.dtype)
        if spec.hard:  # V = H (1 - S) + V_r S; dV/dH = 1 - S = 1[u < 0], as a float mask
            gh = gv * torch.lt(u, 0.0, out=torch.empty_like(u))
            if not spec.detach_reset:
                gs = gs + gv * (v_r - h)
        else:          # V = H - th S
            gh = gv.clone()
            if not spec.detach_reset:
                gs = gs - gv * th
        gh += _spike_term(gs, u, spec, surrogate_grad)
        if spec.kind == "if":
            gx[t] = gh
            gv = gh
        elif spec.kind == "lif":
            if spec.decay_input and same:
                scaled = torch.div(gh, spec.tau, out=gx[t])
            else:
                scaled = gh / spec.tau
                gx[t] = scaled if spec.decay_input else gh
            gv = gh.sub_(scaled)
        else:  # plif: dH/dk needs V_{t-1}, rebuilt from H_{t-1}
            if t == 0:
                v_prev = torch.full_like(h, v_r)
            else:
                hp = h_seq[t - 1]
                fp = _fire_into(torch.empty_like(hp), hp, th)
                v_prev = _hard_reset(hp, fp, v_r) if spec.hard else torch.sub(hp, fp, alpha=th)
            rel = v_prev - v_r if v_r != 0.0 else v_prev  # V_{t-1} - V_r
            if spec.decay_input:  # dH/dk = X - (V - V_r); dH/dX = k
                gk = gk + torch.dot(gh, xs[t].to(h.dtype) - rel)
                if same:
                    torch.mul(gh, k, out=gx[t])
                else:
                    gx[t] = gh * k
            else:                 # dH/dk = -(V - V_r); dH/dX = 1
                gk = gk - torch.dot(gh, rel)
                gx[t] = gh
            gv = torch.addcmul(gh, gh, k, value=-1.0)  # dH/dV = 1 - k
    return gk


class _LIFTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, k: Tensor, spec: Spec, surrogate_grad):
        state_dtype = torch.promote_types(x.dtype, torch.float32)
        x2 = x.reshape(x.shape[0], -1)  # [T, N]; chunks are column blocks, contiguous per step
        h_seq = torch.empty(x2.shape, dtype=state_dtype, device=x.device)
        spikes = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
        v = torch.empty_like(h_seq[0])
        for c in _chunks(x2.shape[1]):
            v[c] = _forward_chunk(x2[:, c], h_seq[:, c], spikes[:, c], k, spec)
        ctx.save_for_backward(h_seq, k, x2 if spec.kind == "plif" and spec.decay_input else None)
        ctx.spec, ctx.surrogate_grad, ctx.x_shape = spec, surrogate_grad, x.shape
        v_last, h_out = v.reshape(x.shape[1:]), h_seq.reshape(x.shape)
        ctx.mark_non_differentiable(v_last, h_out)
        return spikes.reshape(x.shape), v_last, h_out

    @staticmethod
    def backward(ctx, g_spikes, _g_v, _g_h):
        h_seq, k, xs = ctx.saved_tensors
        spec: Spec = ctx.spec
        g2 = g_spikes.reshape(h_seq.shape)
        gx = torch.empty(h_seq.shape, dtype=g_spikes.dtype, device=h_seq.device)
        gk = None
        for c in _chunks(h_seq.shape[1]):
            part = _backward_chunk(g2[:, c], h_seq[:, c], None if xs is None else xs[:, c],
                                   gx[:, c], k, spec, ctx.surrogate_grad)
            gk = part if gk is None else gk + part
        gk_out = gk.to(k.dtype).reshape(k.shape) if (gk is not None and ctx.needs_input_grad[1]) else None
        return gx.reshape(ctx.x_shape), gk_out, None, None


def lif_family_torch(x: Tensor, k: Tensor, spec: Spec, surrogate_grad):
    """``x [T, ...]`` -> ``(spikes [T, ...] in x.dtype, v_last, H [T, ...])`` (state >= fp32).

    ``k`` is ``sigmoid(w)`` for PLIF (its gradient flows back to ``w``), a dummy otherwise;
    ``surrogate_grad(u)`` is the surrogate derivative (the neuron's ``surrogate.grad``).
    """
    return _LIFTorch.apply(x, k, spec, surrogate_grad)
