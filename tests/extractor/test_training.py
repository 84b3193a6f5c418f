from __future__ import annotations

import platform

import pytest

from kecpm.extractor import SpanPairConfig, SpanPairExtractor, TrainConfig, load_extractor
from kecpm.extractor.training import return_freed_memory


def _tiny(tiny_encoder) -> SpanPairExtractor:
    return SpanPairExtractor(SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96))


def test_same_seed_same_training(tiny_encoder, synthetic_split, scorer):
    train, val = synthetic_split
    runs = []
    for _ in range(2):
        report = _tiny(tiny_encoder).fit(
            train, val, scorer=scorer, config=TrainConfig(epochs=2, seed=5), progress=False
        )
        runs.append(([round(e.loss, 6) for e in report.history], [e.val_score for e in report.history]))
    assert runs[0] == runs[1]


def test_early_stopping_keeps_the_best_epoch(tiny_encoder, synthetic_split, tmp_path):
    train, val = synthetic_split
    scores = iter([0.2, 0.5, 0.1, 0.3, 0.4, 0.9])
    model = _tiny(tiny_encoder)
    report = model.fit(
        train[:8],
        val[:4],
        scorer=lambda g, p: next(scores),
        config=TrainConfig(epochs=6, patience=2),
        checkpoint_dir=tmp_path / "best",
        progress=False,
    )
    assert [e.val_score for e in report.history] == [0.2, 0.5, 0.1, 0.3]
    assert (report.best_epoch, report.best_score) == (2, 0.5)
    # the checkpoint holds the best epoch's weights, which the model has again
    assert load_extractor(tmp_path / "best").predict(val[:4]) == model.predict(val[:4])


def test_fit_needs_training_and_validation_posts(tiny_encoder, synthetic_split, scorer):
    train, val = synthetic_split
    with pytest.raises(ValueError, match="at least one training post"):
        _tiny(tiny_encoder).fit([], val, scorer=scorer)
    with pytest.raises(ValueError, match="early stopping selects on them"):
        _tiny(tiny_encoder).fit(train, [], scorer=scorer)


def test_training_returns_freed_memory_to_the_os_on_glibc():
    glibc = platform.libc_ver()[0] == "glibc"
    assert return_freed_memory() is glibc
    assert return_freed_memory(False) is glibc  # back to a threshold that keeps prediction fast
