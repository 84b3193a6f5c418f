"""The knowledge-enhanced extractor: image description + text + knowledge -> quintuples.

Two model families behind one interface (``fit``, ``predict``, ``apredict``, ``save_pretrained``,
``from_pretrained``):
:class:`SpanPairExtractor` (default, offline: all-MiniLM-L6-v2 fine-tuned for typed spans and
relations between them) and :class:`GenerativeExtractor` (paper-faithful: any local seq2seq or causal
LM checkpoint writing the answer sentences). Early stopping takes a scorer by injection, e.g.
``kecpm.eval.make_scorer(mode="paper", metric="micro_f1")``.

Modules: ``inputs`` (input assembly), ``base`` (the interface, the family registry and
:func:`load_extractor`), ``training`` (the fit loop), ``checkpoint`` (the checkpoint format: the card
``config.json``, and the format-1 ``extractor.json``), ``model_card`` (``README.md``), ``hub`` (folders and
Hub ids), ``quantization`` (int8), ``adaptation`` (the encoder's task-adaptive pretraining on unlabelled
text), ``self_training`` (pseudo-labels from a teacher, for ``fit(pseudo=...)``), ``span_pair/`` and
``generative`` (the families), ``tool`` (the LangChain tool).

>>> from kecpm.extractor import InputParts, SpanPairExtractor, TrainConfig, load_extractor
>>> model = SpanPairExtractor(parts=InputParts.preset("imagecap_know"))  # doctest: +SKIP
>>> model.fit(train, val, scorer=scorer, config=TrainConfig(seed=17))  # doctest: +SKIP
>>> model.save_pretrained("runs/model"); load_extractor("runs/model").predict(val)  # doctest: +SKIP
"""

from .adaptation import AdaptConfig, AdaptReport, adapt_encoder
from .base import PREDICT_BATCH_SIZE, Extractor, load_extractor, register_family
from .checkpoint import FORMAT_VERSION, CheckpointError, TrainingData
from .generative import GenerativeConfig, GenerativeExtractor
from .inputs import (
    DEFAULT_TEMPLATE,
    INPUT_PRESETS,
    AssembledInput,
    InputAssembler,
    InputParts,
    InputTooLong,
    Segment,
)
from .quantization import Int8Unavailable
from .self_training import pseudo_label
from .span_pair import (
    THRESHOLD_GRID,
    SpanPairConfig,
    SpanPairEnsemble,
    SpanPairExtractor,
    ThresholdChoice,
    default_encoder_path,
)
from .tool import ExtractionInput, ExtractionResult, make_extraction_tool
from .training import EpochLog, FitReport, Scorer, TrainConfig

__all__ = [
    "DEFAULT_TEMPLATE",
    "FORMAT_VERSION",
    "INPUT_PRESETS",
    "PREDICT_BATCH_SIZE",
    "THRESHOLD_GRID",
    "AdaptConfig",
    "AdaptReport",
    "AssembledInput",
    "CheckpointError",
    "EpochLog",
    "ExtractionInput",
    "ExtractionResult",
    "Extractor",
    "FitReport",
    "GenerativeConfig",
    "GenerativeExtractor",
    "InputAssembler",
    "InputParts",
    "InputTooLong",
    "Int8Unavailable",
    "Scorer",
    "Segment",
    "SpanPairConfig",
    "SpanPairEnsemble",
    "SpanPairExtractor",
    "ThresholdChoice",
    "TrainConfig",
    "TrainingData",
    "adapt_encoder",
    "default_encoder_path",
    "load_extractor",
    "make_extraction_tool",
    "pseudo_label",
    "register_family",
]
