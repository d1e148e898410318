"""Fused Triton kernels: one forward and one backward launch over all T per neuron call.

Layout: the input ``x_seq [T, ...]`` is viewed as ``[T, N]`` (contiguous); one program owns
``BLOCK`` neurons and runs the whole time loop in registers (``T`` is a compile-time constant,
so the loop is unrolled). State is fp32 whatever the I/O dtype (fp32, fp16, bf16).

Memory traffic per element-step (fp32 I/O), the NEURONS.md section 4 design:

* forward reads X, writes S and H (fp32): 12 B (8 B with bf16 I/O + 4 B for H);
* backward reads gS and H, writes gX: 12 B (PLIF with decay_input also re-reads X and H_{t-1}
  to rebuild ``X_t - (V_{t-1} - V_r)`` for the ``w`` gradient; CLIF also saves/reads M; GLIF
  re-reads X and V_{t-1} for its conductance and gate gradients).

Learnable scalars (PLIF's w, KLIF's k, GLIF's eight raws) get their gradient as one partial
sum per program, added up on the host: deterministic, no atomics.

Three kernel families cover the fused neurons:

* ``_lif_fwd`` / ``_lif_bwd``: LIF, IF (hard/soft), PLIF and KLIF, selected by constexpr flags
  (``CHARGE``: 0 IF ``H = V + X``, 1 LIF ``/tau``, 2 PLIF ``* sigmoid(w)``; ``KLIF`` adds
  ``F = ReLU(k H)``);
* ``_clif_fwd`` / ``_clif_bwd``: CLIF with its complementary potential M;
* ``_glif_fwd`` / ``_glif_bwd``: GLIF (layer-wise), its gates folded into per-call scalars.

Exactness. Spikes must equal reference.py's bit for bit, so the forward repeats its operations
in its order. Two device details matter: torch on CUDA divides by a Python scalar as a multiply
by the fp32 reciprocal (``RECIP=True`` there; the interpreter on CPU uses true division, as
torch's CPU kernel does), and Triton's FMA contraction is switched off on the GPU
(``enable_fp_fusion=False``) because eager torch rounds each multiply and add separately.
Gradients follow the chain rule of the same graph (NEURONS.md 1.1 "Gradient") and agree with
autograd through the reference within float tolerance.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from stlib.neurons.kernels.spec import Spec

__all__ = ["lif_family", "clif", "glif", "interpreting"]

_CHARGE = {"if": 0, "lif": 1, "klif": 1, "plif": 2}


@triton.jit
def _surrogate_grad(u, alpha, half_width, atan_c, SURR: tl.constexpr):
    """psi(u): 0 sigmoid, 1 atan, 2 rectangle, 3 triangle (stlib/neurons/surrogate.py)."""
    if SURR == 0:
        sg = tl.sigmoid(alpha * u)
        d = alpha * sg * (1.0 - sg)
    elif SURR == 1:
        z = atan_c * u
        d = (alpha * 0.5) / (1.0 + z * z)
    elif SURR == 2:
        d = tl.where(tl.abs(u) < half_width, alpha, 0.0)
    else:
        d = tl.maximum(alpha - alpha * alpha * tl.abs(u), 0.0)
    return d


@triton.jit
def _sigmoid(z, RECIP: tl.constexpr):
    """sigmoid as torch computes it on each device: CUDA ``1 / (1 + expf(-z))`` with the exact
    libdevice exp and IEEE division (Triton's own ``tl.sigmoid`` uses a fast approximate exp);
    in the interpreter (CPU) numpy's. CLIF's state goes through it, so it feeds later spikes."""
    if RECIP:  # on the GPU
        r = tl.math.div_rn(1.0, 1.0 + libdevice.exp(-z))
    else:
        r = tl.sigmoid(z)
    return r


@triton.jit
def _div_tau(a, tau, inv_tau, RECIP: tl.constexpr):
    if RECIP:
        r = a * inv_tau
    else:
        r = tl.math.div_rn(a, tau)
    return r


@triton.jit
def _lif_fwd(x_ptr, s_ptr, h_ptr, vlast_ptr, k_ptr, N, v_th, v_r, tau, inv_tau,
             T: tl.constexpr, CHARGE: tl.constexpr, DECAY_INPUT: tl.constexpr, HARD: tl.constexpr,
             KLIF: tl.constexpr, SCALE_RESET: tl.constexpr, RECIP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = tl.zeros([BLOCK], tl.float32) + v_r  # V_0 = V_r (0 for soft reset)
    if CHARGE == 2 or KLIF:
        k = tl.load(k_ptr).to(tl.float32)
    for t in tl.static_range(T):
        x = tl.load(x_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        # charge, in reference.py's operation order
        if CHARGE == 0:
            h = v + x
        elif CHARGE == 1:
            if DECAY_INPUT:
                h = v + _div_tau(x - (v - v_r), tau, inv_tau, RECIP)
            else:
                h = v - _div_tau(v - v_r, tau, inv_tau, RECIP) + x
        else:
            if DECAY_INPUT:
                h = v + k * (x - (v - v_r))
            else:
                h = v - k * (v - v_r) + x
        tl.store(h_ptr + t * N + offs, h, mask=mask)
        if KLIF:
            f = tl.maximum(k * h, 0.0)
        else:
            f = h
        spike = (f - v_th) >= 0.0
        s = spike.to(tl.float32)
        tl.store(s_ptr + t * N + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
        # reset (on F/k and th/k for KLIF scale_reset; torch computes th/k as (1/k)*th)
        if KLIF and SCALE_RESET:
            fr = tl.math.div_rn(f, k)
            th = tl.math.div_rn(1.0, k) * v_th
        else:
            fr = f
            th = v_th
        if HARD:
            v = fr * (1.0 - s) + v_r * s
        else:
            v = fr - th * s
    tl.store(vlast_ptr + offs, v, mask=mask)


@triton.jit
def _lif_bwd(gs_ptr, h_ptr, x_ptr, gx_ptr, gk_ptr, k_ptr, N, v_th, v_r, tau, inv_tau,
             alpha, half_width, atan_c,
             T: tl.constexpr, CHARGE: tl.constexpr, DECAY_INPUT: tl.constexpr, HARD: tl.constexpr,
             KLIF: tl.constexpr, SCALE_RESET: tl.constexpr, DETACH: tl.constexpr,
             SURR: tl.constexpr, RECIP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    gv = tl.zeros([BLOCK], tl.float32)  # dL/dV_t carried backwards; V_T is detached (0)
    gk = tl.zeros([BLOCK], tl.float32)
    if CHARGE == 2 or KLIF:
        k = tl.load(k_ptr).to(tl.float32)
    for i in tl.static_range(T):
        t = T - 1 - i
        h = tl.load(h_ptr + t * N + offs, mask=mask, other=0.0)
        gs = tl.load(gs_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        if KLIF:
            p = k * h
            f = tl.maximum(p, 0.0)
        else:
            f = h
        u = f - v_th
        s = (u >= 0.0).to(tl.float32)
        psi = _surrogate_grad(u, alpha, half_width, atan_c, SURR)
        if KLIF and SCALE_RESET:
            inv_k = tl.math.div_rn(1.0, k)
            fr = tl.math.div_rn(f, k)
            th = inv_k * v_th
        else:
            fr = f
            th = v_th
        # reset: hard V = Fr (1 - S) + V_r S, soft V = Fr - th S
        if HARD:
            gfr = gv * (1.0 - s)
            if not DETACH:
                gs = gs + gv * (v_r - fr)
        else:
            gfr = gv
            if not DETACH:
                gs = gs - gv * th
        if KLIF:
            if SCALE_RESET:
                gf = gs * psi + gfr * inv_k
                gk += -gfr * fr * inv_k  # d(F/k)/dk = -F/k^2
                if not HARD:
                    gk += gv * s * th * inv_k  # d(-(th/k) S)/dk = th S / k^2
            else:
                gf = gs * psi + gfr
            gp = tl.where(p > 0.0, gf, 0.0)  # ReLU
            gk += gp * h
            gh = gp * k
        else:
            gh = gs * psi + gfr
        # charge
        if CHARGE == 0:
            gx = gh
            gv = gh
        elif CHARGE == 1:
            gsc = _div_tau(gh, tau, inv_tau, RECIP)
            if DECAY_INPUT:
                gx = gsc
            else:
                gx = gh
            gv = gh - gsc
        else:
            # PLIF: dH/dk needs V_{t-1}, rebuilt from H_{t-1} and its spike
            if t == 0:
                vprev = tl.zeros([BLOCK], tl.float32) + v_r
            else:
                hp = tl.load(h_ptr + (t - 1) * N + offs, mask=mask, other=0.0)
                sp = ((hp - v_th) >= 0.0).to(tl.float32)
                if HARD:
                    vprev = hp * (1.0 - sp) + v_r * sp
                else:
                    vprev = hp - v_th * sp
            if DECAY_INPUT:
                x = tl.load(x_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
                gk += gh * (x - (vprev - v_r))
                gx = gh * k
            else:
                gk += -gh * (vprev - v_r)
                gx = gh
            gv = gh - gh * k
        tl.store(gx_ptr + t * N + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
    if CHARGE == 2 or KLIF:
        gk = tl.where(mask, gk, 0.0)
        tl.store(gk_ptr + pid, tl.sum(gk, axis=0))  # one partial per program: deterministic


@triton.jit
def _clif_fwd(x_ptr, s_ptr, h_ptr, m_ptr, vlast_ptr, N, v_th, keep, tau, inv_tau,
              T: tl.constexpr, RECIP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = tl.zeros([BLOCK], tl.float32)
    m = tl.zeros([BLOCK], tl.float32)
    for t in tl.static_range(T):
        x = tl.load(x_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        h = keep * v + x                                       # 1. H = (1 - 1/tau) V + X
        m = m * _sigmoid(_div_tau(h, tau, inv_tau, RECIP), RECIP)    # 2. M' = M sigmoid(H / tau)
        s = ((h - v_th) >= 0.0).to(tl.float32)                 # 3. S
        m = m + s                                              # 4. M = M' + S
        v = h - s * (v_th + _sigmoid(m, RECIP))                     # 5. V = H - S (th + sigmoid(M))
        tl.store(h_ptr + t * N + offs, h, mask=mask)
        tl.store(m_ptr + t * N + offs, m, mask=mask)
        tl.store(s_ptr + t * N + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
    tl.store(vlast_ptr + offs, v, mask=mask)


@triton.jit
def _clif_bwd(gs_ptr, h_ptr, m_ptr, gx_ptr, N, v_th, keep, tau, inv_tau, alpha, half_width, atan_c,
              T: tl.constexpr, DETACH: tl.constexpr, SURR: tl.constexpr, RECIP: tl.constexpr,
              BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    gv = tl.zeros([BLOCK], tl.float32)
    gm = tl.zeros([BLOCK], tl.float32)
    for i in tl.static_range(T):
        t = T - 1 - i
        h = tl.load(h_ptr + t * N + offs, mask=mask, other=0.0)
        m = tl.load(m_ptr + t * N + offs, mask=mask, other=0.0)
        if t == 0:
            mprev = tl.zeros([BLOCK], tl.float32)
        else:
            mprev = tl.load(m_ptr + (t - 1) * N + offs, mask=mask, other=0.0)
        gs = tl.load(gs_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        u = h - v_th
        s = (u >= 0.0).to(tl.float32)
        psi = _surrogate_grad(u, alpha, half_width, atan_c, SURR)
        sm = _sigmoid(m, RECIP)
        # 5. V = H - S (th + sigmoid(M)); the S here is detached with detach_reset
        gh = gv
        if not DETACH:
            gs = gs - gv * (v_th + sm)
        gm = gm - gv * s * sm * (1.0 - sm)
        # 4. M = M' + S (never detached)
        gs = gs + gm
        gh = gh + gs * psi
        # 2. M' = M_{t-1} sigmoid(H / tau)
        z = _sigmoid(_div_tau(h, tau, inv_tau, RECIP), RECIP)
        gh = gh + _div_tau(gm * mprev * z * (1.0 - z), tau, inv_tau, RECIP)
        gm = gm * z
        # 1. H = keep V + X
        tl.store(gx_ptr + t * N + offs, gh.to(gx_ptr.dtype.element_ty), mask=mask)
        gv = gh * keep


@triton.jit
def _glif_fwd(x_ptr, s_ptr, v_ptr, vlast_ptr, slast_ptr, p_ptr, c_ptr, N,
              T: tl.constexpr, BLOCK: tl.constexpr):
    """GLIF: V_t = ((A V_{t-1}) (1 - g S_{t-1}) - L) + X_t c_t - G S_{t-1}; S_t = 1[V_t - th >= 0].
    ``p = [A, L, G, g, th]`` and ``c [T]`` are the host's scalars (A = 1 - alpha(1 - tau),
    L = (1 - alpha) leak, G = (1 - gamma) V_sub, c_t = 1 - beta (1 - C_t)), computed there with
    reference.py's torch ops so they are bit-equal."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    a_ = tl.load(p_ptr + 0)
    l_ = tl.load(p_ptr + 1)
    g_sub = tl.load(p_ptr + 2)
    g_ = tl.load(p_ptr + 3)
    th = tl.load(p_ptr + 4)
    v = tl.zeros([BLOCK], tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    for t in tl.static_range(T):
        x = tl.load(x_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_ptr + t)
        v = ((a_ * v) * (1.0 - g_ * s) - l_) + x * c - g_sub * s
        s = ((v - th) >= 0.0).to(tl.float32)
        tl.store(v_ptr + t * N + offs, v, mask=mask)
        tl.store(s_ptr + t * N + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
    tl.store(vlast_ptr + offs, v, mask=mask)
    tl.store(slast_ptr + offs, s, mask=mask)


@triton.jit
def _glif_bwd(gs_ptr, v_ptr, x_ptr, gx_ptr, gp_ptr, p_ptr, c_ptr, N, alpha, half_width, atan_c,
              T: tl.constexpr, DETACH: tl.constexpr, SURR: tl.constexpr, BLOCK: tl.constexpr):
    """Reverse time. Per program, partial sums of the gradients of [A, L, G, g, th, c_0..c_{T-1}]
    go to row ``pid`` of ``gp [programs, 5 + T]``."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    a_ = tl.load(p_ptr + 0)
    g_sub = tl.load(p_ptr + 2)
    g_ = tl.load(p_ptr + 3)
    th = tl.load(p_ptr + 4)
    g_next_v = tl.zeros([BLOCK], tl.float32)  # dL/dV_t through V_{t+1}
    g_next_s = tl.zeros([BLOCK], tl.float32)  # dL/dS_t through V_{t+1} (0 with detach_reset)
    ga = tl.zeros([BLOCK], tl.float32)
    gl = tl.zeros([BLOCK], tl.float32)
    gsub = tl.zeros([BLOCK], tl.float32)
    gg = tl.zeros([BLOCK], tl.float32)
    gth = tl.zeros([BLOCK], tl.float32)
    for i in tl.static_range(T):
        t = T - 1 - i
        v = tl.load(v_ptr + t * N + offs, mask=mask, other=0.0)
        u = v - th
        psi = _surrogate_grad(u, alpha, half_width, atan_c, SURR)
        gs = tl.load(gs_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32) + g_next_s
        gu = tl.where(mask, gs * psi, 0.0)
        gth -= gu
        gv = tl.where(mask, g_next_v + gu, 0.0)
        x = tl.load(x_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_ptr + t)
        tl.store(gx_ptr + t * N + offs, (gv * c).to(gx_ptr.dtype.element_ty), mask=mask)
        tl.store(gp_ptr + pid * (5 + T) + 5 + t, tl.sum(gv * x, axis=0))
        gl -= gv
        if t > 0:
            vp = tl.load(v_ptr + (t - 1) * N + offs, mask=mask, other=0.0)
            sp = ((vp - th) >= 0.0).to(tl.float32)
            keep = 1.0 - g_ * sp
            ga += gv * vp * keep
            gg -= gv * (a_ * vp) * sp
            gsub -= gv * sp
            g_next_v = gv * a_ * keep
            if not DETACH:
                g_next_s = gv * (-(a_ * vp) * g_ - g_sub)
    base = gp_ptr + pid * (5 + T)
    tl.store(base + 0, tl.sum(ga, axis=0))
    tl.store(base + 1, tl.sum(gl, axis=0))
    tl.store(base + 2, tl.sum(gsub, axis=0))
    tl.store(base + 3, tl.sum(gg, axis=0))
    tl.store(base + 4, tl.sum(gth, axis=0))


# --------------------------------------------------------------------------- launchers
def interpreting() -> bool:
    """Whether these kernels run in Triton's CPU interpreter: ``TRITON_INTERPRET=1`` was set when
    this module was imported (``@triton.jit`` reads it once, at decoration)."""
    return not isinstance(_lif_fwd, triton.runtime.JITFunction)


def _launch_opts(x: torch.Tensor) -> tuple[int, dict]:
    """Block size and launch options: on the GPU 1024 neurons per program over 4 warps, FMA
    contraction off (see docstring); in the interpreter one block as large as the data (up to
    4096), since it evaluates every lane of a block with numpy, masked or not."""
    if x.is_cuda:
        return 1024, {"num_warps": 4, "enable_fp_fusion": False}
    return min(4096, triton.next_power_of_2(x.shape[-1])), {}


def _tau_args(spec: Spec, x: torch.Tensor) -> tuple[float, float, bool]:
    tau = 2.0 if spec.tau is None else spec.tau
    # torch on CUDA: a * fp32(1 / fp32(tau)); on CPU: a / tau (true division)
    inv = float(torch.tensor(1.0, dtype=torch.float32) / torch.tensor(tau, dtype=torch.float32))
    return tau, inv, bool(x.is_cuda)


class _LIFFamily(torch.autograd.Function):
    """Fused LIF / IF / PLIF / KLIF over ``x [T, N]``; ``k`` is sigmoid(w) (PLIF), k (KLIF) or a dummy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: torch.Tensor, spec: Spec):
        T, N = x.shape
        block, opts = _launch_opts(x)
        spikes = torch.empty_like(x)
        h = torch.empty((T, N), dtype=torch.float32, device=x.device)
        v_last = torch.empty((N,), dtype=torch.float32, device=x.device)
        tau, inv_tau, recip = _tau_args(spec, x)
        charge = _CHARGE[spec.kind]
        _lif_fwd[(triton.cdiv(N, block),)](
            x, spikes, h, v_last, k, N, spec.v_threshold, spec.v_reset, tau, inv_tau,
            T=T, CHARGE=charge, DECAY_INPUT=spec.decay_input, HARD=spec.hard, KLIF=spec.kind == "klif",
            SCALE_RESET=spec.scale_reset, RECIP=recip, BLOCK=block, **opts)
        keep_x = spec.kind == "plif" and spec.decay_input  # the w gradient needs X_t
        ctx.save_for_backward(h, k, x if keep_x else None)
        ctx.spec, ctx.x_dtype = spec, x.dtype
        ctx.mark_non_differentiable(v_last, h)
        return spikes, v_last, h

    @staticmethod
    def backward(ctx, g_spikes, _g_vlast, _g_h):
        h, k, x = ctx.saved_tensors
        spec: Spec = ctx.spec
        T, N = h.shape
        block, opts = _launch_opts(h)
        grid = triton.cdiv(N, block)
        gx = torch.empty((T, N), dtype=ctx.x_dtype, device=h.device)
        gk_part = torch.zeros((grid,), dtype=torch.float32, device=h.device)
        tau, inv_tau, recip = _tau_args(spec, h)
        alpha, half_width, atan_c = spec.surrogate_consts
        _lif_bwd[(grid,)](
            g_spikes.contiguous(), h, h if x is None else x, gx, gk_part, k, N, spec.v_threshold,
            spec.v_reset, tau, inv_tau, alpha, half_width, atan_c,
            T=T, CHARGE=_CHARGE[spec.kind], DECAY_INPUT=spec.decay_input, HARD=spec.hard,
            KLIF=spec.kind == "klif", SCALE_RESET=spec.scale_reset, DETACH=spec.detach_reset,
            SURR=spec.surrogate, RECIP=recip, BLOCK=block, **opts)
        gk = gk_part.sum().to(k.dtype).reshape(k.shape) if ctx.needs_input_grad[1] else None
        return gx, gk, None


class _CLIF(torch.autograd.Function):
    """Fused CLIF over ``x [T, N]``; saves H and M (fp32)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, spec: Spec):
        T, N = x.shape
        block, opts = _launch_opts(x)
        spikes = torch.empty_like(x)
        h = torch.empty((T, N), dtype=torch.float32, device=x.device)
        m = torch.empty((T, N), dtype=torch.float32, device=x.device)
        v_last = torch.empty((N,), dtype=torch.float32, device=x.device)
        tau, inv_tau, recip = _tau_args(spec, x)
        keep = 1.0 - 1.0 / spec.tau
        _clif_fwd[(triton.cdiv(N, block),)](x, spikes, h, m, v_last, N, spec.v_threshold, keep, tau, inv_tau,
                                             T=T, RECIP=recip, BLOCK=block, **opts)
        ctx.save_for_backward(h, m)
        ctx.spec, ctx.x_dtype = spec, x.dtype
        ctx.mark_non_differentiable(v_last, h, m)
        return spikes, v_last, h, m

    @staticmethod
    def backward(ctx, g_spikes, _g_vlast, _g_h, _g_m):
        h, m = ctx.saved_tensors
        spec: Spec = ctx.spec
        T, N = h.shape
        block, opts = _launch_opts(h)
        gx = torch.empty((T, N), dtype=ctx.x_dtype, device=h.device)
        tau, inv_tau, recip = _tau_args(spec, h)
        alpha, half_width, atan_c = spec.surrogate_consts
        _clif_bwd[(triton.cdiv(N, block),)](
            g_spikes.contiguous(), h, m, gx, N, spec.v_threshold, 1.0 - 1.0 / spec.tau, tau, inv_tau,
            alpha, half_width, atan_c, T=T, DETACH=spec.detach_reset, SURR=spec.surrogate, RECIP=recip,
            BLOCK=block, **opts)
        return gx, None


def lif_family(x: torch.Tensor, k: torch.Tensor, spec: Spec):
    """``x [T, N]`` (contiguous) -> ``(spikes [T, N] in x.dtype, v_last [N] fp32, H [T, N] fp32)``."""
    return _LIFFamily.apply(x, k, spec)


def clif(x: torch.Tensor, spec: Spec):
    """``x [T, N]`` -> ``(spikes, v_last [N], H [T, N], M [T, N])`` (state fp32)."""
    return _CLIF.apply(x, spec)


class _GLIF(torch.autograd.Function):
    """Fused GLIF over ``x [T, N]``; ``p = [A, L, G, g, th]`` and ``c [T]`` carry autograd to the raws."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor, c: torch.Tensor, spec: Spec):
        T, N = x.shape
        block, opts = _launch_opts(x)
        spikes = torch.empty_like(x)
        v = torch.empty((T, N), dtype=torch.float32, device=x.device)
        v_last = torch.empty((N,), dtype=torch.float32, device=x.device)
        s_last = torch.empty((N,), dtype=torch.float32, device=x.device)
        p, c = p.detach().contiguous(), c.detach().contiguous()
        _glif_fwd[(triton.cdiv(N, block),)](x, spikes, v, v_last, s_last, p, c, N, T=T, BLOCK=block, **opts)
        ctx.save_for_backward(x, v, p, c)
        ctx.spec = spec
        ctx.mark_non_differentiable(v_last, s_last, v)
        return spikes, v_last, s_last, v

    @staticmethod
    def backward(ctx, g_spikes, _g_vlast, _g_slast, _g_v):
        x, v, p, c = ctx.saved_tensors
        spec: Spec = ctx.spec
        T, N = v.shape
        block, opts = _launch_opts(v)
        grid = triton.cdiv(N, block)
        gx = torch.empty_like(x)
        gp = torch.empty((grid, 5 + T), dtype=torch.float32, device=v.device)
        alpha, half_width, atan_c = spec.surrogate_consts
        _glif_bwd[(grid,)](g_spikes.contiguous(), v, x, gx, gp, p, c, N, alpha, half_width, atan_c,
                           T=T, DETACH=spec.detach_reset, SURR=spec.surrogate, BLOCK=block, **opts)
        sums = gp.sum(0)
        return gx, sums[:5], sums[5:], None


def glif(x: torch.Tensor, p: torch.Tensor, c: torch.Tensor, spec: Spec):
    """``x [T, N]`` -> ``(spikes, V_T [N], S_T [N], V [T, N])``; see :func:`_glif_fwd` for p and c."""
    return _GLIF.apply(x, p, c, spec)
