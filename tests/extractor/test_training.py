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


def test_weight_average_follows_the_trained_weights_and_is_applied_only_inside_its_block():
    import torch

    from kecpm.extractor.training import WeightAverage

    network = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        network.weight.fill_(0.0)
    average = WeightAverage(network, decay=0.5)
    with torch.no_grad():
        network.weight.fill_(1.0)
    average.update()  # warmed up: the first update's decay is min(0.5, 2/11) = 2/11
    expected = 1 - 2 / 11
    with average.applied():
        assert torch.allclose(network.weight, torch.full((1, 2), expected))
    assert torch.equal(network.weight, torch.ones(1, 2))  # the trained weights are back
    for _ in range(20):
        average.update()
    with average.applied():
        assert torch.allclose(network.weight, torch.ones(1, 2), atol=1e-5)


def test_fit_with_weight_average_validates_and_keeps_the_average(tiny_encoder, synthetic_split, scorer):
    import torch

    train, val = synthetic_split

    def run(weight_average: float):
        model = _tiny(tiny_encoder)
        states = []

        def recording(gold, predictions):
            states.append({k: v.clone() for k, v in model.network.state_dict().items()})
            return [0.2, 0.5, 0.1][len(states) - 1]

        config = TrainConfig(epochs=3, seed=5, weight_average=weight_average, patience=3)
        report = model.fit(train[:8], val[:4], scorer=recording, config=config, progress=False)
        return model, report, states

    _, plain_report, plain_states = run(0.0)
    averaged, averaged_report, averaged_states = run(0.9)
    # averaging does not change training: the trained weights are put back after each validation
    assert [e.loss for e in averaged_report.history] == [e.loss for e in plain_report.history]
    # what was validated is not the trained weights, and the best epoch's average is what the model keeps
    assert not torch.equal(averaged_states[0]["span_head.0.weight"], plain_states[0]["span_head.0.weight"])
    kept = averaged.network.state_dict()
    assert all(torch.equal(kept[k], averaged_states[1][k]) for k in kept)
