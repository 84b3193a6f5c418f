"""Performance of the span-pair extractor: training time to the best val F1, prediction throughput,
peak memory. Each figure is printed with its goal and a baseline measured in the same run.

    nice -n 10 .venv/bin/python benchmarks/extractor_perf.py --threads 2 [--model DIR] [--runs FILE]

- Throughput: posts/s of batched prediction (``--batch-size``, default ``PREDICT_BATCH_SIZE``) against one
  post at a time (the baseline), on the val posts of ``--seed`` with all inputs (captions + knowledge), in a
  first pass after a warm-up on 8 posts (the figure held to the goal, >= 100) and again (every batch shape
  seen once). Then, in the same run, what the eleventh push's speed-ups give: batches of 64 (the earlier
  default) and, in bfloat16, autocast alone without the prepacked weights (``kecpm.extractor.precision``).
  Then the model's precision (``SpanPairConfig.inference_precision``, or ``--precision``; ``auto``:
  bfloat16 where the CPU has it natively) against float32, and with a trained model the val F1 of both.
- With ``--model`` given more than once: the ensemble of those models (``SpanPairEnsemble``) against its
  first member alone (the baseline), throughput and val F1; the ensemble counts its members.
- With ``--int8``: the same throughput for the int8 copy (``SpanPairExtractor.quantized``) against the
  float model (the baseline), and, with a trained ``--model``, val paper micro-F1 of both.
- The float32 ceiling: the encoder's matrix products per post at the rate this CPU reaches for a linear
  layer of that shape, i.e. the most posts/s that float32 prediction could reach here.
- Peak RSS of this process (``ru_maxrss``) against the RSS after importing torch and transformers
  (the baseline). Goal <= 2 GB.
- Training time to the best val F1: from a quality study's ``runs.jsonl`` (``--runs``, written by
  ``benchmarks/extractor_quality.py``; several files: also their sum per seed, an ensemble's), or by training
  here with ``--train``. Goal <= 10 min per seed.

Without ``--model`` the throughput is measured on an untrained model (random heads), which is the
worst case for decoding: most spans pass the entity threshold, so every post gets the maximum of
candidate entities and pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the jmere/few_shot folder")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--model", type=Path, action="append", default=None, help="a trained model directory; repeated: an ensemble"
    )
    parser.add_argument("--train", action="store_true", help="train here to time training (one seed)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--preset", default="imagecap_know")
    parser.add_argument(
        "--runs", type=Path, nargs="+", default=None, help="runs.jsonl of quality studies (several: an ensemble's)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: kecpm.extractor.PREDICT_BATCH_SIZE")
    parser.add_argument("--int8", action="store_true", help="also measure the int8 copy against the float model")
    parser.add_argument("--save", type=Path, default=None, help="with --train: save the trained model here")
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="the encoder's precision at prediction instead of the model's own (a quality study's "
        "--set inference_precision=float32 is saved with its models)",
    )
    args = parser.parse_args()

    import torch
    import transformers  # noqa: F401  (part of the baseline memory)

    from kecpm.paths import require_data_dir
    from kecpm.post_files import load_split

    torch.set_num_threads(args.threads)
    baseline_rss = rss_mb()
    data = args.data or require_data_dir() / "jmere" / "few_shot"
    train = load_split(data / f"seed_{args.seed}", "train")
    val = load_split(data / f"seed_{args.seed}", "val")
    print(f"threads {args.threads}; {len(val)} val posts of seed {args.seed}; baseline RSS {baseline_rss:.0f} MB")

    from kecpm.extractor import PREDICT_BATCH_SIZE, InputParts, SpanPairExtractor, TrainConfig, load_extractor

    args.batch_size = args.batch_size or PREDICT_BATCH_SIZE

    if args.model is not None and len(args.model) > 1:
        ensemble_throughput(args.model, val, args.batch_size, args.precision)
        report_peak(baseline_rss)
        if args.runs is not None:
            study_times(args.runs)
        return
    if args.model is not None:
        model = load_extractor(args.model[0])
        kind = f"trained model {args.model[0]}"
    elif args.train:
        from kecpm.eval import make_scorer

        model = SpanPairExtractor(parts=InputParts.preset(args.preset))
        report = model.fit(
            train,
            val,
            scorer=make_scorer(mode="paper", metric="micro_f1"),
            config=TrainConfig(seed=args.seed, epochs=args.epochs, threads=args.threads),
        )
        print(
            f"training: best val micro-F1 {100 * report.best_score:.1f} at epoch {report.best_epoch}, "
            f"{report.seconds_to_best / 60:.1f} min to best, {report.seconds / 60:.1f} min in all "
            f"(goal <= 10 min to best: {'met' if report.seconds_to_best <= 600 else 'NOT met'})"
        )
        kind = "model trained here"
        if args.save is not None:
            model.save(args.save)
    else:
        model = SpanPairExtractor(parts=InputParts.preset(args.preset))
        model._prepare(train)  # builds the network and label schema without training
        kind = "untrained model (worst case for decoding)"

    with_precision(model, args.precision)
    model.predict(val[:8])  # warm-up
    started, cpu_started = time.perf_counter(), time.process_time()
    predictions = model.predict(val, batch_size=args.batch_size)
    batched = len(val) / (time.perf_counter() - started)
    # CPU seconds, summed over threads: what the figure would be on idle cores (the machine is shared)
    per_cpu_second = len(val) / (time.process_time() - cpu_started)
    single_posts = val[:60]
    started = time.perf_counter()
    for post in single_posts:
        model.predict([post], batch_size=1)
    single = len(single_posts) / (time.perf_counter() - started)
    print(
        f"throughput ({kind}): batched {batched:.0f} posts/s vs one at a time {single:.0f} posts/s "
        f"(x{batched / single:.1f}); goal >= 100 posts/s: {'met' if batched >= 100 else 'NOT met'}; "
        f"{per_cpu_second:.0f} posts per CPU-second ({args.threads} threads: "
        f"about {per_cpu_second * args.threads:.0f} posts/s on idle cores)"
    )
    compare_speedups(model, val, args.batch_size, batched)
    compute_ceiling(model, val, batched, args.threads)
    trained = kind != "untrained model (worst case for decoding)"
    compare_float32(model, val, predictions, args.batch_size, batched, trained=trained)
    if args.int8:
        compare_int8(model, val, args.batch_size, batched, trained=trained)
    report_peak(baseline_rss)

    if args.runs is not None:
        study_times(args.runs)


def compute_ceiling(model, val, batched: float, threads: int) -> None:
    """What this CPU allows at most in float32: the encoder's matrix products per post (its linear layers
    and attention, over the post's real tokens, no padding) at the rate measured here for a linear layer
    of the encoder's shape. Prediction cannot beat it without fewer tokens, a smaller encoder or a faster
    number format."""
    import torch

    encoder = model.network.encoder.config
    hidden, inner, layers = encoder.hidden_size, encoder.intermediate_size, encoder.num_hidden_layers
    lengths = [len(model.inputs.encode(post, with_labels=False).ids) for post in val]
    per_token = 2 * layers * (4 * hidden * hidden + 2 * hidden * inner)
    per_post = statistics.mean(n * per_token + 4 * layers * n * n * hidden for n in lengths)
    x, weight = torch.randn(4096, hidden), torch.randn(inner, hidden)
    with torch.inference_mode():
        torch.nn.functional.linear(x, weight)  # warm-up
        repeats, started = 20, time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, weight)
        rate = repeats * 2 * x.shape[0] * hidden * inner / (time.perf_counter() - started)
    ceiling = rate / per_post
    print(
        f"float32 ceiling here: {per_post / 1e9:.2f} GFLOP per post (mean {statistics.mean(lengths):.0f} tokens) at "
        f"{rate / 1e9:.0f} GFLOP/s (a linear layer of the encoder's shape, {threads} threads) allow at most "
        f"{ceiling:.0f} posts/s; batched prediction reaches {batched / ceiling:.0%} of it"
    )


def study_times(files: list[Path]) -> None:
    """Minutes to the best val per seed of each study's runs; for several files, also their sum per seed:
    what an ensemble of those members costs to train one after the other."""
    per_seed: dict[int, float] = {}
    seeds_of: list[set[int]] = []
    for file in files:
        runs = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        seeds_of.append({r["seed"] for r in runs})
        for preset in dict.fromkeys(r["preset"] for r in runs):
            mine = [r for r in runs if r["preset"] == preset]
            times = [r["seconds_to_best"] / 60 for r in mine]
            for r in mine:
                per_seed[r["seed"]] = per_seed.get(r["seed"], 0.0) + r["seconds_to_best"] / 60
            listed = ", ".join(f"{r['seed']}: {r['seconds_to_best'] / 60:.1f}" for r in mine)
            print(
                f"study {file.parent.name} {preset}: minutes to best val per seed {listed} (mean "
                f"{statistics.mean(times):.1f}, max {max(times):.1f}; "
                f"goal <= 10: {'met' if max(times) <= 10 else 'NOT met'})"
            )
    complete = {seed: minutes for seed, minutes in per_seed.items() if all(seed in seeds for seeds in seeds_of)}
    if len(files) > 1 and complete:  # only the seeds every study has: a partial sum would flatter the ensemble
        listed = ", ".join(f"{seed}: {minutes:.1f}" for seed, minutes in complete.items())
        print(
            f"ensemble of these studies' members, trained one after the other: minutes to best val per seed {listed} "
            f"(goal <= 10: {'met' if max(complete.values()) <= 10 else 'NOT met'})"
        )


def report_peak(baseline_rss: float) -> None:
    peak = peak_rss_mb()
    print(
        f"peak RSS {peak:.0f} MB (x{peak / baseline_rss:.1f} the {baseline_rss:.0f} MB after imports); "
        f"goal <= 2048 MB: {'met' if peak <= 2048 else 'NOT met'}"
    )


def with_precision(model, precision: str | None) -> None:
    if precision is not None:
        model.config = model.config.model_copy(update={"inference_precision": precision})


def ensemble_throughput(folders: list[Path], val, batch_size: int, precision: str | None) -> None:
    """An ensemble's batched throughput (its members count: one network pass each) against its first
    member alone (the baseline), and the val paper micro-F1 of both."""
    from kecpm.eval import evaluate
    from kecpm.extractor import SpanPairEnsemble, SpanPairExtractor

    members = [SpanPairExtractor.from_pretrained(folder) for folder in folders]
    for member in members:
        with_precision(member, precision)
    rates, f1 = {}, {}
    for name, model in (("first member", members[0]), (f"ensemble of {len(members)}", SpanPairEnsemble(members))):
        model.predict(val[:8])  # warm-up
        started = time.perf_counter()
        predictions = model.predict(val, batch_size=batch_size)
        rates[name] = len(val) / (time.perf_counter() - started)
        f1[name] = evaluate(val, predictions, mode="paper").micro.f1
    (first, rate_first), (ensemble, rate) = rates.items()
    print(
        f"throughput: {ensemble} {rate:.0f} posts/s vs {first} {rate_first:.0f} posts/s (x{rate / rate_first:.2f}); "
        f"goal >= 100 posts/s: {'met' if rate >= 100 else 'NOT met'}; val paper micro-F1 {100 * f1[ensemble]:.1f} "
        f"vs {100 * f1[first]:.1f}"
    )


def timed(model, val, batch_size: int) -> float:
    started = time.perf_counter()
    model.predict(val, batch_size=batch_size)
    return len(val) / (time.perf_counter() - started)


def compare_speedups(model, val, batch_size: int, first_pass: float) -> None:
    """The first pass (``first_pass`` posts/s) against a second one, batches of 64 and, in bfloat16,
    autocast without the prepacked weights: the same model, posts and precision, one after the other."""
    from unittest import mock

    from kecpm.extractor import precision

    again = timed(model, val, batch_size)
    line = f"again (shapes seen): {again:.0f} posts/s (x{again / first_pass:.2f} the first pass)"
    if batch_size != 64:
        model.predict(val, batch_size=64)  # its shapes seen once too
        rate = timed(model, val, 64)
        line += f"; batches of 64: {rate:.0f} posts/s (batches of {batch_size}: x{again / rate:.2f})"
    if precision.resolve_precision(model.config.inference_precision) == "bfloat16":
        if precision.prepacked_linear_available():
            with mock.patch.object(precision, "prepacked_linear_available", lambda: False):
                rate = timed(model, val, batch_size)
            line += f"; autocast alone: {rate:.0f} posts/s (prepacked weights: x{again / rate:.2f})"
        else:
            line += "; this torch has no prepacked bfloat16 linear op: autocast alone"
    print(line)


def compare_float32(model, val, default_predictions, batch_size: int, default_rate: float, *, trained: bool) -> None:
    """The default precision (``auto``: bfloat16 where the CPU has it), whose batched run gave
    ``default_predictions`` at ``default_rate``, against float32: same model and posts."""
    from kecpm.eval import evaluate
    from kecpm.extractor.precision import resolve_precision

    default = model.config
    chosen = resolve_precision(default.inference_precision)
    model.config = default.model_copy(update={"inference_precision": "float32"})
    try:
        model.predict(val[:8])  # warm-up
        started = time.perf_counter()
        float_predictions = model.predict(val, batch_size=batch_size)
        rate = len(val) / (time.perf_counter() - started)
    finally:
        model.config = default
    print(
        f"precision {default.inference_precision} ({chosen}): x{default_rate / rate:.2f} the float32 {rate:.0f} posts/s"
    )
    if trained:
        ours = evaluate(val, default_predictions, mode="paper").micro.f1
        theirs = evaluate(val, float_predictions, mode="paper").micro.f1
        same = sum(a == b for a, b in zip(default_predictions, float_predictions, strict=True))
        print(
            f"val paper micro-F1: {chosen} {100 * ours:.1f} vs float32 {100 * theirs:.1f}; "
            f"{same} of {len(val)} posts with identical quintuples"
        )


def compare_int8(model, val, batch_size: int, float_rate: float, *, trained: bool) -> None:
    from kecpm.eval import evaluate

    fast = model.quantized()
    fast.predict(val[:8])  # warm-up
    started = time.perf_counter()
    int8_predictions = fast.predict(val, batch_size=batch_size)
    rate = len(val) / (time.perf_counter() - started)
    print(
        f"int8: batched {rate:.0f} posts/s vs float {float_rate:.0f} posts/s (x{rate / float_rate:.2f}); "
        f"goal >= 100 posts/s: {'met' if rate >= 100 else 'NOT met'}"
    )
    if trained:
        float_f1 = evaluate(val, model.predict(val, batch_size=batch_size), mode="paper").micro.f1
        int8_f1 = evaluate(val, int8_predictions, mode="paper").micro.f1
        print(f"val paper micro-F1: int8 {100 * int8_f1:.1f} vs float {100 * float_f1:.1f}")


if __name__ == "__main__":
    main()
