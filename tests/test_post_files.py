"""Posts on disk: KECPM files with their sibling caption/knowledge files, seed folders, MNRE v2 txt."""

import json

import pytest

from kecpm.errors import DataError
from kecpm.post_files import (
    load_split,
    parse_mnre_label,
    read_kecpm,
    read_mnre,
    read_post_file,
    read_posts,
    read_texts,
    unlabelled_posts,
    validate_kecpm,
    validate_posts,
    write_kecpm,
)


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


def test_a_post_file_without_caption_files_is_read_as_it_is(split_dir, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "val.json").write_bytes((split_dir / "val.json").read_bytes())
    read = read_post_file(folder / "val.json")
    assert len(read.posts) == 21 and read.split == "val" and read.siblings == {}
    assert all(p.image_descriptions == [] and p.knowledge == [] for p in read.posts)
    assert load_split(folder, "val") == read.posts


def test_any_post_file_takes_its_siblings_and_a_knowledge_file_replaces_knowledge(split_dir, tmp_path):
    posts = load_split(split_dir, "val")
    folder = tmp_path / "mine"
    write_kecpm(posts, folder / "mine.jsonl", caption=False, knowledge=False)
    write_kecpm(posts, folder / "mine_ofa_image_caption.json")
    read = read_post_file(folder / "mine.jsonl")
    assert [p.image_descriptions for p in read.posts] == [p.image_descriptions for p in posts]
    assert read.siblings == {"image_descriptions": folder / "mine_ofa_image_caption.json"}
    other = [p.model_copy(update={"knowledge": [f"fact about {p.id}"]}) for p in posts]
    knowledge = write_kecpm(other, tmp_path / "agent" / "val_ofa_knowledge.json")
    replaced = read_post_file(split_dir / "val.json", knowledge_file=knowledge).posts
    assert [p.knowledge for p in replaced] == [[f"fact about {p.id}"] for p in posts]
    assert all(p.image_descriptions for p in replaced)
    assert all(p.knowledge == [] for p in read_post_file(split_dir / "val.json", knowledge=False).posts)


def test_lenient_reading_lists_bad_records_and_warns_about_sibling_mismatches(split_dir):
    records = json.loads((split_dir / "val.json").read_text())
    records[1]["label_list"][0][0]["relation"] = "spouse"
    (split_dir / "val.json").write_text(json.dumps(records))
    captions = json.loads((split_dir / "val_ofa_image_caption.json").read_text())
    captions[5]["token"] = ["changed", *captions[5]["token"][1:]]
    captions[5]["label_list"] = []
    (split_dir / "val_ofa_image_caption.json").write_text(json.dumps(captions))
    with pytest.raises(DataError):
        read_post_file(split_dir / "val.json")
    read = read_post_file(split_dir / "val.json", lenient=True)
    assert len(read.posts) == 20
    (problem,) = read.problems
    assert problem.line == 2 and "spouse" in problem.message
    (warning,) = read.warnings
    assert warning.line == 6 and "differs" in warning.message and warning.record == records[5]["img_id"]
    by_id = {p.id: p for p in read.posts}
    assert by_id[records[5]["img_id"]].image_descriptions == []
    assert by_id[records[4]["img_id"]].image_descriptions


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


# -- MNRE v2 ---------------------------------------------------------------------------------------
LINES = [
    "{'token': ['Alva', 'Brenner', 'and', 'Tomas', 'Okafor', 'in', 'Eastholm'], 'h': {'name': 'Alva Brenner', "
    "'pos': [0, 2]}, 't': {'name': 'Tomas Okafor', 'pos': [3, 5]}, 'img_id': 'a.jpg', 'relation': '/per/per/peer'}",
    "{'token': ['Alva', 'Brenner', 'and', 'Tomas', 'Okafor', 'in', 'Eastholm'], 'h': {'name': 'Alva Brenner', "
    "'pos': [0, 2]}, 't': {'name': 'Eastholm', 'pos': [6, 7]}, 'img_id': 'a.jpg', 'relation': 'None'}",
    "{'token': ['Alva', 'Brenner', 'and', 'Tomas', 'Okafor', 'in', 'Eastholm'], 'h': {'name': 'Tomas Okafor', "
    "'pos': [3, 5]}, 't': {'name': 'Eastholm', 'pos': [6, 7]}, 'img_id': 'a.jpg', "
    "'relation': '/per/loc/place_of_residence'}",
    "{'token': ['Corvex', 'Labs', 'or', 'Corvex'], 'h': {'name': 'Corvex Labs', 'pos': [0, 2]}, "
    "'t': {'name': 'Corvex', 'pos': [3, 4]}, 'img_id': 'b.jpg', 'relation': '/org/org/alternate_names'}",
]


def test_labels_give_types_and_merge_alternate_names():
    assert parse_mnre_label("/per/org/member_of") == ("per", "org", "member_of")
    assert parse_mnre_label("/org/org/alternate_names")[2] == parse_mnre_label("/per/per/alternate_names")[2]
    assert parse_mnre_label("None") is None


def test_pairs_group_into_posts_without_none(tmp_path):
    path = tmp_path / "mnre_train.txt"
    path.write_text("\n".join(LINES) + "\n")
    first, second = read_mnre(path)
    assert [q.relation.value for q in first.quintuples] == ["peer", "place_of_residence"]
    assert first.quintuples[1].head.type.value == "per" and first.quintuples[1].tail.type.value == "loc"
    assert second.quintuples[0].relation.value == "alternate_names"


def test_bad_lines_are_all_named(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(LINES[0] + "\nnot a dict\n" + LINES[0].replace("/per/per/peer", "/per/per/spouse") + "\n")
    with pytest.raises(DataError) as caught:
        read_mnre(path)
    assert [p.line for p in caught.value.problems] == [2, 3]
    assert "spouse" in str(caught.value)
    assert [p.line for p in validate_posts(path)] == [2, 3]
    assert len(read_post_file(path, lenient=True).posts) == 1


def test_texts_are_every_distinct_sentence_none_pairs_included(tmp_path):
    none_only = LINES[1].replace("'Alva', 'Brenner', 'and'", "'Only', 'None', 'here'").replace("a.jpg", "c.jpg")
    path = tmp_path / "mnre_train.txt"
    path.write_text("\n".join([*LINES, none_only]) + "\n")
    assert read_texts(path) == [
        ["Alva", "Brenner", "and", "Tomas", "Okafor", "in", "Eastholm"],
        ["Corvex", "Labs", "or", "Corvex"],
        ["Only", "None", "here", "Tomas", "Okafor", "in", "Eastholm"],
    ]
    kecpm = tmp_path / "val.json"
    write_kecpm(read_mnre(path), kecpm)
    assert read_texts(kecpm) == read_texts(path)[:2]


def test_unlabelled_posts_leave_out_the_excluded_texts_and_sample_whatever_the_file_order(tmp_path):
    from kecpm.synthetic import synthetic_posts

    posts = synthetic_posts(30, seed=3)
    forward, backward, scored = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "val.json"
    write_kecpm(posts, forward)
    write_kecpm(posts[::-1], backward)
    write_kecpm(posts[:5], scored)
    texts = list(dict.fromkeys(tuple(p.tokens) for p in posts))
    unlabelled, left_out = unlabelled_posts([forward, forward], exclude=[scored])
    excluded = {tuple(p.tokens) for p in posts[:5]}
    assert left_out == len(excluded)
    assert [tuple(p.tokens) for p in unlabelled] == [t for t in texts if t not in excluded]  # file order, once each
    assert all(not p.quintuples and not p.knowledge for p in unlabelled)
    sample, _ = unlabelled_posts([forward], exclude=[scored], sample=7, seed=1)
    again, _ = unlabelled_posts([backward], exclude=[scored], sample=7, seed=1)
    other, _ = unlabelled_posts([forward], exclude=[scored], sample=7, seed=2)
    assert len(sample) == 7 and [p.tokens for p in sample] == [p.tokens for p in again]
    assert [p.tokens for p in other] != [p.tokens for p in sample]
    assert len(unlabelled_posts([forward], sample=1000)[0]) == len(texts)


def test_texts_name_every_bad_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(LINES[0] + "\nnot a dict\n" + LINES[3].replace("['Corvex', 'Labs', 'or', 'Corvex']", "[]") + "\n")
    with pytest.raises(DataError) as caught:
        read_texts(path)
    assert [p.line for p in caught.value.problems] == [2, 3]
    assert "'token'" in str(caught.value) and "b.jpg" in str(caught.value)
    assert read_texts(path, lenient=True) == [["Alva", "Brenner", "and", "Tomas", "Okafor", "in", "Eastholm"]]


@pytest.mark.realdata
def test_mnre_rebuild_covers_every_few_shot_quintuple(real_data):
    txt = real_data / "mnre" / "mnre_txt"
    rebuilt = read_mnre(txt / "mnre_train.txt") + read_mnre(txt / "mnre_val .txt")
    index: dict[tuple, set] = {}
    for post in rebuilt:
        index.setdefault((tuple(post.tokens), post.img_id), set()).update(post.quintuples)
    checked = 0
    for seed in (17, 67, 97):
        for split in ("train", "val"):
            for post in load_split(real_data / "jmere" / "few_shot" / f"seed_{seed}", split):
                for quintuple in post.quintuples:
                    assert quintuple in index[(tuple(post.tokens), post.img_id)], (seed, split, post.id)
                    checked += 1
    assert checked == 315 + 299 + 309 + 294 + 312 + 299
