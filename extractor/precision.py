"""The float precision the encoder runs in at prediction: float32, or bfloat16 where the CPU has it.

On a CPU with native bfloat16 (AVX-512 BF16 or AMX, as oneDNN reports it) the encoder's matrix products
run about twice as fast in bfloat16 under ``torch.autocast``, and its hidden states stay within a cosine
of 0.9999 of float32's; the heads and everything after the encoder stay in float32. ``"auto"`` takes
bfloat16 only where it is native (elsewhere it is emulated and slower). Training is always float32.

The price: bfloat16's sums depend on the kernel's blocking, i.e. on how posts are batched and on the
threads, so a post near a decision margin can get other quintuples in another batch or on a cluster worker
(seed 17's val: 221 of 224 posts identical to float32, the same F1). Where predictions must be byte-identical
across batch sizes or paths (``--ray``), use ``"float32"``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Literal

__all__ = ["Precision", "bfloat16_native", "encoder_precision", "resolve_precision"]

Precision = Literal["auto", "float32", "bfloat16"]


@functools.cache
def bfloat16_native() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (oneDNN's own check)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN or without the check
        return False


def resolve_precision(precision: Precision) -> Literal["float32", "bfloat16"]:
    """``"auto"``: bfloat16 where it is native, else float32; the other two as given."""
    if precision == "auto":
        return "bfloat16" if bfloat16_native() else "float32"
    return precision


@contextlib.contextmanager
def encoder_precision(precision: Precision) -> Iterator[None]:
    """Run the code inside (the encoder's forward pass) in ``precision``."""
    if resolve_precision(precision) == "float32":
        yield
        return
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield
