"""Pools: the human demonstrations parsed out of KECPM prompts, and labelled posts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kecpm.errors import DataError
from kecpm.labels import EntityType, Relation
from kecpm.post_files import write_kecpm
from kecpm.retrieval import (
    demonstrations_from_posts,
    load_pool,
    parse_prompt_demonstrations,
    read_human_demonstrations,
)
from kecpm.synthetic import synthetic_posts

INSTRUCTIONS = (
    "Here are some posts. Notice : just in 'Text', not include 'Image descriptions'.\n"
    "Given a list of types: [person, location]."
)
TWO_RELATIONS = (
    'The relation between Ann Lee (person) and Bob Lee (person) is "siblings". '
    'The relation between Ann Lee (person) and Oslo (location) is "place of residence". '
    "Reasoning: they share a surname; Ann lives in Oslo."
)
NO_RELATION = "The named entity mentioned in the original text is Cara (person). There is no mentioned relation."
ONE_RELATION = (
    'The relation between Acme Corp (organization) and Dan (person) is "member of". Reasoning: he works there.'
)


def prompt(*blocks: tuple[str, str, str], query: str = "What now ?") -> str:
    parts = [INSTRUCTIONS]
    parts += [f"Text:{text}\nImage descriptions:{image}\nAnswer:{answer}" for text, image, answer in blocks]
    parts.append(f"Text:{query}\nImage descriptions:a photo\nAnswer:")
    return "\n\n".join(parts)


BLOCK_A = ("Ann Lee and Bob Lee in Oslo today", "two people on a bridge", TWO_RELATIONS)
BLOCK_B = ("Cara smiles", "a woman smiling", NO_RELATION)
BLOCK_C = ("Dan joins Acme Corp", "a man in a suit", ONE_RELATION)


def write_prompts(path: Path, *prompts: str, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps({"prompt": p, "content": "the model's answer"}) for p in prompts]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")
    return path


def test_the_blocks_of_a_prompt_are_parsed_and_the_query_is_left_out() -> None:
    blocks = parse_prompt_demonstrations(prompt(BLOCK_A, BLOCK_B))
    assert blocks == [BLOCK_A, BLOCK_B]


def test_an_answer_may_state_several_quintuples_or_none(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "answers.json", prompt(BLOCK_A, BLOCK_B))
    several, none = read_human_demonstrations(path)
    assert [q.surface() for q in several.quintuples] == [
        ("Ann Lee", "per", "Bob Lee", "per", "siblings"),
        ("Ann Lee", "per", "Oslo", "loc", "place_of_residence"),
    ]
    assert none.quintuples == ()


def test_human_demonstrations_are_read_and_deduplicated(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "answers.json", prompt(BLOCK_A, BLOCK_B), prompt(BLOCK_B, BLOCK_C))
    demos = read_human_demonstrations(path)
    assert [d.text for d in demos] == [BLOCK_A[0], BLOCK_B[0], BLOCK_C[0]]
    first = demos[0]
    assert first.image_description == BLOCK_A[1]
    assert first.answer == TWO_RELATIONS
    assert first.source == "human"
    assert first.id.startswith("human-")
    assert [q.relation for q in first.quintuples] == [Relation.SIBLINGS, Relation.PLACE_OF_RESIDENCE]
    assert demos[2].quintuples[0].head.type is EntityType.ORG
    assert demos[1].quintuples == ()
    assert len({d.id for d in demos}) == 3
    # Ids depend on the content only: reading again gives the same ones.
    assert [d.id for d in read_human_demonstrations(path)] == [d.id for d in demos]


def test_bad_lines_are_all_reported_or_skipped(tmp_path: Path) -> None:
    bad_answer = ("Eve and Finn", "two people", 'The relation between Eve (person) and Finn (person) is "friends".')
    path = write_prompts(
        tmp_path / "answers.json",
        prompt(BLOCK_A, bad_answer),
        "no blocks in this prompt",
        extra_lines=("{not json",),
    )
    with pytest.raises(DataError) as caught:
        read_human_demonstrations(path)
    lines = sorted(p.line for p in caught.value.problems)
    assert lines == [1, 2, 3]
    assert "not understood" in str(caught.value) and '"friends"' in str(caught.value)
    assert [d.text for d in read_human_demonstrations(path, lenient=True)] == [BLOCK_A[0]]


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_human_demonstrations(tmp_path / "absent.json")


def test_pools_from_a_seed_folder_and_from_a_file(split_dir: Path) -> None:
    from_folder = load_pool(split_dir, split="train")
    assert len(from_folder) == 42
    assert all(d.image_description and d.quintuples for d in from_folder)
    assert from_folder[0].source == "seed_0/train"
    from_file = load_pool(split_dir / "val_ofa_image_caption.json")
    assert len(from_file) == 21 and from_file[0].image_description
    with pytest.raises(FileNotFoundError, match="no such pool"):
        load_pool(split_dir / "absent")


def test_demonstrations_keep_the_posts_labels() -> None:
    posts = synthetic_posts(5, seed=3)
    demos = demonstrations_from_posts(posts, source="syn")
    assert [d.id for d in demos] == [p.id for p in posts]
    assert demos[0].quintuples == tuple(posts[0].quintuples)
    assert demos[0].image_description == posts[0].image_description


def test_write_then_load_a_user_file(tmp_path: Path) -> None:
    posts = synthetic_posts(4, seed=5)
    write_kecpm(posts, tmp_path / "mine_ofa_image_caption.json", caption=True)
    assert [d.text for d in load_pool(tmp_path / "mine_ofa_image_caption.json")] == [p.text for p in posts]


@pytest.mark.realdata
def test_the_real_human_pool_has_about_43_demonstrations(real_data: Path) -> None:
    demos = load_pool("human", data_dir=real_data)
    assert 40 <= len(demos) <= 46
    assert len({d.id for d in demos}) == len(demos)
    assert all(d.text and d.image_description and d.answer and "Reasoning:" in d.answer for d in demos)
    assert sum(len(d.quintuples) for d in demos) >= len(demos) - 3


def test_the_prompts_file_given_as_a_labelled_pool_points_to_the_human_pool(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "train_answers_of_top2.json", prompt(BLOCK_A, BLOCK_B))
    with pytest.raises(DataError) as caught:
        load_pool(path)
    (problem,) = caught.value.problems
    assert problem.source == str(path)
    assert "a file of KECPM prompts" in problem.message and "use the pool 'human'" in problem.message
    assert "--pool human" in problem.message and "missing field" not in str(caught.value)
