"""Point 1: the bad-input catalogue. Each bad record or image gets a clear error or warning naming it,
the rest of the batch completes, the failure is listed in the run's report, and it can be retried alone
(``kecpm knowledge build --only-failed`` after fixing it)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from kecpm.agents import KnowledgeBuilder, encode_image
from kecpm.agents import images as images_module
from kecpm.cli import app
from kecpm.llm import LLMConfig
from kecpm.post_files import parse_kecpm, post_to_record, read_kecpm, validate_kecpm
from kecpm.records import Post

LONG = 100_000


def _line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def _catalogue(good: list[Post]) -> dict[str, bytes]:
    """One bad JSON line per kind of problem, built from valid records so only that problem is wrong."""
    base = post_to_record(good[0])
    relation = json.loads(json.dumps(post_to_record(good[1])))
    relation["label_list"][0][0]["relation"] = "/misc/unknown_relation"
    relation["img_id"] = "bad-relation.jpg"
    entity_type = json.loads(json.dumps(post_to_record(good[2])))
    entity_type["label_list"][0][0]["beg_ent"]["tags"] = "alien"
    entity_type["img_id"] = "bad-type.jpg"
    span = json.loads(json.dumps(post_to_record(good[3])))
    span["label_list"][0][0]["sec_ent"]["pos"] = [90, 92]
    span["img_id"] = "bad-span.jpg"
    return {
        "malformed": b'{"token": ["Mira", "Holt"], "img_id": "malformed.jpg", "label_list": [',
        "utf8": b'{"token": ["Caf\xe9", "Vantor"], "img_id": "bad-utf8.jpg", "label_list": []}',
        "relation": _line(relation),
        "type": _line(entity_type),
        "span": _line(span),
        "empty": _line({**base, "token": [], "img_id": "empty.jpg", "label_list": []}),
        "dup_first": _line({**post_to_record(good[4]), "id": "dup-id"}),
        "dup_second": _line({**post_to_record(good[5]), "id": "dup-id", "img_id": "dup-second.jpg"}),
    }


def test_a_file_with_every_kind_of_bad_record_builds_the_rest_and_retries_them_alone(
    server, make_posts, build_command, tmp_path: Path
) -> None:
    good = make_posts(14, prefix="good")
    long_post = Post(id="long.jpg", img_id="long.jpg", tokens=["Mira", "Holt", *(["word"] * (LONG // 5))])
    assert len(long_post.text) >= LONG
    bad = _catalogue(good)
    data = tmp_path / "data" / "val.jsonl"
    data.parent.mkdir()
    lines = [_line(post_to_record(p)) for p in good[6:8]] + [_line(post_to_record(long_post)), *bad.values()]
    data.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    runner = CliRunner()
    command = build_command(data, out, server, "--rounds", "0")[3:]

    first = runner.invoke(app, command)
    assert first.exit_code == 1
    output = " ".join(first.output.split())
    report = json.loads((out / "knowledge_report.json").read_text(encoding="utf-8"))
    failures = {f["post_id"]: f for f in report["failures"]}
    assert all(f["kind"] == "input" for f in failures.values())
    # Each problem names its record (id when known, else file:line) and says what is wrong.
    expected = {
        "val.jsonl:4": "malformed JSON",
        "val.jsonl:5": "not valid UTF-8",
        "bad-relation.jpg": "unknown_relation",
        "bad-type.jpg": "alien",
        "bad-span.jpg": "out of range",
        "empty.jpg": "the post's text is empty or only whitespace",
        "val.jsonl:11": "duplicate id",
    }
    assert set(failures) == set(expected)
    for post_id, words in expected.items():
        assert words in failures[post_id]["message"], failures[post_id]
        assert f"failed: {post_id} " in output
    # The rest of the batch: the two good posts, the long one (cut, with a warning), the first "dup-id".
    assert report["succeeded"] == 4 and report["total"] == 4 + len(expected)
    assert server.stats()["completions"] == 4
    (warning,) = report["warnings"]["long.jpg"]
    assert f"{len(' '.join(long_post.text.split())):,} characters cut to 2,000" in warning
    assert "warning: long.jpg: text of" in output
    assert "--only-failed" in output

    # Fix the records, retry only them: the four already built are not asked again.
    fixed = [post_to_record(p) for p in good[8:]]
    fixed[-1]["id"] = "dup-second"
    fixed_lines = [*lines[:3], bad["dup_first"], *(_line(r) for r in fixed)]
    data.write_bytes(b"\n".join(fixed_lines) + b"\n")
    assert parse_kecpm(data)[1] == []
    server.reset()
    retried = runner.invoke(app, [*command, "--only-failed"])
    assert retried.exit_code == 0, retried.output
    assert server.stats()["completions"] == 6  # the six fixed records, nothing else
    written = read_kecpm(out / "val_ofa_knowledge.json")
    assert len(written) == 10 and all(p.knowledge for p in written)
    shown = runner.invoke(app, ["knowledge", "show", "--out", str(out), "--json"])
    summary = json.loads(shown.output)
    assert summary["failures"] == [] and summary["results"] == 10


def _jpeg(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (180, 40, 40)).save(path, quality=70)
    return path


async def test_bad_images_are_warnings_naming_the_post_and_the_batch_completes(
    server, make_posts, tmp_path: Path, monkeypatch
) -> None:
    # A low cap on decoded pixels stands in for a huge photo, so the test need not build one.
    monkeypatch.setattr(images_module, "MAX_PIXELS", 5_000_000)
    folder = tmp_path / "images"
    folder.mkdir()
    good = _jpeg(folder / "good.jpg", (640, 480))
    huge_jpeg = _jpeg(folder / "huge.jpg", (4096, 3072))  # 12.6 Mpx: over the cap, decodes at half scale
    Image.new("RGB", (2400, 2400), (0, 90, 0)).save(folder / "huge.png")  # 5.8 Mpx PNG: no reduced decoding
    Image.new("RGB", (300, 200), (0, 0, 200)).save(folder / "photo.tiff")  # not JPEG/PNG, but readable
    (folder / "corrupt.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    (folder / "vector.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>', encoding="utf-8")
    paths = {
        "good": good,
        "huge-jpeg": huge_jpeg,
        "tiff": folder / "photo.tiff",
        "huge-png": folder / "huge.png",
        "corrupt": folder / "corrupt.jpg",
        "svg": folder / "vector.svg",
        "missing": folder / "nowhere.jpg",
    }
    base = make_posts(len(paths) + 1, prefix="img")
    posts = [p.model_copy(update={"id": name, "image_path": paths[name]}) for p, name in zip(base, paths, strict=False)]
    # a Post refuses an empty text; the builder still guards against one built without validation
    posts.append(Post.model_construct(id="empty-text", tokens=[""], text="", image_descriptions=["a caption"]))
    config = LLMConfig(base_url=server.base_url, model="loopback", vision=True, timeout=5)
    async with KnowledgeBuilder(config, rounds=0, concurrency=4, progress=False) as builder:
        report = await builder.abuild(posts)
    assert report.total == len(posts)
    assert {r.post_id for r in report.results} == set(paths)  # every image problem still gets knowledge
    (failure,) = report.failures
    assert (
        failure.post_id == "empty-text"
        and failure.kind == "input"
        and "record 'empty-text': the post's text is empty" in failure.message
    )
    warned = {post_id: " ".join(w) for post_id, w in report.warnings.items()}
    assert set(warned) == {"huge-png", "corrupt", "svg", "missing"}
    assert "nowhere.jpg: image not found" in warned["missing"]
    assert "corrupt.jpg: not a readable image" in warned["corrupt"]
    assert "vector.svg: not a readable image" in warned["svg"]
    assert "huge.png: 2400x2400 pixels is more than" in warned["huge-png"]
    assert all("the image description is used instead" in w for w in warned.values())
    # Readable images are sent, downscaled: the huge JPEG (decoded at reduced scale) and the TIFF.
    for name, mime in (("huge-jpeg", "image/jpeg"), ("tiff", "image/jpeg"), ("good", "image/jpeg")):
        data, sent = encode_image(paths[name], max_side=1024)
        assert sent == mime
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert max(image.size) <= 1024


def test_invalid_utf8_refuses_only_its_own_record(make_posts, tmp_path: Path) -> None:
    """In a JSON array too: the record with the bad bytes is named, the others are read."""
    posts = make_posts(3, prefix="arr")
    records = [json.dumps(post_to_record(p), ensure_ascii=False).encode() for p in posts]
    inside = records[1].index(b'"token": ["') + len(b'"token": ["')
    records[1] = records[1][:inside] + b"\xff\xfe" + records[1][inside:]
    path = tmp_path / "val.json"
    path.write_bytes(b"[" + b", ".join(records) + b"]")
    read = read_kecpm(path, lenient=True)
    assert [p.id for p in read] == [posts[0].img_id, posts[2].img_id]
    (problem,) = validate_kecpm(path)
    assert "not valid UTF-8" in problem.message and problem.line == 2


def test_a_split_with_captions_and_a_bad_record_keeps_the_captions_of_the_rest(
    server, make_posts, build_command, tmp_path: Path
) -> None:
    from kecpm.post_files import write_kecpm

    posts = make_posts(4, prefix="cap")
    folder = tmp_path / "seed"
    write_kecpm(posts, folder / "val_ofa_image_caption.json")
    records = [post_to_record(p) for p in posts]
    records[2]["label_list"][0][0]["relation"] = "/misc/unknown_relation"
    (folder / "val.json").write_text(json.dumps(records), encoding="utf-8")
    result = CliRunner().invoke(app, build_command(folder / "val.json", tmp_path / "out", server, "--rounds", "0")[3:])
    assert result.exit_code == 1
    report = json.loads((tmp_path / "out" / "knowledge_report.json").read_text(encoding="utf-8"))
    assert [f["post_id"] for f in report["failures"]] == [posts[2].id] and report["succeeded"] == 3
    written = {p.id: p for p in read_kecpm(tmp_path / "out" / "val_ofa_knowledge.json")}
    assert set(written) == {posts[0].id, posts[1].id, posts[3].id}
    assert all(written[p.id].image_descriptions == p.image_descriptions for p in posts if p.id in written)
