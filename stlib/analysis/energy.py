"""Theoretical inference energy of a spiking network, the spiking-transformer papers' convention.

Spikformer, SDT and QKFormer estimate the energy of one image on a 45 nm process (Horowitz,
ISSCC 2014) with E_MAC = 4.6 pJ (fp32 multiply-accumulate) and E_AC = 0.9 pJ (accumulate)::

    E = E_MAC * FL_1  +  E_AC * sum_{l >= 2} SOP_l          SOP_l = fr_l * T * FL_l

* ``FL_l`` are the ANN FLOPs (multiply-accumulates) of layer ``l`` for one image and one time
  step: ``k_h k_w (C_in / groups) C_out H_out W_out`` for ``Conv2d`` (``k C_in C_out L_out`` for
  ``Conv1d``), ``C_in C_out`` per token for ``Linear``, ``n k m`` for a product ``[n, k] @ [k, m]``
  (the ``Q K^T`` and ``(Q K^T) V`` of Spikformer's SSA: ``2 N^2 D`` per step).
* ``fr_l`` is the firing rate of the spike tensor *feeding* layer ``l``: its fraction of non-zero
  elements, over T, the batch and every element. For a product of two spike tensors (SSA's
  ``Q K^T``) the sparser operand's rate is used: an accumulate happens only where that operand
  fires, the other operand acting as the weights.
* The first layer sees analog pixels (direct encoding) and is counted as MACs once per image,
  not T times (the T repeated inputs give identical results). When its input is already spikes
  (rate / TTFS encoding, event data) it is counted as SOPs like every other layer.

What is counted: every ``aten.convolution`` / ``mm`` / ``addmm`` / ``bmm`` / ``baddbmm`` executed
in the forward pass, caught below autograd with a ``TorchDispatchMode`` and attributed to the
innermost module that ran it, so ``Conv1d``/``Conv2d``/``Linear`` layers and the attention
matmuls of any registered model are found without a per-model list. ``fr * T * FL`` is taken as
``fr * (MACs actually executed per image)``: the same for layers run at each of the T steps,
and correct for a layer run once (a head after the mean over T); ``FL`` in the table is that
count divided by T. BatchNorm (folded into the
preceding weights at inference), pooling, neuron updates, residual adds, element-wise masks
and memory traffic are not counted, as in the papers. Products where no operand depends on the
input (weight-only re-parametrisation) are skipped.

Caveats of the convention, kept visible in the per-layer table's ``input_kind`` column:
Spikformer's residual adds feed integer, non-binary values (0, 1, 2) to the next layers, and a
head on the token mean sees analog values; the papers still count them as SOPs (Spikingformer,
arXiv 2304.11954, counts them as non-spike operations).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

E_MAC_PJ = 4.6  # fp32 multiply (3.7) + add (0.9), 45 nm
E_AC_PJ = 0.9   # fp32 add, 45 nm
PJ_PER_MJ = 1e9

__all__ = ["E_AC_PJ", "E_MAC_PJ", "energy_report", "energy_table", "time_steps"]

_MATMULS = {"mm", "addmm", "bmm", "baddbmm"}


def _operands(name: str, args) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of a product (the additive ``self``/bias of addmm/baddbmm excluded)."""
    if name in ("addmm", "baddbmm"):
        return args[1], args[2]
    return args[0], args[1]


def _macs(name: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> int:
    if name == "convolution":  # out [N, C_out, *spatial], weight [C_out, C_in / groups, *k]
        return out.numel() * b[0].numel()
    return out.numel() * a.shape[-1]  # [.., n, k] @ [.., k, m]: n*m outputs of k MACs each


class _OpCounter(TorchDispatchMode):
    """Records every product executed inside the mode: module, op, MACs, input firing rate."""

    def __init__(self, weights: set[int], stack: list[tuple[str, str]]):
        super().__init__()
        self.weights, self.stack, self.records = weights, stack, []
        self.derived: list[torch.Tensor] = []  # kept alive: a freed address may return as an activation

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        # a tensor computed from weights alone (QSD's quantized weights) is a weight too
        tensors = [t for t in args if isinstance(t, torch.Tensor)]
        if tensors and isinstance(out, torch.Tensor) and all(
                t.untyped_storage().data_ptr() in self.weights for t in tensors):
            self.weights.add(out.untyped_storage().data_ptr())
            self.derived.append(out)
        if name in _MATMULS or name == "convolution":
            a, b = _operands(name, args)
            inputs = [t for t in ((a,) if name == "convolution" else (a, b))
                      if t.untyped_storage().data_ptr() not in self.weights]
            if inputs:
                self.records.append(self._record(name, a, b, out, inputs))
        return out

    def _record(self, name, a, b, out, inputs) -> dict[str, Any]:
        with torch.no_grad():
            rates = [t.ne(0).float().mean().item() for t in inputs]
            integer = all(bool(torch.equal(t, t.round())) for t in inputs)
            binary = integer and all(bool(((t == 0) | (t == 1)).all()) for t in inputs)
        module, kind = self.stack[-1] if self.stack else ("", "")
        return dict(name=module, type=kind, op=name, macs=_macs(name, a, b, out),
                    rate=min(rates), leading=inputs[0].shape[0],
                    input_kind="spikes" if binary else "integer" if integer else "analog")


@contextmanager
def _module_stack(model: nn.Module) -> Iterator[list[tuple[str, str]]]:
    """A stack of ``(qualified name, class name)`` of the modules currently running."""
    stack: list[tuple[str, str]] = []
    handles = []
    def enter(entry):
        def hook(module, inputs):
            stack.append(entry)
        return hook

    def leave(module, inputs, output):  # returns None: a hook's return value replaces the output
        stack.pop()

    for qualname, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter((qualname, type(module).__name__))))
        handles.append(module.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def time_steps(model: nn.Module) -> int:
    """The model's number of time steps: the first integer ``T`` attribute among its modules."""
    for module in model.modules():
        T = getattr(module, "T", None)
        if isinstance(T, int) and not isinstance(T, bool) and T > 0:
            return T
    raise ValueError(f"cannot find the number of time steps: no module of "
                     f"{type(model).__name__} has an integer attribute T")


@torch.no_grad()
def energy_report(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", *,
                  T: int | None = None, e_mac_pj: float = E_MAC_PJ,
                  e_ac_pj: float = E_AC_PJ) -> dict[str, Any]:
    """Per-image energy of ``model`` on ``images [B, C, H, W]`` (or pre-encoded ``[T, B, C, H, W]``).

    ``E = E_MAC * FL_1 + E_AC * sum_{l>=2} fr_l * T * FL_l`` (module docstring for the details),
    averaged over the ``B`` images of the batch. Returns::

        energy_mj        the estimate, mJ per image
        mac_first_layer  FL_1 counted as MACs (0 when the first layer already gets spikes)
        sops             sum of SOPs per image (first layer included when it gets spikes)
        flops            sum of FL_l (one step, per image): the ANN's MACs
        ann_energy_mj    E_MAC * flops, the same network as an ANN (the papers' baseline)
        T, images, first_layer, e_mac_pj, e_ac_pj
        layers           one dict per module: name, type, ops, flops (one step), input_rate,
                         input_kind (spikes | integer | analog), sops, energy_pj
    """
    device = torch.device(device)
    T = T or time_steps(model)
    was_training = model.training
    model.to(device).eval()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    images = images.to(device)
    try:
        with _module_stack(model) as stack, _OpCounter(weights, stack) as counter:
            model(images)
    finally:
        model.train(was_training)
    if not counter.records:
        raise ValueError(f"no convolution or matrix product ran in {type(model).__name__}")
    batch = images.shape[1] if images.dim() == 5 else images.shape[0]  # [T, B, C, H, W] or [B, ...]

    layers: dict[tuple[str, str], dict[str, Any]] = {}
    for i, rec in enumerate(counter.records):
        macs = rec["macs"] / batch  # executed MACs per image, over all the steps it ran
        first = i == 0 and rec["input_kind"] == "analog"
        if first and rec["leading"] % (T * batch) == 0:
            macs /= T  # direct encoding: T identical copies, the conv is counted once
        row = layers.setdefault((rec["name"], rec["type"]), dict(
            name=rec["name"], type=rec["type"], ops=[], flops=0.0, macs_run=0.0, sops=0.0,
            mac_ops=0.0, kinds=set()))
        row["ops"].append(rec["op"])
        row["kinds"].add(rec["input_kind"])
        if first:
            row["mac_ops"] += macs
            row["flops"] += macs
        else:
            row["sops"] += rec["rate"] * macs
            row["flops"] += macs / T
            row["macs_run"] += macs

    table = []
    for row in layers.values():
        rate = row["sops"] / row["macs_run"] if row["macs_run"] else None
        kinds = row.pop("kinds")
        table.append(dict(
            name=row["name"], type=row["type"], ops="+".join(sorted(set(row["ops"]))),
            flops=row["flops"], input_rate=rate,
            input_kind="analog" if "analog" in kinds else "integer" if "integer" in kinds
            else "spikes",
            sops=row["sops"], energy_pj=e_mac_pj * row["mac_ops"] + e_ac_pj * row["sops"]))
    mac_first = sum(row["mac_ops"] for row in layers.values())
    sops = sum(row["sops"] for row in layers.values())
    flops = sum(row["flops"] for row in layers.values())
    return dict(
        energy_mj=(e_mac_pj * mac_first + e_ac_pj * sops) / PJ_PER_MJ,
        mac_first_layer=mac_first, sops=sops, flops=flops,
        ann_energy_mj=e_mac_pj * flops / PJ_PER_MJ, T=T, images=batch,
        first_layer=counter.records[0]["name"], e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj,
        layers=table)


def energy_table(report: dict[str, Any]):
    """The per-layer rows of :func:`energy_report` as a DataFrame (plus a total row)."""
    import pandas as pd

    frame = pd.DataFrame(report["layers"])
    total = dict(name="total", type="", ops="", flops=report["flops"], input_rate=None,
                 input_kind="", sops=report["sops"], energy_pj=report["energy_mj"] * PJ_PER_MJ)
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
