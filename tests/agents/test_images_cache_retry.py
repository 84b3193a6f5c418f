"""Images for vision models, the SQLite cache shared by processes, and the retry policy."""

from __future__ import annotations

import base64
import io
import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from tenacity import AsyncRetrying, stop_after_attempt

from kecpm.agents import ImageError, KnowledgeCache, KnowledgeChain, Usage, encode_image
from kecpm.llm import retry_policy
from kecpm.llm.retry import _retry_after
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


def test_retry_after_headers_are_read() -> None:
    def error(**headers: str) -> SimpleNamespace:
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert _retry_after(error(**{"retry-after": "3"})) == 3.0
    assert _retry_after(error(**{"retry-after-ms": "250"})) == 0.25
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < _retry_after(error(**{"retry-after": later})) <= 30
    assert _retry_after(error()) is None
    assert _retry_after(ValueError("no response")) is None


def test_retry_policy_from_a_number_or_a_policy() -> None:
    assert retry_policy(2).stop.max_attempt_number == 3
    custom = AsyncRetrying(stop=stop_after_attempt(7), reraise=True)
    assert retry_policy(custom) is custom
    with pytest.raises(ValueError):
        retry_policy(-1)
