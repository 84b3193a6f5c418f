"""The span-pair extractor family, by job: its config, the network (imported where built: it imports
torch), encoding posts, decoding the network's output, and the model that ties them together."""

from .config import SYMMETRIC_RELATIONS, SpanPairConfig, default_encoder_path
from .ensemble import SpanPairEnsemble
from .model import THRESHOLD_GRID, SpanPairExtractor, ThresholdChoice

__all__ = [
    "SYMMETRIC_RELATIONS",
    "THRESHOLD_GRID",
    "SpanPairConfig",
    "SpanPairEnsemble",
    "SpanPairExtractor",
    "ThresholdChoice",
    "default_encoder_path",
]
