"""Plain-torch multi-step spiking neurons: the executable specification.

Every neuron maps ``x_seq [T, ...] -> spikes [T, ...]`` (same shape and dtype, values
exactly 0/1) with a Python loop over T and autograd through the surrogate. The formulas,
defaults and order of operations follow NEURONS.md sections 1.0-1.6 (spikingjelly 2.0
conventions unless stated). These modules are the ground truth that any fused kernel
(``stlib.neurons.kernels``) must match.

Contract shared by all neurons (see :class:`BaseNeuron`):

* State (``v``; plus ``m`` for CLIF and the previous spike for GLIF) starts fresh at every
  ``forward`` call, so a call is a pure function of its input; no ``reset_net`` is needed.
* State math runs in float32 for half/bfloat16 inputs (float64 stays float64); spikes are
  cast back to the input dtype.
* After ``forward``: ``self.v`` holds the last membrane state (detached) and, when
  ``store_v_seq`` is set, ``self.v_seq [T, ...]`` holds the pre-reset potential H_t (detached).
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from stlib.neurons import kernels
from stlib.neurons.surrogate import create_surrogate

__all__ = ["BaseNeuron", "LIF", "IFHard", "IFSoft", "PLIF", "CLIF", "GLIF", "KLIF", "MultiSpike",
           "QCFS", "ConvertedIF"]


def _check_tau(cls_name: str, name: str, tau: float) -> float:
    tau = float(tau)
    if not tau > 1.0:
        raise ValueError(f"{cls_name}: {name} must be > 1 (1/{name} is the leak per step), got {tau}")
    return tau


class BaseNeuron(nn.Module):
    """Multi-step neuron base: one loop over T of ``charge -> fire -> reset``.

    ``forward(x_seq [T, ...]) -> spikes [T, ...]``. Per step t:

    * ``charge(x_t, t)`` sets ``self.v`` to the pre-reset potential H_t (subclasses);
    * ``fire()`` returns ``S_t = surrogate(H_t - v_threshold)`` (Heaviside forward, ``>=``);
    * ``reset(S_t)``: hard ``V_t = H_t (1 - S_t) + v_reset S_t`` when ``v_reset`` is a float,
      soft ``V_t = H_t - v_threshold S_t`` when it is ``None``; with ``detach_reset`` the spike
      is detached in the reset only (its surrogate gradient still reaches the output).

    Subclasses override ``charge`` (and ``init_state`` / ``reset`` when they carry more state).
    ``stateless`` marks a neuron whose steps do not interact (:class:`MultiSpike`).
    ``requires_T`` says whether the constructor needs the number of time steps (GLIF).
    ``default_surrogate`` is the registry name used when ``surrogate=None``.
    ``kernel_kind`` names the fused kernel family that re-implements a class's dynamics
    (``stlib.neurons.kernels``); it is read off the exact class only, so a subclass that may
    override a step runs this reference loop unless it declares a kind itself.
    """

    requires_T: ClassVar[bool] = False
    stateless: ClassVar[bool] = False  # True: each step on its own, nothing carried over T
    default_surrogate: ClassVar[str] = "sigmoid"
    kernel_kind: ClassVar[str | None] = None
    _backend: str = "auto"

    def __init__(self, *, v_threshold: float, v_reset: float | None, detach_reset: bool,
                 surrogate: str | nn.Module | None, alpha: float | None, store_v_seq: bool):
        super().__init__()
        self._init_threshold(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.detach_reset = bool(detach_reset)
        self.surrogate = create_surrogate(self.default_surrogate if surrogate is None else surrogate, alpha)
        self.store_v_seq = bool(store_v_seq)
        self.v: Tensor | None = None
        self.v_seq: Tensor | None = None

    def _init_threshold(self, v_threshold: float) -> None:
        self.v_threshold = float(v_threshold)

    # ----------------------------------------------------------------- the three steps
    def init_state(self, x0: Tensor) -> None:
        """Fresh state shaped like one step ``x0``: ``v = v_reset`` (hard) or 0 (soft)."""
        self.v = torch.full_like(x0, 0.0 if self.v_reset is None else self.v_reset)

    def charge(self, x: Tensor, t: int) -> None:  # x [...], one step
        raise NotImplementedError

    def fire(self) -> Tensor:
        return self.surrogate(self.v - self.v_threshold)

    def reset(self, spike: Tensor) -> None:
        s = spike.detach() if self.detach_reset else spike
        if self.v_reset is None:
            self.v = self.v - self.v_threshold * s
        elif self.v_reset == 0.0:  # the V_r S term is zero (skipped: two passes fewer)
            self.v = self.v * (1.0 - s)
        else:
            self.v = self.v * (1.0 - s) + self.v_reset * s

    @property
    def backend(self) -> str:
        """``"auto"`` (fused on CUDA / fast CPU path when supported), ``"reference"`` (this
        loop) or ``"triton"`` (fused kernels, ``ValueError`` if unsupported); see
        :mod:`stlib.neurons.kernels`."""
        return self._backend

    @backend.setter
    def backend(self, value: str | None) -> None:
        value = "auto" if value is None else value
        if value not in ("auto", "reference", "triton"):
            raise ValueError(f"{type(self).__name__}: unknown backend {value!r}; valid: auto, reference, triton")
        self._backend = value

    # ----------------------------------------------------------------- the loop
    def check_input(self, x_seq: Tensor) -> None:
        if not torch.is_tensor(x_seq) or not x_seq.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point tensor x_seq [T, ...], "
                            f"got {getattr(x_seq, 'dtype', type(x_seq))}")
        if x_seq.dim() < 1 or x_seq.shape[0] == 0:
            raise ValueError(f"{type(self).__name__} expects x_seq [T, ...] with T >= 1, got shape {tuple(x_seq.shape)}")

    def forward(self, x_seq: Tensor) -> Tensor:
        """``x_seq [T, ...] -> spikes [T, ...]`` (same dtype, values 0/1)."""
        self.check_input(x_seq)
        fused = kernels.select(self, x_seq)
        if fused is not None:  # same contract, one fused call (bit-equal spikes)
            return fused(self, x_seq)
        x = x_seq.to(torch.promote_types(x_seq.dtype, torch.float32))  # state math in >= fp32
        self.init_state(x[0])
        spikes, h_seq = [], []
        # unbind: one backward node for all steps (x[t] would scatter each step's gradient
        # into its own full-size zero tensor)
        for t, x_t in enumerate(x.unbind(0)):
            self.charge(x_t, t)
            if self.store_v_seq:
                h_seq.append(self.v.detach())
            spike = self.fire()
            self.reset(spike)
            spikes.append(spike)
        self.v = self.v.detach()
        self.v_seq = torch.stack(h_seq) if self.store_v_seq else None
        return torch.stack(spikes).to(x_seq.dtype)

    def _reset_repr(self) -> str:
        return (f"v_threshold={_fmt(self.v_threshold)}, v_reset={self.v_reset}, "
                f"detach_reset={self.detach_reset}")

    def extra_repr(self) -> str:
        return self._reset_repr()


def _fmt(value) -> str:
    return f"{float(value.detach()):.6g}" if torch.is_tensor(value) else str(value)


class LIF(BaseNeuron):
    """Leaky integrate-and-fire, spikingjelly ``LIFNode`` (multi-step); Spikformer/SDT/QKFormer's neuron.

    ``x_seq [T, ...] -> spikes [T, ...]``. With V_0 = V_r (0 for soft reset, where V_r := 0 in
    the charge):

    * decay_input=True:  ``H_t = V_{t-1} + (X_t - (V_{t-1} - V_r)) / tau``
    * decay_input=False: ``H_t = V_{t-1} - (V_{t-1} - V_r) / tau + X_t``
    * ``S_t = 1[H_t >= v_threshold]`` (surrogate gradient, default Sigmoid(alpha=4))
    * hard reset ``V_t = H_t (1 - S_t) + V_r S_t``; soft (``v_reset=None``) ``V_t = H_t - v_threshold S_t``.

    Defaults are spikingjelly's (tau 2, threshold 1, reset 0, detach_reset False); the
    transformer papers use ``detach_reset=True``. ``tau`` must be > 1.
    """

    kernel_kind = "lif"

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, *, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None, detach_reset: bool = False, store_v_seq: bool = False):
        super().__init__(v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        self.tau = _check_tau(type(self).__name__, "tau", tau)
        self.decay_input = bool(decay_input)

    def charge(self, x: Tensor, t: int) -> None:
        v_r = 0.0 if self.v_reset is None else self.v_reset
        if self.decay_input:
            self.v = self.v + (x - (self.v - v_r)) / self.tau
        else:
            self.v = self.v - (self.v - v_r) / self.tau + x

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, {self._reset_repr()}"


class IFHard(BaseNeuron):
    """Integrate-and-fire with hard reset, spikingjelly ``IFNode(v_reset=0.)`` (multi-step).

    ``x_seq [T, ...] -> spikes [T, ...]``; V_0 = V_r; ``H_t = V_{t-1} + X_t``;
    ``S_t = 1[H_t >= v_threshold]``; ``V_t = H_t (1 - S_t) + V_r S_t``. Default surrogate
    Sigmoid(alpha=4). ``v_reset`` must be a float here; use :class:`IFSoft` for a soft reset.
    """

    kernel_kind = "if"

    def __init__(self, v_threshold: float = 1.0, v_reset: float = 0.0, *,
                 surrogate: str | nn.Module | None = None, alpha: float | None = None,
                 detach_reset: bool = False, store_v_seq: bool = False):
        if v_reset is None:
            raise ValueError("IFHard needs a float v_reset; use IFSoft for the soft reset (v_reset=None)")
        super().__init__(v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)

    def charge(self, x: Tensor, t: int) -> None:
        self.v = self.v + x


class IFSoft(BaseNeuron):
    """Integrate-and-fire with soft (subtractive) reset, spikingjelly ``IFNode(v_reset=None)``.

    ``x_seq [T, ...] -> spikes [T, ...]``; V_0 = 0; ``H_t = V_{t-1} + X_t``;
    ``S_t = 1[H_t >= v_threshold]``; ``V_t = H_t - v_threshold S_t``. Default surrogate
    Sigmoid(alpha=4). ``v_reset`` is always ``None``.
    """

    kernel_kind = "if"

    def __init__(self, v_threshold: float = 1.0, *, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None, detach_reset: bool = False, store_v_seq: bool = False):
        super().__init__(v_threshold=v_threshold, v_reset=None, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)

    def charge(self, x: Tensor, t: int) -> None:
        self.v = self.v + x


class PLIF(BaseNeuron):
    """Parametric LIF: LIF with a learnable time constant, spikingjelly ``ParametricLIFNode``.

    Fang et al., "Incorporating Learnable Membrane Time Constants to Enhance Learning of
    Spiking Neural Networks", ICCV 2021 (arXiv 2007.05785).

    ``x_seq [T, ...] -> spikes [T, ...]``. One learnable scalar ``w`` per layer with
    ``1/tau = sigmoid(w)``, initialised ``w = -ln(init_tau - 1)`` (init_tau 2 -> w = 0):

    * decay_input=True:  ``H_t = V_{t-1} + sigmoid(w) (X_t - (V_{t-1} - V_r))``
    * decay_input=False: ``H_t = V_{t-1} - sigmoid(w) (V_{t-1} - V_r) + X_t``
    * fire and reset as :class:`LIF`. Default surrogate Sigmoid(alpha=4) (the paper's nets
      used ATan(2); pass ``surrogate="atan"``).
    """

    kernel_kind = "plif"

    def __init__(self, init_tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, *, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None, detach_reset: bool = False, store_v_seq: bool = False):
        super().__init__(v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        self.init_tau = _check_tau(type(self).__name__, "init_tau", init_tau)
        self.decay_input = bool(decay_input)
        self.w = nn.Parameter(torch.tensor(-math.log(self.init_tau - 1.0)))

    @property
    def tau(self) -> float:
        """The current time constant ``1 / sigmoid(w)``."""
        return 1.0 / torch.sigmoid(self.w.detach()).item()

    def charge(self, x: Tensor, t: int) -> None:
        v_r = 0.0 if self.v_reset is None else self.v_reset
        k = torch.sigmoid(self.w)
        if self.decay_input:
            self.v = self.v + k * (x - (self.v - v_r))
        else:
            self.v = self.v - k * (self.v - v_r) + x

    def extra_repr(self) -> str:
        return (f"init_tau={self.init_tau}, tau={self.tau:.6g}, decay_input={self.decay_input}, "
                f"{self._reset_repr()}")


class CLIF(BaseNeuron):
    """Complementary LIF, spikingjelly ``ComplementaryLIFNode`` / the official CLIF repo.

    Huang et al., "CLIF: Complementary Leaky Integrate-and-Fire Neuron for Spiking Neural
    Networks", ICML 2024 (arXiv 2402.04663).

    ``x_seq [T, ...] -> spikes [T, ...]``. State V and complementary potential M, both 0 at
    the start. Per step, in this order:

    1. ``H_t = (1 - 1/tau) V_{t-1} + X_t``
    2. ``M'_t = M_{t-1} sigmoid(H_t / tau)``
    3. ``S_t = 1[H_t >= v_threshold]``
    4. ``M_t = M'_t + S_t``
    5. ``V_t = H_t - S_t (v_threshold + sigmoid(M_t))``

    No learnable parameters; soft reset (``v_reset`` is ``None``). Default surrogate
    Rectangle(alpha=1), i.e. gradient 1 on ``|u| < 0.5``. The reset spike is not detached by
    default; ``detach_reset=True`` detaches S_t in step 5 only (step 4 keeps its gradient).
    ``self.m`` holds the last M after a forward; ``store_v_seq`` also fills ``self.m_seq``.
    """

    kernel_kind = "clif"

    default_surrogate = "rectangle"

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, *,
                 surrogate: str | nn.Module | None = None, alpha: float | None = None,
                 detach_reset: bool = False, store_v_seq: bool = False):
        super().__init__(v_threshold=v_threshold, v_reset=None, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        self.tau = _check_tau(type(self).__name__, "tau", tau)
        self.m: Tensor | None = None
        self.m_seq: Tensor | None = None
        self._m_seq: list[Tensor] = []

    def init_state(self, x0: Tensor) -> None:
        self.v = torch.zeros_like(x0)
        self.m = torch.zeros_like(x0)
        self._m_seq = []

    def charge(self, x: Tensor, t: int) -> None:
        self.v = (1.0 - 1.0 / self.tau) * self.v + x            # 1. H_t
        self.m = self.m * torch.sigmoid(self.v / self.tau)      # 2. M'_t

    def reset(self, spike: Tensor) -> None:
        s = spike.detach() if self.detach_reset else spike
        self.m = self.m + spike                                  # 4. M_t
        self.v = self.v - s * (self.v_threshold + torch.sigmoid(self.m))  # 5. V_t
        if self.store_v_seq:
            self._m_seq.append(self.m.detach())

    def forward(self, x_seq: Tensor) -> Tensor:
        spikes = super().forward(x_seq)
        self.m = self.m.detach()
        self.m_seq = torch.stack(self._m_seq) if self.store_v_seq else None
        self._m_seq = []
        return spikes

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input=False, {self._reset_repr()}"


def _logit_exact(p: float) -> Tensor:
    """A float32 raw value whose float32 sigmoid is ``p`` (or the nearest reachable value).

    ``ln(p / (1 - p))`` rounded to float32 can miss ``p`` by an ulp after the sigmoid; the
    neighbouring float32 raws are tried and the closest kept (``p = 0.5`` gives exactly 0).
    """
    raw = torch.tensor(math.log(p / (1.0 - p)), dtype=torch.float32)
    target = torch.tensor(p, dtype=torch.float32)
    best, best_err = raw, (torch.sigmoid(raw) - target).abs()
    for direction in (math.inf, -math.inf):
        cand = raw
        for _ in range(4):
            cand = torch.nextafter(cand, torch.tensor(direction, dtype=torch.float32))
            err = (torch.sigmoid(cand) - target).abs()
            if err < best_err:
                best, best_err = cand, err
    return best.clone()


class GLIF(BaseNeuron):
    """Gated LIF, layer-wise variant; spikingjelly ``GatedLIFNode`` / CAS-CLab/Gated-LIF.

    Yao et al., "GLIF: A Unified Gated Leaky Integrate-and-Fire Neuron for Spiking Neural
    Networks", NeurIPS 2022 (arXiv 2210.13768).

    ``x_seq [T, ...] -> spikes [T, ...]``; ``T`` is fixed at construction (one conductance
    per step) and ``forward`` refuses another length. Every learnable quantity q is stored as
    a raw scalar logit and used as ``sigmoid(raw)``, initialised so that ``sigmoid(raw)`` is
    the given init: gates alpha, beta, gamma (0.5), tau (an exponential decay factor in
    (0, 1), 0.25), threshold (0.5), leak (``v_threshold / (2T)``), V_sub (``v_threshold``) and
    conduct C_t (0.5, one per step). V holds the pre-reset potential, S_{t-1} the previous
    spike (V_0 = S_0 = 0):

    * ``I_t = X_t (1 - beta (1 - C_t))``
    * ``V_t = (1 - alpha (1 - tau)) V_{t-1} (1 - gamma S_{t-1}) - (1 - alpha) leak + I_t
      - (1 - gamma) V_sub S_{t-1}``
    * ``S_t = 1[V_t - threshold >= 0]``

    ``detach_reset=True`` detaches S_{t-1} in the two reset terms. ``v_threshold`` is a
    property returning the current ``sigmoid(threshold_raw)`` (a tensor).

    Deviations: fires on ``>=`` (the original repo uses ``>``); the raw gates start at exactly
    0 (spikingjelly draws them from ``0.2 (U[0,1) - 0.5)``), so a build is deterministic; only
    the layer-wise form is built, not the per-channel ``inplane`` or time-wise variants; every
    init must lie in (0, 1) because of the sigmoid parametrisation (ValueError otherwise).
    Default surrogate Rectangle(alpha=1), the repo's box ``1[|u| < 0.5]`` (spikingjelly 2.0
    defaults to Sigmoid(4)).
    """

    kernel_kind = "glif"

    requires_T = True
    default_surrogate = "rectangle"

    def __init__(self, T: int, v_threshold: float = 0.5, tau: float = 0.25, leak: float | None = None,
                 v_subreset: float | None = None, conduct: float = 0.5, *,
                 surrogate: str | nn.Module | None = None, alpha: float | None = None,
                 detach_reset: bool = False, store_v_seq: bool = False):
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"GLIF: T must be a positive int (time steps), got {T!r}")
        super().__init__(v_threshold=v_threshold, v_reset=None, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        self.T = T
        th = float(v_threshold)
        inits = {"tau": tau, "leak": th / (2 * T) if leak is None else leak,
                 "v_subreset": th if v_subreset is None else v_subreset, "conduct": conduct}
        for name, p in inits.items():
            self._check_unit(name, p)
        self.alpha_raw = nn.Parameter(torch.tensor(0.0))
        self.beta_raw = nn.Parameter(torch.tensor(0.0))
        self.gamma_raw = nn.Parameter(torch.tensor(0.0))
        self.tau_raw = nn.Parameter(_logit_exact(float(inits["tau"])))
        self.leak_raw = nn.Parameter(_logit_exact(float(inits["leak"])))
        self.v_subreset_raw = nn.Parameter(_logit_exact(float(inits["v_subreset"])))
        self.conduct_raw = nn.Parameter(_logit_exact(float(inits["conduct"])).repeat(T))
        self.prev_spike: Tensor | None = None

    @staticmethod
    def _check_unit(name: str, p) -> None:
        p = float(p)
        if not 0.0 < p < 1.0:
            raise ValueError(f"GLIF: {name} must lie in (0, 1) (it is stored as sigmoid(raw)), got {p}")

    def _init_threshold(self, v_threshold: float) -> None:
        self._check_unit("v_threshold", v_threshold)
        self.threshold_raw = nn.Parameter(_logit_exact(float(v_threshold)))

    # current values of the learnable quantities
    @property
    def v_threshold(self) -> Tensor:
        return torch.sigmoid(self.threshold_raw)

    @property
    def gate_alpha(self) -> Tensor:
        return torch.sigmoid(self.alpha_raw)

    @property
    def gate_beta(self) -> Tensor:
        return torch.sigmoid(self.beta_raw)

    @property
    def gate_gamma(self) -> Tensor:
        return torch.sigmoid(self.gamma_raw)

    @property
    def tau(self) -> Tensor:
        return torch.sigmoid(self.tau_raw)

    @property
    def leak(self) -> Tensor:
        return torch.sigmoid(self.leak_raw)

    @property
    def v_subreset(self) -> Tensor:
        return torch.sigmoid(self.v_subreset_raw)

    @property
    def conduct(self) -> Tensor:  # [T]
        return torch.sigmoid(self.conduct_raw)

    def check_input(self, x_seq: Tensor) -> None:
        super().check_input(x_seq)
        if x_seq.shape[0] != self.T:
            raise ValueError(f"GLIF was built for T={self.T} time steps but x_seq has T={x_seq.shape[0]} "
                             f"(shape {tuple(x_seq.shape)})")

    def init_state(self, x0: Tensor) -> None:
        self.v = torch.zeros_like(x0)
        self.prev_spike = torch.zeros_like(x0)

    def charge(self, x: Tensor, t: int) -> None:
        a, b, g = self.gate_alpha, self.gate_beta, self.gate_gamma
        s = self.prev_spike
        current = x * (1.0 - b * (1.0 - self.conduct[t]))
        self.v = ((1.0 - a * (1.0 - self.tau)) * self.v * (1.0 - g * s) - (1.0 - a) * self.leak
                  + current - (1.0 - g) * self.v_subreset * s)

    def reset(self, spike: Tensor) -> None:
        # V keeps the pre-reset potential; the reset is applied in the next charge.
        self.prev_spike = spike.detach() if self.detach_reset else spike

    def forward(self, x_seq: Tensor) -> Tensor:
        spikes = super().forward(x_seq)
        self.prev_spike = self.prev_spike.detach()
        return spikes

    def extra_repr(self) -> str:
        return (f"T={self.T}, v_threshold={_fmt(self.v_threshold)}, tau={_fmt(self.tau)}, "
                f"leak={_fmt(self.leak)}, v_subreset={_fmt(self.v_subreset)}, v_reset=None, "
                f"detach_reset={self.detach_reset}")


class KLIF(BaseNeuron):
    """KLIF: LIF with a learnable slope k, spikingjelly ``KLIFNode``.

    Jiang & Zhang, "KLIF: An optimized spiking neuron unit for tuning surrogate gradient
    slope and membrane potential", arXiv 2302.09238 (2023).

    ``x_seq [T, ...] -> spikes [T, ...]``. Learnable scalar ``k`` (init 1):

    * ``H_t`` as :class:`LIF` (decay_input True/False), ``F_t = ReLU(k H_t)``
    * ``S_t = 1[F_t - v_threshold >= 0]``; the effective surrogate w.r.t. H is
      ``k psi(k H - th) 1[k H > 0]``
    * scale_reset=False: hard ``V_t = F_t (1 - S_t) + V_r S_t``, soft ``V_t = F_t - th S_t``
    * scale_reset=True: the same with F_t/k and th/k: hard ``V_t = (F_t/k)(1 - S_t) + V_r S_t``,
      soft ``V_t = F_t/k - (th/k) S_t``.

    ``v_seq`` holds F_t, the pre-reset potential compared with the threshold (not H_t).
    Default surrogate Sigmoid(alpha=4).
    """

    kernel_kind = "klif"

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, scale_reset: bool = False, *,
                 surrogate: str | nn.Module | None = None, alpha: float | None = None,
                 detach_reset: bool = False, store_v_seq: bool = False):
        super().__init__(v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        self.tau = _check_tau(type(self).__name__, "tau", tau)
        self.decay_input = bool(decay_input)
        self.scale_reset = bool(scale_reset)
        self.k = nn.Parameter(torch.tensor(1.0))

    def charge(self, x: Tensor, t: int) -> None:
        v_r = 0.0 if self.v_reset is None else self.v_reset
        if self.decay_input:
            h = self.v + (x - (self.v - v_r)) / self.tau
        else:
            h = self.v - (self.v - v_r) / self.tau + x
        self.v = torch.relu(self.k * h)

    def reset(self, spike: Tensor) -> None:
        s = spike.detach() if self.detach_reset else spike
        f = self.v / self.k if self.scale_reset else self.v
        th = self.v_threshold / self.k if self.scale_reset else self.v_threshold
        if self.v_reset is None:
            self.v = f - th * s
        else:
            self.v = f * (1.0 - s) + self.v_reset * s

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, decay_input={self.decay_input}, scale_reset={self.scale_reset}, "
                f"{self._reset_repr()}")


class _MultiLevel(BaseNeuron):
    """Shared by the stateless multi-level activations (:class:`MultiSpike`, :class:`QCFS`):
    each step on its own, an exact level count ``k`` forward, and backward the gradient of a
    staircase of surrogate steps of ``u`` (one per level boundary or level)."""

    default_surrogate = "rectangle"
    stateless = True

    def staircase(self, u: Tensor, offsets) -> Tensor:
        """``sum_c surrogate(u - c)`` over ``offsets`` (in smooth mode, the primitives' sum)."""
        return sum(self.surrogate(u - c) for c in offsets)

    def straight_through(self, k: Tensor, u: Tensor, offsets) -> Tensor:
        """``k`` forward, the staircase's gradient backward; inference skips the surrogate calls."""
        if torch.is_grad_enabled() and u.requires_grad:
            s = self.staircase(u, offsets)
            k = k + (s - s.detach())
        return k

    # one step at a time (TIM drives its neurons so): nothing is carried to the next step
    def reset(self, spike: Tensor) -> None:
        pass


class MultiSpike(_MultiLevel):
    """Integer-valued "multi-spike" activation of E-SpikeFormer (SDT v3, Yao et al. TPAMI 2025,
    Spike Firing Approximation; the official ``MultiSpike``) and QSD's IE-LIF.

    ``x_seq [T, ...] -> [T, ...]``, each step on its own (no membrane carried over T):

    * ``k_t = round(clamp(X_t / v_threshold, 0, D))``, an integer spike count in ``0..D``
      (``D = max_spikes``, 4 in the paper). ``torch.round`` rounds halves to even, as
      E-SpikeFormer's code; ``round_half_up=True`` is QSD's ``floor(x + 1/2)``. Ties are
      common where the input is itself a product of counts (the attention);
    * output ``k_t / norm`` (``norm`` defaults to D, so outputs lie in ``{0, 1/D, ..., 1}``;
      E-SpikeFormer's head neuron uses ``norm=1``).

    At inference the count ``k`` is sent as k binary spikes over D virtual time steps, so the
    mean output (``k / D``) is the firing rate per virtual step. Backward: ``k`` is the sum of
    D Heaviside steps at ``u = j - 1/2`` and each step gets the surrogate's derivative; the
    default ``rectangle`` with alpha 1 sums to 1 on ``(0, D)`` and 0 outside, the official
    straight-through estimator (the two differ only at the integers, where the boxes touch).
    ``v_threshold`` scales the level spacing (1.0 in the paper).
    """

    def __init__(self, v_threshold: float = 1.0, max_spikes: int = 4, norm: float | None = None, *,
                 round_half_up: bool = False, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None, store_v_seq: bool = False):
        super().__init__(v_threshold=v_threshold, v_reset=None, detach_reset=False,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        if int(max_spikes) != max_spikes or max_spikes < 1:
            raise ValueError(f"MultiSpike: max_spikes must be a positive integer, got {max_spikes!r}")
        if not self.v_threshold > 0:
            raise ValueError(f"MultiSpike: v_threshold must be > 0, got {v_threshold}")
        self.max_spikes = int(max_spikes)
        self.norm = float(self.max_spikes if norm is None else norm)
        self.round_half_up = bool(round_half_up)
        if not self.norm > 0:
            raise ValueError(f"MultiSpike: norm must be > 0, got {norm}")

    def forward(self, x_seq: Tensor) -> Tensor:
        """``x_seq [T, ...] -> k / norm [T, ...]`` (same dtype, values in ``{0, 1, ..., D} / norm``)."""
        self.check_input(x_seq)
        u = x_seq.to(torch.promote_types(x_seq.dtype, torch.float32)) / self.v_threshold
        self.v = u[-1].detach()
        self.v_seq = u.detach() if self.store_v_seq else None
        return self.count(u).to(x_seq.dtype)

    def count(self, u: Tensor) -> Tensor:
        """``u = X / v_threshold`` -> ``k / norm``."""
        # k as D Heaviside steps at u = j - 1/2: the surrogate gives each step its gradient
        # (in smooth mode, its primitive); the value is the official round(clamp(u, 0, D))
        boundaries = [j - 0.5 for j in range(1, self.max_spikes + 1)]
        if not self.surrogate.spiking:
            return self.staircase(u, boundaries) / self.norm
        clamped = torch.clamp(u, 0.0, float(self.max_spikes))
        k = torch.floor(clamped + 0.5) if self.round_half_up else torch.round(clamped)
        return self.straight_through(k, u, boundaries) / self.norm

    def charge(self, x: Tensor, t: int) -> None:
        self.v = x / self.v_threshold

    def fire(self) -> Tensor:
        return self.count(self.v)

    def extra_repr(self) -> str:
        return (f"v_threshold={_fmt(self.v_threshold)}, max_spikes={self.max_spikes}, "
                f"norm={self.norm:g}" + (", round_half_up=True" if self.round_half_up else ""))


class QCFS(_MultiLevel):
    """Quantization-clip-floor-shift activation with a trainable threshold: the ANN activation
    of ANN-to-SNN conversion (Bu et al., "Optimal ANN-SNN Conversion for High-accuracy and
    Ultra-low-latency Spiking Neural Networks", ICLR 2022), MST's training activation
    (bic-L/Masked-Spiking-Transformer ``MyFloor``).

    ``x_seq [T, ...] -> [T, ...]``, each step on its own (Bu et al. Eq. 17):

    * ``y = lambda * clamp(floor(X L / lambda + 1/2) / L, 0, 1)``: L + 1 levels
      ``{0, lambda/L, ..., lambda}``; ``lambda`` (``v_threshold``, MST's initial 2.0) is a
      learned scalar per layer, the parameter ``threshold``; ``L = levels`` (MST: 16);
    * backward: a surrogate bump centred on each level ``0..L`` of ``z = X L / lambda``, so
      the default ``rectangle`` with alpha 1 is the official straight-through floor exactly
      (``dy/dX = 1`` on ``z in [-1/2, L + 1/2)``, 0 outside) and ``lambda`` gets the official
      gradient ``k / L - 1[window] X / lambda``.

    :func:`stlib.neurons.convert_to_snn` replaces every QCFS by a :class:`ConvertedIF` with
    the learned ``lambda``: an IF neuron whose mean output over T steps approaches ``y``.
    """

    def __init__(self, v_threshold: float = 2.0, levels: int = 16, *,
                 surrogate: str | nn.Module | None = None, alpha: float | None = None,
                 store_v_seq: bool = False):
        super().__init__(v_threshold=v_threshold, v_reset=None, detach_reset=False,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        if int(levels) != levels or levels < 1:
            raise ValueError(f"QCFS: levels must be a positive integer, got {levels!r}")
        self.levels = int(levels)

    def _init_threshold(self, v_threshold: float) -> None:
        if not float(v_threshold) > 0:
            raise ValueError(f"QCFS: v_threshold (the initial clip lambda) must be > 0, got {v_threshold}")
        self.threshold = nn.Parameter(torch.tensor(float(v_threshold)))

    @property
    def v_threshold(self) -> Tensor:
        """The clip ``lambda`` (a learned scalar)."""
        return self.threshold

    def forward(self, x_seq: Tensor) -> Tensor:
        """``x_seq [T, ...] -> lambda k / L [T, ...]`` (same dtype), ``k in {0, ..., L}``."""
        self.check_input(x_seq)
        x = x_seq.to(torch.promote_types(x_seq.dtype, torch.float32))
        lam = self.threshold.to(x.dtype)
        z = x / lam * self.levels  # the official order of operations: equal bits
        self.v = z[-1].detach()
        self.v_seq = z.detach() if self.store_v_seq else None
        return (self.quantize(z) / self.levels * lam).to(x_seq.dtype)

    def quantize(self, z: Tensor) -> Tensor:
        """``z = X L / lambda`` -> the level ``k = clamp(floor(z + 1/2), 0, L)``."""
        levels = range(self.levels + 1)  # one surrogate bump per level j, centred at z = j
        if not self.surrogate.spiking:  # smooth mode: the bumps' primitive, scaled to [0, L]
            return self.staircase(z, levels) * (self.levels / (self.levels + 1))
        k = torch.clamp(torch.floor(z + 0.5), 0.0, float(self.levels))
        return self.straight_through(k, z, levels)

    def charge(self, x: Tensor, t: int) -> None:
        self.v = x / self.threshold * self.levels

    def fire(self) -> Tensor:
        return self.quantize(self.v) / self.levels * self.threshold

    def extra_repr(self) -> str:
        return f"v_threshold={_fmt(self.threshold)}, levels={self.levels}"


class ConvertedIF(IFSoft):
    """The spiking neuron a trained :class:`QCFS` becomes (ANN-to-SNN conversion, Bu et al.
    2022; MST's ``ScaledNeuron``): integrate-and-fire, soft reset, in units of the learned
    clip ``lambda`` (``scale``), started half-full (the QCFS shift).

    ``x_seq [T, ...] -> lambda S [T, ...]`` (values ``{0, lambda}``): ``V_0 = 1/2``,
    ``H_t = V_{t-1} + X_t / lambda``, ``S_t = 1[H_t >= 1]``, ``V_t = H_t - S_t``. For a
    constant input the mean output over T steps is ``lambda clamp(floor(X T / lambda + 1/2) / T,
    0, 1)``: QCFS with ``L = T``. Built by :func:`stlib.neurons.convert_to_snn`; not in
    ``NEURONS`` (it is made from a trained layer, not trained itself).
    """

    def __init__(self, scale: float = 1.0, *, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None, store_v_seq: bool = False):
        super().__init__(1.0, surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        if not float(scale) > 0:
            raise ValueError(f"ConvertedIF: scale (the QCFS clip lambda) must be > 0, got {scale}")
        self.scale = float(scale)

    def init_state(self, x0: Tensor) -> None:
        self.v = torch.full_like(x0, 0.5)

    def charge(self, x: Tensor, t: int) -> None:
        self.v = self.v + x / self.scale

    def forward(self, x_seq: Tensor) -> Tensor:
        """``x_seq [T, ...] -> lambda S [T, ...]`` (same dtype)."""
        return super().forward(x_seq) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, v_init=0.5"
