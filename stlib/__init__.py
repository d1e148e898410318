"""stlib: the Spiking Transformer Lab's thin support package.

Everything a notebook calls::

    config = stlib.from_notebook("params/spikformer/cifar10.yaml", preset="quick", neuron="PLIF")
    record = stlib.fit(config)            # -> outputs/<study>/<run_id>/
    stlib.learning_curves(record.metrics)
"""
from .analysis.plots import learning_curves
from .encoders import ENCODERS, InputEncoder, create_encoder, encode
from .errors import show_in_one_line
from .models import CheckpointError, create_model, list_models, load_official
from .neurons import NEURONS, SURROGATES, create_neuron, neuron_factory
from .params import Config, ConfigError, from_notebook, load_params, params_for
from .record import RunRecord
from .registry import UnknownNameError

show_in_one_line()  # in a notebook kernel: a bad setting or a missing dataset is one line


def __getattr__(name: str):
    # the training loop and checkpoint evaluation load on first use, so that
    # ``python -m stlib.train`` does not find stlib.train imported already (a RuntimeWarning)
    if name == "fit":
        from .train import fit

        return fit
    if name in ("evaluate_checkpoint", "conversion_report"):
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'stlib' has no attribute {name!r}")

__all__ = [
    "CheckpointError", "Config", "ConfigError", "ENCODERS", "InputEncoder", "NEURONS",
    "RunRecord", "SURROGATES", "UnknownNameError", "conversion_report", "create_encoder", "create_model",
    "create_neuron", "encode", "evaluate_checkpoint", "fit", "from_notebook", "learning_curves",
    "list_models", "load_official", "load_params", "neuron_factory", "params_for",
]
__version__ = "0.1.0"
