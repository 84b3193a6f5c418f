"""The span-pair extractor family, by job: its config, the network (imported where built: it imports
torch), encoding posts, decoding the network's output, and the model that ties them together."""

from .config import SpanPairConfig, default_encoder_path
from .model import SpanPairExtractor

__all__ = ["SpanPairConfig", "SpanPairExtractor", "default_encoder_path"]
