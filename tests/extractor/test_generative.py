from __future__ import annotations

import pytest

from kecpm.answers import parse_answer
from kecpm.extractor import GenerativeConfig, GenerativeExtractor, InputParts, TrainConfig, load_extractor
from kecpm.extractor.generative import answer_text
from kecpm.synthetic import synthetic_posts


def test_the_target_text_parses_back_over_every_relation():
    for post in synthetic_posts(21, seed=3):
        text = answer_text(post.quintuples)
        assert text.startswith("The relation between ") and not text.endswith(".")
        parsed = parse_answer(text, tokens=post.tokens)
        assert parsed.invalid == []
        assert parsed.quintuples == post.quintuples  # spans recovered from the tokens too
    assert answer_text([]) == ""


@pytest.fixture(scope="module")
def word_tokenizer(synthetic_split):
    """A word-level tokenizer over the synthetic posts and their targets: a vocabulary of a few
    hundred keeps the tiny models fast, and it keeps the case (unlike the MiniLM WordPiece one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    train, val = synthetic_split
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    corpus = [p.text for p in train + val] + [answer_text(p.quintuples) for p in train + val]
    corpus += ["image: knowledge: " + p.image_description + " " + " ".join(p.knowledge) for p in train + val]
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words = sorted({w for line in corpus for w, _ in pre.pre_tokenize_str(line)})
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def _save_tiny(kind: str, folder, tokenizer):
    """A random seq2seq (T5) or causal (GPT-2) model of one 32-wide layer, saved like a hub checkpoint."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    if kind == "t5":
        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.sep_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        model = T5ForConditionalGeneration(config)
    else:
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=1,
            n_head=2,
            n_positions=512,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
        )
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_generative_trains_predicts_saves_and_loads(kind, tmp_path, word_tokenizer, synthetic_split, scorer):
    train, val = synthetic_split
    checkpoint = _save_tiny(kind, tmp_path / kind, word_tokenizer)
    model = GenerativeExtractor(
        GenerativeConfig(model=str(checkpoint), max_length=128, max_new_tokens=24), parts=InputParts.preset("imagecap")
    )
    report = model.fit(
        train[:12],
        val[:4],
        scorer=scorer,
        config=TrainConfig(epochs=2, batch_size=4, learning_rate=1e-3),
        progress=False,
    )
    assert len(report.history) == 2
    assert report.history[1].loss < report.history[0].loss
    model.invalid.clear()
    parsed = model.predict_parsed(val[:4], batch_size=2)
    assert len(parsed) == 4
    # A random tiny model writes mostly unparsable text: counted, not raised.
    assert model.invalid["pieces"] == sum(len(p.invalid) for p in parsed)
    predictions = model.predict(val[:4])
    saved = model.save_pretrained(tmp_path / "saved")
    # the Hugging Face layout: kecpm's card and the model card at the root, a plain transformers folder in model/
    assert (saved / "config.json").is_file() and (saved / "README.md").is_file()
    assert (saved / "model" / "config.json").is_file()
    again = load_extractor(saved)
    assert isinstance(again, GenerativeExtractor)
    assert again.predict(val[:4]) == predictions
    assert again.assembler.parts == InputParts.preset("imagecap")


def test_generative_learns_to_write_the_quintuples(tmp_path, word_tokenizer, synthetic_split, scorer):
    """Memorising a post shows the whole path: target, loss masking, generation and parsing back."""
    train, _ = synthetic_split
    posts = train[:1]
    checkpoint = _save_tiny("gpt2", tmp_path / "gpt2", word_tokenizer)
    model = GenerativeExtractor(
        GenerativeConfig(model=str(checkpoint), max_length=64, max_new_tokens=30), parts=InputParts.preset("only_text")
    )
    config = TrainConfig(epochs=40, batch_size=1, learning_rate=1e-2, patience=40, seed=3)
    report = model.fit(posts, posts, scorer=scorer, config=config, progress=False)
    assert report.best_score == 1.0, [e.val_score for e in report.history]
    assert model.predict(posts) == [p.quintuples for p in posts]


def test_a_checkpoint_that_is_not_there_is_named(synthetic_split, scorer, tmp_path):
    train, val = synthetic_split
    model = GenerativeExtractor(GenerativeConfig(model=str(tmp_path / "t5-base")))
    with pytest.raises(Exception, match="no such checkpoint folder"):
        model.fit(train[:2], val[:2], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
