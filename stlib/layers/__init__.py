"""Blocks shared by the models (timm's layers/ split): one definition each, reused everywhere."""
from .attention import ATTENTIONS, SSA, get_attention
from .block import SpikingBlock
from .embed import SPS
from .head import MeanTokenHead
from .mlp import SpikingMLP
from .multistep import ConvBN, LinearBN, SeqToBatch, seq_to_batch

__all__ = ["ATTENTIONS", "SSA", "get_attention", "SpikingBlock", "SPS", "MeanTokenHead",
           "SpikingMLP", "ConvBN", "LinearBN", "SeqToBatch", "seq_to_batch"]
