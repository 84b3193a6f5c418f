"""kecpm: few-shot Joint Multimodal Entity-Relation Extraction with knowledge-enhanced prompts.

The stages are subpackages: ``kecpm.retrieval`` (demonstration store), ``kecpm.agents`` (knowledge
agent and pipeline), ``kecpm.extractor`` (the fine-tuned extractor), ``kecpm.eval`` (metrics) and
``kecpm.prompts`` (template files). The shared records live here.
"""

from .errors import DataError, KecpmError, Problem
from .labels import ENTITY_TYPES, RELATIONS, EntityType, Relation
from .post_files import load_split, read_kecpm, read_post_file, read_posts, validate_kecpm, write_kecpm
from .records import Demonstration, Entity, Post, Quintuple

__version__ = "0.1.0"

__all__ = [
    "ENTITY_TYPES",
    "RELATIONS",
    "DataError",
    "Demonstration",
    "Entity",
    "EntityType",
    "KecpmError",
    "Post",
    "Problem",
    "Quintuple",
    "Relation",
    "__version__",
    "load_split",
    "read_kecpm",
    "read_post_file",
    "read_posts",
    "validate_kecpm",
    "write_kecpm",
]
