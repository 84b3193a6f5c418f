"""The float precision the encoder runs in at prediction: float32, or bfloat16 where the CPU has it.

On a CPU with native bfloat16 (AVX-512 BF16 or AMX, as oneDNN reports it) the encoder's matrix products
run about twice as fast in bfloat16 under ``torch.autocast``, and its hidden states stay within a cosine
of 0.9999 of float32's; the heads and everything after the encoder stay in float32. ``"auto"`` takes
bfloat16 only where it is native (elsewhere it is emulated and slower). Training is always float32.

Inside that autocast, the matrix products of the encoder's weights use oneDNN's prepacked bfloat16 copies of
them (:func:`prepacked_linears`): the same products (the same numbers as autocast's, which casts the weights on
every call and lays them out for the kernel each time), about 15 % faster per linear layer here. The copies are
made once per weight and remade when the weight changes (training); where the torch build lacks the oneDNN op,
autocast alone runs.

The price: bfloat16's sums depend on the kernel's blocking, i.e. on how posts are batched and on the
threads, so a post near a decision margin can get other quintuples in another batch or on a cluster worker
(seed 17's val: 221 of 224 posts identical to float32, the same F1). Where predictions must be byte-identical
across batch sizes or paths (``--ray``), use ``"float32"``.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from typing import Any, Literal

__all__ = [
    "Precision",
    "bfloat16_native",
    "encoder_precision",
    "prepacked_linear_available",
    "prepacked_linears",
    "resolve_precision",
]

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
        if prepacked_linear_available() and not torch.is_grad_enabled():
            with prepacked_linears():
                yield
        else:
            yield


@functools.cache
def prepacked_linear_available() -> bool:
    """Whether this torch has oneDNN's prepacked linear ops (``torch.ops.mkldnn``; private, so checked)."""
    import torch

    try:
        return bfloat16_native() and all(
            hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):
        return False


# id(weight) -> (a reference to the weight, its version when packed, the packed weight, the bfloat16 bias);
# keyed by id since a tensor's == is elementwise, and dropped when the weight is freed
_PACKED: dict[int, tuple[Any, int, Any, Any]] = {}


def _packed(weight: Any, bias: Any) -> tuple[Any, Any]:
    """The prepacked bfloat16 copy of a weight and its bias, made again when either changed in place."""
    import torch

    version = weight._version + (bias._version if bias is not None else 0)
    key = id(weight)
    found = _PACKED.get(key)
    if found is None or found[0]() is not weight or found[1] != version:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16))
            packed_bias = bias.detach().to(torch.bfloat16) if bias is not None else None
        reference = weakref.ref(weight, lambda _, key=key: _PACKED.pop(key, None))
        found = _PACKED[key] = (reference, version, packed, packed_bias)
    return found[2], found[3]


@functools.cache
def _prepacked_mode() -> type:
    """The class of :func:`prepacked_linears`' mode, built on first use so that importing this module needs no torch."""
    import torch
    from torch.overrides import TorchFunctionMode

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            if (
                func is torch.nn.functional.linear
                and not kwargs
                and isinstance(args[1], torch.nn.Parameter)
                and args[0].device.type == "cpu"
            ):
                weight, bias = args[1], args[2] if len(args) > 2 else None
                packed, packed_bias = _packed(weight, bias)
                return torch.ops.mkldnn._linear_pointwise(
                    args[0].to(torch.bfloat16), packed, packed_bias, "none", [], ""
                )
            return func(*args, **kwargs)

    return Mode


def prepacked_linears() -> Any:
    """A torch function mode (thread-local, for its ``with`` block only) in which every ``linear`` whose
    weight is a parameter runs on a prepacked bfloat16 copy of that weight, in bfloat16 like autocast's
    (the same numbers); every other call passes through. For inference only (the prepacked op has no
    gradient): :func:`encoder_precision` enters it with gradients off."""
    return _prepacked_mode()()
