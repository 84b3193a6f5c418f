"""``kecpm index build|query`` end to end on a synthetic seed folder and on the real human pool."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.retrieval import MiniLMEmbeddings

runner = CliRunner()


def test_build_then_query(split_dir: Path, tmp_path: Path, embeddings: MiniLMEmbeddings) -> None:
    store = tmp_path / "store"
    built = runner.invoke(app, ["index", "build", "--pool", str(split_dir), "--store", str(store)])
    assert built.exit_code == 0, built.output
    assert "42 demonstrations added" in built.output and "the store holds 42" in built.output
    # Building again replaces by id: still 42.
    again = runner.invoke(app, ["index", "build", "--pool", str(split_dir), "--store", str(store)])
    assert "the store holds 42" in again.output
    answer = runner.invoke(
        app,
        [
            "index",
            "query",
            "Nora Lind lives next door to Ivo Strand",
            "--caption",
            "a man smiling",
            "-k",
            "2",
            "--store",
            str(store),
            "--json",
        ],
    )
    assert answer.exit_code == 0, answer.output
    hits = json.loads(answer.output)
    assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]
    assert {"demonstration", "score", "text_similarity", "image_similarity"} <= set(hits[0])
    table = runner.invoke(app, ["index", "query", "Nora Lind", "--image-weight", "0", "-k", "1", "--store", str(store)])
    assert table.exit_code == 0 and "top 1 of 42" in table.output


def test_clear_errors_exit_1(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["index", "query", "x", "--caption", "y", "--store", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no store here" in missing.output
    no_pool = runner.invoke(app, ["index", "build", "--pool", str(tmp_path / "none"), "--store", str(tmp_path / "s")])
    assert no_pool.exit_code == 1 and "no such pool" in no_pool.output


@pytest.mark.realdata
def test_build_the_human_pool(real_data: Path, tmp_path: Path, embeddings: MiniLMEmbeddings) -> None:
    store = tmp_path / "human"
    built = runner.invoke(
        app, ["index", "build", "--pool", "human", "--store", str(store), "--data-dir", str(real_data)]
    )
    assert built.exit_code == 0, built.output
    # (a progress bar of the model's loading may precede the count on the same line)
    count = int(re.search(r"(\d+) demonstrations added", built.output)[1])
    assert 40 <= count <= 46
    answer = runner.invoke(
        app,
        [
            "index",
            "query",
            "Mara and Theo are engaged",
            "--caption",
            "a couple",
            "-k",
            "1",
            "--store",
            str(store),
            "--json",
        ],
    )
    assert json.loads(answer.output)[0]["demonstration"]["source"] == "human"


def test_the_prompts_file_as_a_pool_is_recognised(tmp_path: Path) -> None:
    prompts = tmp_path / "train_answers_of_top2.json"
    prompts.write_text(json.dumps({"prompt": "Text:a\nImage descriptions:b\nAnswer:c", "content": "d"}) + "\n")
    built = runner.invoke(app, ["index", "build", "--pool", str(prompts), "--store", str(tmp_path / "s")])
    assert built.exit_code == 1
    (line,) = built.output.strip().splitlines()
    assert line.startswith(f"error: {prompts}: a file of KECPM prompts") and "--pool human" in line
    assert "missing field" not in built.output and not (tmp_path / "s").exists()


def test_a_store_built_with_other_embeddings_says_which_and_what_to_do(
    tmp_path: Path, embeddings: MiniLMEmbeddings
) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from kecpm.retrieval import DemonstrationStore, demonstrations_from_posts
    from kecpm.synthetic import synthetic_posts

    store = tmp_path / "fake-store"
    built = DemonstrationStore(store, DeterministicFakeEmbedding(size=32), create=True)
    built.add(demonstrations_from_posts(synthetic_posts(4)))
    answer = runner.invoke(app, ["index", "query", "Nora Lind", "--store", str(store)])
    assert answer.exit_code == 1
    (line,) = answer.output.strip().splitlines()
    assert line == (
        f"error: {store}: collection 'kecpm-demonstrations' was built with DeterministicFakeEmbedding (32 "
        f"dimensions), but opened with sentence-transformers/all-MiniLM-L6-v2 (384 dimensions); open it with "
        "the same embeddings, or build another store"
    )
