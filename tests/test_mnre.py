import pytest

from kecpm.errors import DataError
from kecpm.jmere import load_split
from kecpm.mnre import parse_mnre_label, read_mnre

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
