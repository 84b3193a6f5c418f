"""int8 inference: dynamic quantization of a network's linear layers, and the deprecation it lives with.

It runs on ``torch.ao.quantization.quantize_dynamic``, which torch marks deprecated in favour of the
separate ``torchao`` package (a ``DeprecationWarning`` on import and on each call, and a ``UserWarning``
about quantized tensor creation), yet still ships and runs in torch 2.13. kecpm keeps it, because it is
the CPU path that was measured (x1.46 batched throughput on seed 17's val, README) and ``torchao``'s
int8 on CPU is built around ``torch.compile``; it silences exactly those two warnings (any other warning
passes through), says once in the log what it uses, and when a torch without it comes, raises
:class:`Int8Unavailable` with what to do instead of an ``ImportError``.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

from ..errors import KecpmError

__all__ = ["TORCH_AO_WARNINGS", "Int8Unavailable", "quantize_linear_int8"]

logger = logging.getLogger("kecpm.extractor")

TORCH_AO_WARNINGS = (
    r"torch\.ao\.quantization is deprecated",
    r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation functions",
)
"""The messages of the warnings that torch's int8 API raises about itself (regular expressions)."""


@functools.cache
def _say_once_what_runs_it() -> None:
    logger.info("int8: torch.ao.quantization.quantize_dynamic (deprecated by torch for torchao, still supported)")


class Int8Unavailable(KecpmError):
    """This torch cannot run kecpm's int8 inference."""


def quantize_linear_int8(module: Any) -> Any:
    """``module`` with every ``torch.nn.Linear`` replaced by a dynamically quantized int8 one (weights
    per output channel, activations quantized per batch at run time); the module is changed in place
    and returned, so quantize a copy.

    >>> fast = quantize_linear_int8(copy.deepcopy(network.encoder))  # doctest: +SKIP
    """
    import torch

    if not {"fbgemm", "x86", "qnnpack", "onednn"} & set(torch.backends.quantized.supported_engines):
        raise Int8Unavailable(
            f"this torch build ({torch.__version__}) has no int8 CPU engine: predict in float (without --int8)"
        )
    with warnings.catch_warnings():
        for message in TORCH_AO_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError:
            raise Int8Unavailable(
                f"int8 inference needs torch.ao.quantization, which torch {torch.__version__} does not have: "
                "predict in float (without --int8), or install a torch < 2.14 (kecpm's tested range)"
            ) from None
        # per output channel: one scale per row of each weight matrix, less error for the same speed
        quantized = quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    _say_once_what_runs_it()
    return quantized
