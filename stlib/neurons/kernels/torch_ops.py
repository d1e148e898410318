"""Fused multi-step LIF / IF / PLIF in plain torch: one ``autograd.Function`` per call.

The CPU path. reference.py's loop builds about ten autograd nodes per step and keeps every
intermediate alive for backward; this function runs the same forward operations (so the
spikes and H are bit-identical) under ``no_grad``, saves only H (plus X for PLIF's ``w``
gradient) and runs a hand-written backward in reverse time (NEURONS.md 1.1 "Gradient", 4 "CPU
and other speed tricks"). The state dtype is ``promote(x.dtype, float32)``, as in reference.py.
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


def _hard_reset(h: Tensor, fired: Tensor, v_reset: float) -> Tensor:
    """``H (1 - S) + V_r S`` for a boolean spike mask (exact: one term is always zero)."""
    v = h * fired.logical_not()
    return v.add_(fired, alpha=v_reset) if v_reset != 0.0 else v


def _spike_term(gs: Tensor, u: Tensor, spec: Spec, surrogate_grad) -> Tensor:
    """``gS * psi(u)``; the sigmoid case in three passes (aten's fused sigmoid_backward)."""
    if spec.surrogate == 0:
        sg = torch.sigmoid(u * spec.alpha)
        return torch.ops.aten.sigmoid_backward(gs, sg).mul_(spec.alpha)
    return gs * surrogate_grad(u)


class _LIFTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, k: Tensor, spec: Spec, surrogate_grad):
        state_dtype = torch.promote_types(x.dtype, torch.float32)
        # half inputs are converted one step at a time (exact: bf16/fp16 -> fp32 is lossless);
        # mixed-dtype elementwise ops take torch's slow, unvectorised casting path on CPU
        h_seq = torch.empty(x.shape, dtype=state_dtype, device=x.device)
        spikes = torch.empty_like(x)
        v = torch.full_like(h_seq[0], spec.v_reset)
        th = spec.v_threshold
        for t in range(x.shape[0]):
            h = h_seq[t]
            _charge_into(h, v, x[t].to(state_dtype), k, spec)
            fired = h >= th  # == (H - th >= 0): IEEE subtraction keeps the sign and is 0 only at H == th
            spikes[t] = fired
            # the reference's reset, value for value (up to the sign of a zero): hard H (1 - S) + V_r S,
            # soft H - th S; a multiply by the boolean mask is torch's fastest CPU select
            v = _hard_reset(h, fired, spec.v_reset) if spec.hard else torch.sub(h, spikes[t], alpha=th)
        ctx.save_for_backward(h_seq, k, x if spec.kind == "plif" and spec.decay_input else None)
        ctx.spec, ctx.surrogate_grad, ctx.x_dtype = spec, surrogate_grad, x.dtype
        ctx.mark_non_differentiable(v, h_seq)
        return spikes, v, h_seq

    @staticmethod
    def backward(ctx, g_spikes, _g_v, _g_h):
        h_seq, k, xs = ctx.saved_tensors
        spec: Spec = ctx.spec
        th, v_r = spec.v_threshold, spec.v_reset
        same = ctx.x_dtype == h_seq.dtype
        gx = torch.empty(h_seq.shape, dtype=ctx.x_dtype, device=h_seq.device)  # written step by step, cast on the way
        gv = torch.zeros_like(h_seq[0])
        gk = torch.zeros((), dtype=h_seq.dtype, device=h_seq.device) if spec.kind == "plif" else None
        for t in range(h_seq.shape[0] - 1, -1, -1):
            h = h_seq[t]
            u = h - th
            gs = g_spikes[t].to(h_seq.dtype)
            if spec.hard:  # V = H (1 - S) + V_r S
                gh = gv * (u < 0)
                if not spec.detach_reset:
                    gs = gs + gv * (v_r - h)
            else:          # V = H - th S
                gh = gv.clone()
                if not spec.detach_reset:
                    gs = gs - gv * th
            gh += _spike_term(gs, u, spec, ctx.surrogate_grad)
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
                    fp = hp >= th
                    v_prev = _hard_reset(hp, fp, v_r) if spec.hard else torch.where(fp, hp - th, hp)
                if spec.decay_input:
                    gk = gk + (gh * (xs[t].to(h.dtype) - (v_prev - v_r))).sum()
                    gx[t] = gh * k
                else:
                    gk = gk - (gh * (v_prev - v_r)).sum()
                    gx[t] = gh
                gv = gh - gh * k
        gk_out = gk.to(k.dtype).reshape(k.shape) if (gk is not None and ctx.needs_input_grad[1]) else None
        return gx, gk_out, None, None


def lif_family_torch(x: Tensor, k: Tensor, spec: Spec, surrogate_grad):
    """``x [T, ...]`` -> ``(spikes [T, ...] in x.dtype, v_last, H [T, ...])`` (state >= fp32).

    ``k`` is ``sigmoid(w)`` for PLIF (its gradient flows back to ``w``), a dummy otherwise;
    ``surrogate_grad(u)`` is the surrogate derivative (the neuron's ``surrogate.grad``).
    """
    return _LIFTorch.apply(x, k, spec, surrogate_grad)
