"""stlib: the Spiking Transformer Lab's thin support package.

Everything a notebook calls::

    config = stlib.from_notebook("params/spikformer/cifar10.yaml", preset="quick", neuron="PLIF")
    record = stlib.fit(config)            # -> outputs/<study>/<run_id>/
    stlib.learning_curves(record.metrics)
"""
from .analysis.plots import learning_curves
from .encoders import ENCODERS, InputEncoder, create_encoder, encode
from .evaluation import evaluate_checkpoint
from .models import CheckpointError, create_model, list_models, load_official
from .neurons import NEURONS, SURROGATES, create_neuron, neuron_factory
from .params import Config, ConfigError, from_notebook, load_params, params_for
from .registry import UnknownNameError
from .train import RunRecord, fit

__all__ = [
    "CheckpointError", "Config", "ConfigError", "ENCODERS", "InputEncoder", "NEURONS",
    "RunRecord", "SURROGATES", "UnknownNameError", "create_encoder", "create_model",
    "create_neuron", "encode", "evaluate_checkpoint", "fit", "from_notebook", "learning_curves",
    "list_models", "load_official", "load_params", "neuron_factory", "params_for",
]
__version__ = "0.1.0"
