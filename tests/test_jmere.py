import json

import pytest

from kecpm.errors import DataError
from kecpm.jmere import load_split, read_kecpm, read_posts, validate_kecpm, write_kecpm


def test_split_folder_loads_with_captions_and_knowledge(split_dir):
    train = load_split(split_dir, "train")
    assert len(train) == 42
    assert all(p.image_descriptions and p.knowledge for p in train)
    assert load_split(split_dir, "val", knowledge=False)[0].knowledge == []


@pytest.mark.parametrize("name", ["train.json", "train_ofa_image_caption.json", "train_ofa_knowledge.json"])
def test_round_trip_is_byte_for_byte(split_dir, tmp_path, name):
    original = (split_dir / name).read_bytes()
    written = write_kecpm(read_kecpm(split_dir / name), tmp_path / name)
    assert written.read_bytes() == original


def test_repeated_images_get_distinct_ids(tmp_path, posts):
    clone = posts[1].model_copy(update={"img_id": posts[0].img_id})
    path = write_kecpm([posts[0], clone], tmp_path / "x.json")
    ids = [p.id for p in read_kecpm(path)]
    assert ids == [posts[0].img_id, f"{posts[0].img_id}#2"]


def _broken_copy(split_dir, tmp_path):
    lines = (split_dir / "train_ofa_knowledge.json").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    records[2]["label_list"][0][0]["relation"] = "spouse"  # unknown relation
    records[4]["label_list"][0][0]["beg_ent"]["tags"] = "animal"  # unknown type
    records[6]["label_list"][0][0]["sec_ent"]["pos"] = [0, 99]  # out of range
    records[8]["label_list"][0][0]["beg_ent"]["name"] = "Somebody Else"  # span does not spell the name
    out = [json.dumps(r) for r in records]
    out[10] = out[10][:-7]  # malformed line
    out.append(out[12])  # duplicate record
    path = tmp_path / "broken_ofa_knowledge.json"
    path.write_text("\n".join(out) + "\n")
    return path


def test_validate_lists_every_planted_problem(split_dir, tmp_path):
    problems = validate_kecpm(_broken_copy(split_dir, tmp_path))
    found = {(p.line, p.message.split(":")[0]) for p in problems}
    assert [p.line for p in problems] == [3, 5, 7, 9, 11, 43]
    messages = " | ".join(str(p) for p in problems)
    for expected in (
        "unknown relation 'spouse'",
        "unknown entity type 'animal'",
        "out of range",
        "spells",
        "malformed JSON",
        "duplicate record",
    ):
        assert expected in messages
    assert all("broken_ofa_knowledge.json" in str(p) for p in problems), found


def test_read_raises_with_all_problems_and_lenient_keeps_the_rest(split_dir, tmp_path):
    path = _broken_copy(split_dir, tmp_path)
    with pytest.raises(DataError) as caught:
        read_kecpm(path)
    assert len(caught.value.problems) == 6
    assert len(read_kecpm(path, lenient=True)) == 42 - 5


def test_explicit_duplicate_ids_are_refused(tmp_path, posts):
    lines = [json.dumps({"id": "same", "token": p.tokens, "img_id": p.img_id, "label_list": []}) for p in posts[:2]]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(lines) + "\n")
    (problem,) = validate_kecpm(path)
    assert problem.line == 2 and "duplicate id" in problem.message and problem.record == "same"


def test_missing_file_and_invalid_utf8(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        read_kecpm(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"token": ["\xff"]}\n')
    (problem,) = validate_kecpm(bad)
    assert "UTF-8" in problem.message


def test_mismatched_overlay_is_named(split_dir):
    records = json.loads((split_dir / "val_ofa_image_caption.json").read_text())
    records[3]["token"] = ["changed", *records[3]["token"][1:]]
    records[3]["label_list"] = []
    (split_dir / "val_ofa_image_caption.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"val_ofa_image_caption.json:4.*differs"):
        load_split(split_dir, "val")


@pytest.mark.realdata
@pytest.mark.parametrize("seed", [17, 67, 97])
def test_real_splits_load_validate_and_round_trip(real_data, tmp_path, seed):
    folder = real_data / "jmere" / "few_shot" / f"seed_{seed}"
    for name in ("train.json", "val.json", "val_ofa_image_caption.json", "train_ofa_knowledge.json"):
        assert validate_kecpm(folder / name) == []
        original = (folder / name).read_bytes()
        newline = "\r\n" if b"\r\n" in original else "\n"
        written = write_kecpm(read_posts(folder / name), tmp_path / name, newline=newline)
        assert written.read_bytes() == original
    train = load_split(folder, "train")
    assert all(p.image_descriptions for p in train)
    assert sum(bool(p.knowledge) for p in train) > 0.9 * len(train)
