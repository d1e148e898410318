"""ANN-to-SNN conversion: a network trained with :class:`~stlib.neurons.QCFS` activations
becomes a spiking network of :class:`~stlib.neurons.ConvertedIF` neurons (Bu et al., ICLR
2022; MST's ``replace_activation_by_neuron``).

Each QCFS keeps its learned clip ``lambda`` as the IF neuron's scale; nothing else changes
(weights, norms and softmax stay). Run the converted network for many steps (MST evaluates
with ``sim_len`` 128 and more): the accuracy of the T-step mean output approaches the ANN's as
T grows.
"""
from __future__ import annotations

import copy

from torch import nn

from stlib.neurons.reference import QCFS, BaseNeuron, ConvertedIF

__all__ = ["convert_to_snn", "timed_modules"]


def timed_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` with an int ``T`` (the model, an input encoder), neurons aside."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "T", None), int) and not isinstance(m, BaseNeuron)]


def convert_to_snn(model: nn.Module, T: int | None = None) -> nn.Module:
    """A copy of ``model`` with every QCFS replaced by a ConvertedIF of its ``lambda``.

    ``T`` (optional) sets the copy's ``T``, the number of simulation steps its forward
    repeats a static input for, on every module that has one (the model, and the input
    encoder of a :func:`stlib.build.build_model` network; neurons keep theirs); the ANN keeps
    its own (a ``ValueError`` when no module has a ``T``). Raises ``ValueError`` when the
    model has no QCFS activation (nothing to convert: train it with ``neuron="QCFS"``).
    """
    if not any(isinstance(m, QCFS) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no QCFS activation to convert; build "
                         "and train it with neuron='QCFS' first")
    if T is not None and (int(T) != T or T < 1):
        raise ValueError(f"T must be a positive number of simulation steps, got {T!r}")
    snn = copy.deepcopy(model)
    for parent in list(snn.modules()):
        for name, child in parent.named_children():
            if isinstance(child, QCFS):
                setattr(parent, name, ConvertedIF(float(child.threshold.detach()),
                                                  store_v_seq=child.store_v_seq))
    if T is not None:
        timed = timed_modules(snn)
        if not timed:
            raise ValueError(f"{type(model).__name__} has no T to set; convert without T and "
                             "feed it [T, B, ...] input")
        for module in timed:
            module.T = int(T)
    return snn.train(model.training)
