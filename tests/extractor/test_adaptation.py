"""Task-adaptive pretraining on the tiny random BERT: what is saved, what is trained when, the loss."""

from __future__ import annotations

import math

import pytest

from kecpm.extractor import AdaptConfig, AdaptReport, SpanPairConfig, SpanPairExtractor, TrainConfig, adapt_encoder
from kecpm.extractor.adaptation import ADAPTATION_FILE, _masked_loss


@pytest.fixture(scope="module")
def texts(synthetic_split):
    train, _ = synthetic_split
    return [post.tokens for post in train]


def _weights(folder):
    from transformers import AutoModel

    return {k: v.clone() for k, v in AutoModel.from_pretrained(str(folder)).state_dict().items()}


def test_the_adapted_encoder_is_an_encoder_folder_with_new_weights(tiny_encoder, texts, tmp_path):
    config = AdaptConfig(epochs=2, batch_size=8, head_steps=2, learning_rate=1e-3)
    report = adapt_encoder(texts, tmp_path / "adapted", encoder=str(tiny_encoder), config=config)
    assert report.texts == len(texts) and report.steps == 2 * math.ceil(len(texts) / 8)
    assert AdaptReport.model_validate_json((tmp_path / "adapted" / ADAPTATION_FILE).read_text()) == report
    before, after = _weights(tiny_encoder), _weights(tmp_path / "adapted")
    assert before.keys() == after.keys()
    assert all((before[k] == after[k]).all() for k in before if k.startswith("pooler."))  # not trained, kept
    assert not (
        before["encoder.layer.0.attention.self.query.weight"] == after["encoder.layer.0.attention.self.query.weight"]
    ).all()
    assert (tmp_path / "adapted" / "tokenizer.json").is_file()


def test_the_head_steps_leave_the_encoder_as_it_was(tiny_encoder, texts, tmp_path):
    steps = math.ceil(len(texts) / 8)
    adapt_encoder(
        texts, tmp_path / "a", encoder=str(tiny_encoder), config=AdaptConfig(epochs=1, batch_size=8, head_steps=steps)
    )
    before, after = _weights(tiny_encoder), _weights(tmp_path / "a")
    assert all((before[k] == after[k]).all() for k in before)


def test_the_masked_lm_loss_falls(tiny_encoder, texts, tmp_path):
    config = AdaptConfig(epochs=10, batch_size=8, head_steps=0, learning_rate=5e-3, head_learning_rate=5e-3)
    losses = adapt_encoder(texts[:16], tmp_path / "a", encoder=str(tiny_encoder), config=config).epoch_losses
    assert len(losses) == 10 and losses[-1] < losses[0] - 0.5


def test_the_loss_on_masked_tokens_only_is_the_models_own(tiny_encoder, texts):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_encoder))
    model = AutoModelForMaskedLM.from_pretrained(str(tiny_encoder)).eval()
    torch.manual_seed(0)
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    batch = collate([{"input_ids": tokenizer(t, is_split_into_words=True)["input_ids"]} for t in texts[:8]])
    with torch.no_grad():
        expected = model(**batch).loss
        assert torch.allclose(_masked_loss(model, dict(batch)), expected, atol=1e-5)


def test_a_span_pair_model_trains_from_the_adapted_encoder(tiny_encoder, texts, synthetic_split, scorer, tmp_path):
    adapt_encoder(texts, tmp_path / "a", encoder=str(tiny_encoder), config=AdaptConfig(epochs=1, batch_size=16))
    train, val = synthetic_split
    model = SpanPairExtractor(SpanPairConfig(encoder=str(tmp_path / "a"), hidden_size=32, max_length=96))
    report = model.fit(train, val, scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    assert len(report.history) == 1 and len(model.predict(val[:3])) == 3


def test_no_texts_is_refused(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="at least one non-empty text"):
        adapt_encoder([[]], tmp_path / "a", encoder=str(tiny_encoder))
