"""Input encodings: a static image ``x [B, C, H, W]`` in [0, 1] -> a sequence ``[T, B, C, H, W]``.

Four encodings, registered in :data:`ENCODERS` by name:

* ``direct``: the image repeated T times; the first conv + BN + neuron is the encoder. The
  standard for every static-image spiking transformer (Spikformer and followers).
* ``rate``: Bernoulli spikes with probability equal to the intensity.
* ``phase``: weighted bit planes of the 8-bit intensity (BrainCog convention).
* ``ttfs``: one binary spike per pixel, brighter pixels earlier (spikingjelly's linear latency).

Facts: ``shared/reference/NEURONS.md`` section 2 (BrainCog ``Encoder``, spikingjelly
``activation_based.encoding``). The encoders take values in [0, 1] and clamp anything outside.
Each encoder works elementwise, so any input shape ``[B, ...]`` gives ``[T, B, ...]``.

Normalization happens *after* encoding (:class:`InputEncoder`). The data loaders yield
images in [0, 1] and carry the per-channel mean and std; ``InputEncoder`` encodes and then
maps every time step through ``(s - mean) / std``:

* for ``direct`` encoding this equals the recipe's normalize-then-repeat exactly (the repeat
  commutes with an elementwise map);
* for ``rate``, ``phase`` and ``ttfs`` the encoder sees true intensities (normalized pixels
  are negative and would never fire), while the first conv still sees zero-mean input. A
  per-channel affine map in front of the first conv + BN only re-parametrizes that conv's
  weights and bias, so it changes the optimization's conditioning, not what the model can
  represent.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from stlib.registry import Registry

__all__ = [
    "ENCODERS",
    "DirectEncoder",
    "RateEncoder",
    "PhaseEncoder",
    "TTFSEncoder",
    "InputEncoder",
    "create_encoder",
    "encode",
]

ENCODERS: Registry[type[nn.Module]] = Registry("encoding")


def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ValueError(f"the number of time steps T must be a positive int, got T={T!r}")
    return T


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


class _Encoder(nn.Module):
    """Base: holds T; subclasses implement ``forward(x [B, ...]) -> [T, B, ...]``."""

    stochastic = False  # True for encoders that draw random numbers (take a ``seed``)

    def __init__(self, T: int):
        super().__init__()
        self.T = _check_T(T)

    def extra_repr(self) -> str:
        return f"T={self.T}"


@ENCODERS.register("direct")
class DirectEncoder(_Encoder):
    """Direct (analog) encoding: ``out[t] = x`` for every t.

    ``x [B, C, H, W] -> [T, B, C, H, W]``; values pass unchanged (not clamped) and the
    gradient flows through.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).repeat(self.T, *([1] * x.dim()))  # [T, B, ...]


@ENCODERS.register("rate", aliases=("poisson", "bernoulli"))
class RateEncoder(_Encoder):
    """Rate (Bernoulli) encoding: ``out[t] = 1[U_t < x]``, ``U_t ~ U[0, 1)`` independent per t.

    ``x`` is clamped to [0, 1] first, so ``x = 0`` never fires and ``x = 1`` fires at every step;
    the mean over t estimates ``x``. Output is binary, in ``x``'s dtype, with no gradient.

    ``seed``: None draws from torch's global generator. An int makes the encoder own a
    ``torch.Generator`` on the input's device, created on the first call (and re-created if the
    input moves to another device): a fresh encoder with the same seed gives the same spikes
    for the same input; successive calls of one encoder continue the stream (new draws).
    """

    stochastic = True

    def __init__(self, T: int, seed: int | None = None):
        super().__init__(T)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._generator: torch.Generator | None = None

    def _get_generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x).detach().clamp(0.0, 1.0)
        u_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        u = torch.rand((self.T, *x.shape), generator=self._get_generator(x.device),
                       device=x.device, dtype=u_dtype)  # [T, B, ...]
        return (u < x.unsqueeze(0)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"T={self.T}, seed={self.seed}"


@ENCODERS.register("phase")
class PhaseEncoder(_Encoder):
    """Weighted phase encoding (BrainCog convention): graded bit planes of the 8-bit intensity.

    ``q = min(floor(256 x), 255)`` with ``x`` clamped to [0, 1]; for step ``i``, with
    ``k = i mod 8``: ``out[i] = 2^-k * bit(7 - k, q)``. Step 0 carries the most significant bit
    with weight 1, step 7 the least with weight 1/128, and the pattern repeats with period 8.
    Amplitudes are graded (0 or 2^-k), so ``sum_{i<8} out[i] * 128 == q`` exactly.

    Differs from BrainCog on purpose at ``x = 1``: BrainCog takes ``q = floor(256 x) = 256``,
    whose bits 0-7 are all zero, so the brightest pixel emits nothing; here q is capped at 255
    (all eight bits set). For T < 8 only the T most significant bits are sent.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x).detach().clamp(0.0, 1.0)
        q = torch.floor(x * 256).clamp(max=255).to(torch.int64)
        k = torch.arange(8, device=x.device)
        shape = (8,) + (1,) * x.dim()
        bits = (q.unsqueeze(0) >> (7 - k).view(shape)) & 1  # [8, B, ...], MSB first
        weights = torch.pow(2.0, -k.to(x.dtype)).view(shape)
        planes = bits.to(x.dtype) * weights  # [8, B, ...]
        steps = torch.arange(self.T, device=x.device) % 8
        return planes[steps]  # [T, B, ...]


@ENCODERS.register("ttfs", aliases=("latency",))
class TTFSEncoder(_Encoder):
    """Time-to-first-spike (latency) encoding: one binary spike per pixel, brighter is earlier.

    spikingjelly's linear ``LatencyEncoder``: ``t_f = round((T - 1)(1 - x))`` with ``x`` clamped
    to [0, 1] (``torch.round``, half to even), ``out[t] = 1[t == t_f]``. So ``x = 1`` fires at
    t = 0 and ``x = 0`` still fires once, at t = T - 1; every pixel fires exactly once.

    BrainCog's ``ttfs`` differs: the spike at step i has graded amplitude ``1/(i+1)``, it
    fires where ``x T`` lies in ``(T - i - 1, T - i]``, and ``x <= 0`` never fires. This one
    keeps spikes binary (the quantity a spike-count energy estimate assumes).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x).detach().clamp(0.0, 1.0)
        t_fire = torch.round((self.T - 1) * (1.0 - x)).to(torch.int64)  # [B, ...]
        t = torch.arange(self.T, device=x.device).view((self.T,) + (1,) * x.dim())
        return (t == t_fire.unsqueeze(0)).to(x.dtype)  # [T, B, ...]


def create_encoder(name: str, T: int, **kwargs) -> nn.Module:
    """Build the encoder registered as ``name`` (``direct``, ``rate``, ``phase``, ``ttfs``).

    ``kwargs`` go to the constructor (only ``rate`` takes ``seed``); an unknown name raises
    :class:`~stlib.registry.UnknownNameError` listing the valid ones, a bad T ``ValueError``.
    """
    return ENCODERS.get(name)(T=_check_T(T), **kwargs)


def encode(x: torch.Tensor, T: int, method: str = "direct", **kwargs) -> torch.Tensor:
    """Functional form: ``x [B, C, H, W] -> [T, B, C, H, W]`` with a fresh encoder.

    With ``method="rate", seed=s`` every call gives the same spikes for the same input.
    """
    return create_encoder(method, T, **kwargs)(x)


class InputEncoder(nn.Module):
    """Encode, then normalize per channel: ``[B, C, H, W]`` in [0, 1] -> ``[T, B, C, H, W]``.

    ``out = (encoder(x) - mean[c]) / std[c]``, broadcast over ``[T, B, C, H, W]`` (see the
    module docstring for why normalization comes after encoding). ``mean``/``std`` None: no
    normalization (both or neither). ``seed`` reaches stochastic encodings (``rate``);
    deterministic ones ignore it, so a run can pass its seed whatever the method.

    Input that is already 5-D ``[T, B, C, H, W]`` (pre-encoded, e.g. event frames) skips the
    encoding; its T must equal this encoder's T. It is still normalized when mean/std are set
    (event pipelines pass None).
    """

    def __init__(self, method: str, T: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, seed: int | None = None):
        super().__init__()
        self.method = ENCODERS.canonical(method)
        self.T = _check_T(T)
        cls = ENCODERS.get(self.method)
        kwargs = {"seed": seed} if cls.stochastic else {}
        self.encoder = cls(T=self.T, **kwargs)
        if (mean is None) != (std is None):
            raise ValueError(f"give both mean and std or neither, got mean={mean!r}, std={std!r}")
        self.normalize = mean is not None
        if self.normalize:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
            std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
            if mean_t.numel() != std_t.numel():
                raise ValueError(f"mean has {mean_t.numel()} channels but std has {std_t.numel()}")
            if not bool((std_t > 0).all()):
                raise ValueError(f"std must be positive, got {tuple(std_t.tolist())}")
            # [C, 1, 1] broadcasts over [..., C, H, W]; not in the state_dict (set by the config)
            self.register_buffer("mean", mean_t.view(-1, 1, 1), persistent=False)
            self.register_buffer("std", std_t.view(-1, 1, 1), persistent=False)
        else:
            self.mean = self.std = None

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normalize:
            return x
        if x.shape[-3] != self.mean.shape[0]:
            raise ValueError(f"input has {x.shape[-3]} channels (shape {tuple(x.shape)}) but "
                             f"mean/std have {self.mean.shape[0]}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # pre-encoded [T, B, C, H, W]
            if x.shape[0] != self.T:
                raise ValueError(f"pre-encoded input has T={x.shape[0]} (shape {tuple(x.shape)}) "
                                 f"but the encoder has T={self.T}")
            return self._norm(_as_float(x))
        if x.dim() != 4:
            raise ValueError(f"expected an image [B, C, H, W] or a sequence [T, B, C, H, W], "
                             f"got shape {tuple(x.shape)}")
        x = _as_float(x)
        if self.method == "direct":  # the same numbers, normalizing T times fewer elements
            return self.encoder(self._norm(x))
        return self._norm(self.encoder(x))

    def extra_repr(self) -> str:
        if not self.normalize:
            return "normalize=False"
        return (f"mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, "
                f"std={tuple(round(v, 4) for v in self.std.flatten().tolist())}")
