from __future__ import annotations

import pytest

from kecpm.extractor import INPUT_PRESETS, InputAssembler, InputParts, InputTooLong
from kecpm.prompts import load_template
from kecpm.records import Post


def _post(**update) -> Post:
    base = Post(
        id="p1",
        text="Ann Lee visits Port Avery",
        image_descriptions=["a woman on a pier"],
        knowledge=["Port Avery is a town.", "Ann Lee is a singer.", "  "],
    )
    return base.model_copy(update=update)


def _words(assembled) -> int:
    """A cost that counts whitespace words plus one separator per segment (and [CLS])."""
    return 1 + sum(len(s.render().split()) + 1 for s in assembled.segments)


def _cut_words(text: str, drop: int) -> str:
    words = text.split()
    return " ".join(words[: max(0, len(words) - drop)])


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "imagecap_know",
            [
                "Ann Lee visits Port Avery",
                "image: a woman on a pier",
                "knowledge: Port Avery is a town. Ann Lee is a singer.",
            ],
        ),
        ("imagecap", ["Ann Lee visits Port Avery", "image: a woman on a pier"]),
        ("know", ["Ann Lee visits Port Avery", "knowledge: Port Avery is a town. Ann Lee is a singer."]),
        ("only_text", ["Ann Lee visits Port Avery"]),
    ],
)
def test_presets_choose_the_segments(preset, expected):
    assembled = InputAssembler(parts=InputParts.preset(preset)).assemble(_post())
    assert [s.render() for s in assembled.segments] == expected
    assert InputParts.preset(preset).name == preset


@pytest.mark.parametrize("preset", list(INPUT_PRESETS))
@pytest.mark.parametrize("descriptions", [[], [""], ["  ", "\n"]])
def test_a_post_without_an_image_description_has_no_image_segment(preset, descriptions):
    post = _post(image_descriptions=descriptions)
    assembled = InputAssembler(parts=InputParts.preset(preset)).assemble(post)
    rendered = [s.render() for s in assembled.segments]
    assert not any(r.startswith("image") for r in rendered), rendered
    expected = ["Ann Lee visits Port Avery"]
    if InputParts.preset(preset).knowledge:
        expected.append("knowledge: Port Avery is a town. Ann Lee is a singer.")
    assert rendered == expected
    assert assembled.render(" | ") == " | ".join(expected)  # nothing left of the image segment, no empty piece


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown input preset 'both'"):
        InputParts.preset("both")


def test_knowledge_sentences_and_empty_parts():
    assembler = InputAssembler(parts=InputParts(knowledge_sentences=1))
    assert assembler.assemble(_post()).context == ("image: a woman on a pier", "knowledge: Port Avery is a town.")
    bare = assembler.assemble(_post(knowledge=[], image_descriptions=[]))
    assert bare.context == ()
    assert bare.render() == "Ann Lee visits Port Avery"


def test_the_naming_post_filter_keeps_the_sentences_that_share_a_word_with_the_post():
    post = Post(
        id="p1",
        text="RT @annlee : Port Avery #sunset",
        knowledge=[
            "Gion is a district of Kyoto.",  # names nothing of the post
            "The sun sets over the sea.",  # shares only a function word ("the") and no word of the post
            "Port avery is a town.",  # case does not matter
            "annlee is a singer's handle.",  # a handle's word, without its "@"
            "Sunset photos are popular.",  # a hashtag's word
            "It is in the US.",
        ],
    )
    kept = InputAssembler(parts=InputParts(knowledge_filter="naming_post")).assemble(post)
    assert kept.context[-1] == (
        "knowledge: Port avery is a town. annlee is a singer's handle. Sunset photos are popular."
    )
    parts = InputParts(knowledge_filter="naming_post", knowledge_sentences=2)
    assembled = InputAssembler(parts=parts).assemble(post)
    # filtered first, then counted: the first two sentences that name the post
    assert assembled.context[-1] == "knowledge: Port avery is a town. annlee is a singer's handle."
    assert assembled.knowledge_used == 2
    unfiltered = InputAssembler(parts=InputParts(knowledge_sentences=2)).assemble(post)
    assert unfiltered.context[-1] == "knowledge: Gion is a district of Kyoto. The sun sets over the sea."


def test_knowledge_naming_nothing_of_the_post_leaves_no_knowledge_segment():
    post = _post(knowledge=["Gion is a district of Kyoto.", "It is old."])
    assembled = InputAssembler(parts=InputParts(knowledge_filter="naming_post")).assemble(post)
    assert assembled.context == ("image: a woman on a pier",)
    assert assembled.knowledge_used == 0


def test_an_unknown_knowledge_filter_is_refused():
    with pytest.raises(ValueError, match="knowledge_filter"):
        InputParts(knowledge_filter="relevant")


def test_truncation_drops_knowledge_sentences_first_then_cuts_context():
    assembler = InputAssembler()
    post = _post()
    full = _words(assembler.assemble(post))
    fitted = assembler.fit(post, budget=full - 1, cost=_words, cut=_cut_words)
    assert fitted.knowledge_used == 1
    assert fitted.context[-1] == "knowledge: Port Avery is a town."
    assert assembler.stats["knowledge sentences dropped"] == 1
    # Text (5 words) + image segment cut to fit 10: "[CLS] text [SEP] image: a [SEP]".
    tight = assembler.fit(post, budget=10, cost=_words, cut=_cut_words)
    assert tight.text_segment.render() == "Ann Lee visits Port Avery"
    assert tight.context == ("image: a",)
    assert _words(tight) == 10
    assert assembler.stats["posts with context cut"] == 1


def test_the_text_is_never_cut():
    post = Post(id="p1", text=" ".join(["word"] * 50))
    with pytest.raises(InputTooLong, match=r"record 'p1'.*52 tokens, over the model's limit of 20"):
        InputAssembler().fit(post, budget=20, cost=_words, cut=_cut_words)


def test_huge_knowledge_is_truncated_not_fatal():
    post = _post(knowledge=["fact " * 400])
    fitted = InputAssembler().fit(post, budget=30, cost=_words, cut=_cut_words)
    assert _words(fitted) <= 30
    assert fitted.text_segment.text == post.text


def test_a_user_template_overrides_the_layout(tmp_path):
    (tmp_path / "extract_input.v7.toml").write_text(
        'name = "extract_input"\nversion = 7\n'
        '[[messages]]\nrole = "human"\ncontent = "Caption: {image_description}"\n'
        '[[messages]]\nrole = "human"\ncontent = "Post: {text} (end)"\n'
    )
    template = load_template("extract_input", search_dirs=[tmp_path])
    assembled = InputAssembler(template=template).assemble(_post())
    assert assembled.render(" | ") == "Caption: a woman on a pier | Post: Ann Lee visits Port Avery (end)"
    assert assembled.text_segment.before == "Post: "


@pytest.mark.parametrize(
    ("content", "message"),
    [("{text} {mood}", "unknown placeholders"), ("{knowledge}", "exactly one message")],
)
def test_bad_templates_are_refused(tmp_path, content, message):
    (tmp_path / "bad.v1.toml").write_text(
        f'name = "bad"\nversion = 1\n[[messages]]\nrole = "human"\ncontent = "{content}"\n'
    )
    with pytest.raises(ValueError, match=message):
        InputAssembler(template=load_template("bad", search_dirs=[tmp_path]))
