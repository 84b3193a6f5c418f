"""Images for vision models, and the SQLite cache shared by processes."""

from __future__ import annotations

import base64
import io
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from kecpm.agents import ImageError, KnowledgeCache, KnowledgeChain, Usage, encode_image
from kecpm.records import Post


def test_images_are_downscaled_and_encoded(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 1500), "navy").save(path)
    data, mime = encode_image(path, max_side=512)
    assert mime == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(data))) as decoded:
        assert decoded.size == (512, 256)
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(tmp_path / "alpha.png")
    assert encode_image(tmp_path / "alpha.png")[1] == "image/png"


def test_bad_images_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        encode_image(tmp_path / "missing.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageError, match="not a readable image"):
        encode_image(tmp_path / "corrupt.jpg")
    Image.new("1", (10_000, 8_500)).save(tmp_path / "huge.png")  # 85 M pixels, a few KB on disk
    with pytest.raises(ImageError, match="pixels"):
        encode_image(tmp_path / "huge.png")


async def test_vision_sends_an_image_part_or_falls_back_to_the_caption(scripted, tool_answer, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), "red").save(tmp_path / "photo.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    answer = tool_answer("Knowledge", {"statements": ["A red square."]})
    model = scripted(answer)
    chain = KnowledgeChain(model, rounds=0, vision=True)
    post = Post(id="p1", text="Look at this", image_path=tmp_path / "photo.jpg", image_descriptions=["red"])
    await chain.ainvoke(post)
    content = model.seen[0][-1].content
    assert content[0]["type"] == "text" and "Look at this" in content[0]["text"]
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    broken = await chain.ainvoke(post.model_copy(update={"image_path": tmp_path / "broken.jpg"}))
    assert isinstance(model.seen[1][-1].content, str)
    assert "image description is used instead" in broken.warnings[0]


def _writer(path: str, start: int) -> None:
    with KnowledgeCache(path) as cache:
        for i in range(start, start + 300):
            cache.put_call(
                f"key-{i % 400}", stage="generate", template="t@v1", model="m", output={"i": i}, usage=Usage()
            )


def test_two_processes_share_one_cache(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    KnowledgeCache(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, start)) for start in (0, 100)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM calls").fetchone() == (400, 400)
