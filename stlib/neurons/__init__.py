"""Spiking neurons and surrogate gradients.

``reference.py`` holds plain-torch multi-step neurons (``x_seq [T, ...] -> spikes [T, ...]``);
they are the ground truth that any fused kernel (``stlib.neurons.kernels``) must
match. ``surrogate.py`` holds the surrogate spike functions, ``registry.py`` the name tables
and factories used by model configs.
"""
from stlib.neurons.reference import (CLIF, GLIF, KLIF, LIF, PLIF, QCFS, BaseNeuron, ConvertedIF, IFHard,
                                    IFSoft, MultiSpike)
from stlib.neurons.conversion import convert_to_snn
from stlib.neurons.registry import (NEURONS, NeuronFactory, create_neuron, is_neuron, neuron_factory,
                                    neurons_of)
from stlib.neurons.surrogate import SURROGATES, create_surrogate

__all__ = [
    "BaseNeuron", "LIF", "IFHard", "IFSoft", "PLIF", "CLIF", "GLIF", "KLIF", "MultiSpike", "QCFS",
    "ConvertedIF", "convert_to_snn",
    "NEURONS", "SURROGATES", "NeuronFactory", "create_neuron", "neuron_factory", "create_surrogate",
    "neurons_of", "is_neuron",
]
