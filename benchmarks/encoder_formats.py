"""Ways to run the span-pair encoder faster at prediction, against float32 in the same run.

    .venv/bin/python benchmarks/encoder_formats.py --threads 2 [--encoder DIR] [--tokens 94] [--batch 64]

One forward pass of the encoder (default all-MiniLM-L6-v2) over a batch of ``--batch`` inputs of ``--tokens``
tokens (94: the mean input of seed 17's val with image description and ChatGPT knowledge), timed for:

- float32 (the baseline);
- ``torch.autocast`` bfloat16, what ``SpanPairConfig(inference_precision="bfloat16")`` runs;
- the encoder's weights cast to bfloat16 (layer norms and softmax in bfloat16 too, no casts per call);
- ``torch.compile`` (inductor, dynamic shapes) under the same autocast, its compile time apart.

Each row prints seconds per batch, the ratio to float32 and the mean cosine of the last hidden states to
float32's. The encoder is about 84 % of prediction time (the heads, decoding and tokenization the rest), so
a ratio here bounds what the format adds to ``benchmarks/extractor_perf.py``'s posts/s. Without native
bfloat16 (``kecpm.extractor.precision.bfloat16_native``) the bfloat16 rows are emulated and slower.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(encoder, context: Callable[[], contextlib.AbstractContextManager], inputs: dict, repeats: int):
    """Seconds per forward pass (after one warm-up pass) and the last hidden states, in float32."""
    import torch

    with torch.inference_mode(), context():
        encoder(**inputs)
        started = time.perf_counter()
        for _ in range(repeats):
            hidden = encoder(**inputs).last_hidden_state
    return (time.perf_counter() - started) / repeats, hidden.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default=None, help="a local encoder folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=94)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = parser.parse_args()

    import torch
    from transformers import AutoModel

    from kecpm.extractor import default_encoder_path
    from kecpm.extractor.precision import bfloat16_native, encoder_precision

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(args.encoder or default_encoder_path()).eval()
    ids = torch.randint(1000, encoder.config.vocab_size, (args.batch, args.tokens))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def autocast() -> contextlib.AbstractContextManager:
        return encoder_precision("bfloat16")  # exactly what prediction runs

    print(
        f"threads {args.threads}; batch {args.batch} x {args.tokens} tokens; "
        f"native bfloat16: {'yes' if bfloat16_native() else 'no (the bfloat16 rows are emulated)'}"
    )
    base, reference = timed(encoder, contextlib.nullcontext, inputs, args.repeats)
    rows: list[tuple[str, Callable[[], tuple[float, torch.Tensor]]]] = [
        ("autocast bfloat16 (inference_precision)", lambda: timed(encoder, autocast, inputs, args.repeats)),
        (
            "weights cast to bfloat16",
            lambda: timed(copy.deepcopy(encoder).to(torch.bfloat16), contextlib.nullcontext, inputs, args.repeats),
        ),
    ]
    if not args.no_compile:
        rows.append(
            ("torch.compile + autocast", lambda: timed(torch.compile(encoder, dynamic=True), autocast, inputs, 3))
        )
    print(f"float32 (baseline): {base:.3f} s per batch")
    for name, run in rows:
        started = time.perf_counter()
        seconds, hidden = run()
        cosine = torch.nn.functional.cosine_similarity(hidden.flatten(0, 1), reference.flatten(0, 1)).mean()
        print(
            f"{name}: {seconds:.3f} s per batch, x{base / seconds:.2f} float32, cosine {cosine:.5f} "
            f"({time.perf_counter() - started:.0f} s with warm-up and compilation)"
        )


if __name__ == "__main__":
    main()
