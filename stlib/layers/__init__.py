"""Blocks shared by the models (timm's layers/ split): one definition each, reused everywhere.

Every module in this package is imported here, so attention / embedding variants that
register themselves by name (``ATTENTIONS``, ``EMBEDDINGS``) are known as soon as
``stlib.layers`` is imported. Import a block from its own module (``from
stlib.layers.attention import SSA``) or from here for the core ones below.
"""
import importlib
import pkgutil

from .attention import ATTENTIONS, SSA, get_attention
from .block import SpikingBlock
from .embed import SPS
from .head import MeanTokenHead
from .mlp import SpikingMLP
from .multistep import ConvBN, LinearBN, SeqToBatch, seq_to_batch

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["ATTENTIONS", "SSA", "get_attention", "SpikingBlock", "SPS", "MeanTokenHead",
           "SpikingMLP", "ConvBN", "LinearBN", "SeqToBatch", "seq_to_batch"]
