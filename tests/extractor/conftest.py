"""Tiny models built from configs (random weights, the MiniLM WordPiece tokenizer), a plain scorer,
and one trained span-pair model shared by the tests of this folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from kecpm.records import Post, Quintuple
from kecpm.synthetic import synthetic_posts


def micro_f1(gold: Sequence[Post], predicted: Sequence[Sequence[Quintuple]]) -> float:
    """Exact-match micro-F1 over directed quintuples: the test's own scorer (kecpm.eval is not imported)."""
    correct = n_pred = n_gold = 0
    for post, quintuples in zip(gold, predicted, strict=True):
        wanted = {q.surface() for q in post.quintuples}
        found = {q.surface() for q in quintuples}
        correct += len(wanted & found)
        n_pred += len(found)
        n_gold += len(wanted)
    return 2 * correct / (n_pred + n_gold) if n_pred + n_gold else 0.0


@pytest.fixture(scope="session")
def scorer():
    return micro_f1


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from kecpm.extractor import default_encoder_path

    return AutoTokenizer.from_pretrained(default_encoder_path())


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, minilm_tokenizer) -> Path:
    """A 2-layer, 32-wide BERT with random weights, saved like a pretrained checkpoint."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def synthetic_split() -> tuple[list[Post], list[Post]]:
    def with_knowledge(posts: list[Post]) -> list[Post]:
        return [
            p.model_copy(update={"knowledge": [f"{p.quintuples[0].head.name} is often in the news.", "Fact two."]})
            for p in posts
        ]

    return with_knowledge(synthetic_posts(42, seed=1, id_prefix="train")), with_knowledge(
        synthetic_posts(21, seed=2, id_prefix="val")
    )


@pytest.fixture(scope="session")
def trained_tiny(tiny_encoder, synthetic_split, scorer, tmp_path_factory):
    """A span-pair model on the tiny encoder, trained for 3 epochs and saved; (model, directory)."""
    from kecpm.extractor import SpanPairConfig, SpanPairExtractor, TrainConfig

    train, val = synthetic_split
    model = SpanPairExtractor(SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96))
    model.fit(train, val, scorer=scorer, config=TrainConfig(epochs=3, head_learning_rate=3e-3), progress=False)
    directory = model.save(tmp_path_factory.mktemp("trained") / "model")
    return model, directory
