"""Posts that fit in one window take the same path as before windows existed: same predictions.

    nice -n 10 .venv/bin/python benchmarks/window_path_check.py [--model DIR | --epochs N] [--seed 17]

Trains the default span-pair model on one seed's train split (or loads ``--model``), then predicts the
seed's val split twice with ``kecpm predict``, once with this code and once with the code before long
posts were read in windows (``--baseline-ref``, default: the parent of the commit that added
``extractor/windows.py``, exported from git into a temporary folder), and compares the two predictions
files post by post. Also counts the val posts that fit in one window (all of the real ones do).
Prints ``identical predictions: N of M``; exit status 1 when any differs. Reads ../shared/data (or
``$KECPM_DATA_DIR``) and says so when it is missing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _baseline_ref(repo: Path) -> str:
    added = _git(repo, "log", "--diff-filter=A", "--format=%H", "--", "extractor/windows.py").splitlines()
    if not added:
        sys.exit("extractor/windows.py was never committed here: pass --baseline-ref")
    return f"{added[-1]}^"


def _predict(package_root: Path, model: Path, data: Path, out: Path, threads: int) -> float:
    """Run ``kecpm predict`` with the kecpm package found under ``package_root``; seconds taken."""
    env = {**os.environ, "PYTHONPATH": str(package_root), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "kecpm", "predict", "--model", str(model), "--data", str(data)]
    command += ["--out", str(out), "--threads", str(threads), "--batch-size", "64"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"kecpm predict failed under {package_root}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the jmere/few_shot folder")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--model", type=Path, default=None, help="a trained span-pair model folder")
    parser.add_argument("--epochs", type=int, default=20, help="without --model: training epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/window_path_check"))
    parser.add_argument("--baseline-ref", default=None, help="git ref of the code to compare with")
    args = parser.parse_args()

    import kecpm
    from kecpm.eval import make_scorer
    from kecpm.extractor import SpanPairExtractor, TrainConfig, load_extractor
    from kecpm.paths import require_data_dir
    from kecpm.post_files import load_split

    try:
        seed_dir = (args.data or require_data_dir() / "jmere" / "few_shot") / f"seed_{args.seed}"
    except Exception as exc:  # the data folder is not there: say so, do not fake a result
        sys.exit(f"no data: {exc}")
    if not (seed_dir / "val.json").is_file():
        sys.exit(f"no data: {seed_dir / 'val.json'} is missing")
    val = load_split(seed_dir, "val")
    args.out.mkdir(parents=True, exist_ok=True)

    model_dir = args.model
    if model_dir is None:
        import torch

        torch.set_num_threads(args.threads)
        model_dir = args.out / f"model_seed{args.seed}"
        started = time.perf_counter()
        model = SpanPairExtractor()
        model.fit(
            load_split(seed_dir, "train"),
            val,
            scorer=make_scorer(mode="paper", metric="micro_f1"),
            config=TrainConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
            checkpoint_dir=model_dir,
            progress=False,
        )
        print(f"trained seed {args.seed} for at most {args.epochs} epochs in {time.perf_counter() - started:.0f} s")
    model = load_extractor(model_dir)
    one_window = sum(model._windows(post) is None for post in val)
    print(f"val posts that fit in one window: {one_window} of {len(val)}")

    package_root = Path(kecpm.__file__).resolve().parent
    ref = args.baseline_ref or _baseline_ref(package_root)
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp)
        (old_root / "kecpm").mkdir()
        archive = subprocess.run(["git", "-C", str(package_root), "archive", ref], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(old_root / "kecpm")], input=archive.stdout, check=True)
        new_root = Path(tmp) / "now"  # this code, importable as kecpm whatever the folder's name
        new_root.mkdir()
        (new_root / "kecpm").symlink_to(package_root)
        new_file, old_file = args.out / "predictions_windows.jsonl", args.out / "predictions_before.jsonl"
        new_s = _predict(new_root, model_dir, seed_dir / "val.json", new_file, args.threads)
        old_s = _predict(old_root, model_dir, seed_dir / "val.json", old_file, args.threads)
    new_lines = new_file.read_text(encoding="utf-8").splitlines()
    old_lines = old_file.read_text(encoding="utf-8").splitlines()
    same = sum(a == b for a, b in zip(new_lines, old_lines, strict=False))
    print(
        f"baseline: {_git(package_root, 'rev-parse', '--short', ref)} ({ref}); predict {old_s:.1f} s, now {new_s:.1f} s"
    )
    print(
        f"identical predictions: {same} of {len(val)} val posts (files of {len(new_lines)} and {len(old_lines)} lines)"
    )
    sys.exit(0 if same == len(val) == len(new_lines) == len(old_lines) else 1)


if __name__ == "__main__":
    main()
