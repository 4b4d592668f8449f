"""Parsers of judge answers and prompt templates: real-looking, malformed, truncated and foreign answers."""

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmreward.errors import ConfigError
from mmreward.rewards.vlm.parsing import (
    AnswerParseError,
    VerdictPhrases,
    parse_chain_of_thought,
    parse_dim_scores,
    parse_scores,
    parse_verdict,
    reference_verdict,
    split_think_answer,
)
from mmreward.rewards.vlm.templates import MediaPart, TextPart, load_template, parse_template

IMAGE = VerdictPhrases("Image 1 is better", "Image 2 is better", "Both images are equally good")
VIDEO = VerdictPhrases("Video 1 is better", "Video 2 is better", "Both videos are equally good")
NO_TIE = VerdictPhrases("Image 1 is better", "Image 2 is better")
LINE = "{dim} Score (1-5): "
DIMS = ("Alignment", "Coherence", "Style")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Image 1 is better", "first"),
        ("Image 2 is better.", "second"),
        ("Both images are equally good.", "tie"),
        ("**Image 1 is better**", "first"),
        ("`Image 2 is better`", "second"),
        ("image 1 IS better", "first"),
        ("Image1 is better", "first"),
        ("Image  2\nis better", "second"),
        ("After weighing alignment and quality, Image 2 is better than Image 1.", "second"),
        ("Final answer: Image 1 is better!", "first"),
        # Restated options: the last verdict sentence is the commitment.
        ("Options: Image 1 is better / Image 2 is better. My verdict: Image 2 is better.", "second"),
        ("Image 1 is better at colour, but overall both images are equally good", "tie"),
        # Not verdicts: other numbers, negations, truncation, other languages, empty.
        ("Image 12 is better", None),
        ("Image 1 is not better", None),
        ("Image 1 is bett", None),
        ("图像1更好", None),
        ("L'image 1 est meilleure", None),
        ("", None),
        (None, None),
        ("I cannot judge these images.", None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text, IMAGE) == expected


def test_parse_verdict_other_nouns_and_no_tie():
    assert parse_verdict("Video 2 is better", VIDEO) == "second"
    assert parse_verdict("Image 2 is better", VIDEO) is None
    assert parse_verdict("Both images are equally good", NO_TIE) is None


def test_parse_scores_reads_every_dimension():
    text = "Alignment Score (1-5): 4\nCoherence Score (1-5): 3.5\n**Style Score (1-5):** 2"
    assert parse_scores(text, DIMS, LINE, (1, 5)) == {"Alignment": 4.0, "Coherence": 3.5, "Style": 2.0}
    # The parenthesised range may be left out; spacing and case vary; the last occurrence counts.
    text = "alignment score: 5\nCoherence Score : 1\nStyle Score (1-5): 3\nRevised: Style Score (1-5): 4"
    assert parse_scores(text, DIMS, LINE, (1, 5)) == {"Alignment": 5.0, "Coherence": 1.0, "Style": 4.0}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Alignment Score (1-5): 4\nCoherence Score (1-5): 3", "no score for 'Style'"),
        ("Alignment Score (1-5): 4\nCoherence Score (1-5): 3\nStyle Score (1-5): 9", "outside the range"),
        ("Alignment Score (1-5): 0\nCoherence Score (1-5): 3\nStyle Score (1-5): 3", "outside the range"),
        ("Alignment Score (1-5): four\nCoherence Score (1-5): 3\nStyle Score (1-5): 3", "no score for 'Alignment'"),
        ("对齐分数: 4", "no score"),
        ("", "empty answer"),
    ],
)
def test_parse_scores_failures_name_the_reason(text, reason):
    with pytest.raises(AnswerParseError, match=reason):
        parse_scores(text, DIMS, LINE, (1, 5))


COT = """<think>
The caption asks for a red car on a beach.
1. Semantic consistency: Image 1 8/10, Image 2 5/10 - the second car is blue.
- **Aesthetics**: Image 1: 7, Image 2: 9 - nicer light in the second
Authenticity: Image 1 = 6 / 10; Image 2 = 6 / 10
Total: Image 1 21, Image 2 20
</think>
<answer>Image 1 is better</answer>"""


def test_chain_of_thought_verdict_and_dimension_scores():
    parsed = parse_chain_of_thought(COT, NO_TIE, "Image")
    assert parsed.verdict == "first"
    assert parsed.answer == "Image 1 is better"
    assert parsed.think.startswith("The caption asks")
    assert parsed.dims == {"Semantic consistency": (8.0, 5.0), "Aesthetics": (7.0, 9.0), "Authenticity": (6.0, 6.0)}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<think>Image 1 looks sharper, so", "not closed"),  # cut inside the reasoning
        ("<think>fine</think>\n<answer>Image 2 is", "not closed"),  # cut inside the answer
        ("Image 1 is better", "no <answer>"),  # right verdict, wrong format
        ("<think>x</think><answer>Image 3 is better</answer>", "holds no verdict"),
        ("<think>x</think><answer>图像1更好</answer>", "holds no verdict"),
        ("<think>x</think><answer></answer>", "holds no verdict"),
        ("", "empty"),
    ],
)
def test_chain_of_thought_failures(text, reason):
    with pytest.raises(AnswerParseError, match=reason):
        parse_chain_of_thought(text, NO_TIE, "Image")


def test_think_block_is_optional_and_last_answer_counts():
    think, answer = split_think_answer("<answer>Image 2 is better</answer> then <answer>Image 1 is better</answer>")
    assert think is None and answer == "Image 1 is better"
    assert parse_dim_scores("no scores here", "Image") == {}


# UnifiedReward-Think's Qwen3-VL layout: each candidate on a line of its own (with trailing spaces, as written).
THINK_QWEN3 = "\n".join(
    [
        "<think>",
        "1. Semantic consistency: ",
        "    Video 1 (9/10) - The cat is there; the light: warm. ",
        "    Video 2 (7/10) - No cat",
        "2. Temporal coherence: ",
        "    Video 1 (8/10) - smooth; ",
        "    Video 2 (6/10) - jerky",
        "Camera stability: Video 2 (8/10) - steady; Video 1 (6/10) - shaky",
        "Total score:",
        "Video 1: 9+8+6=23",
        "Video 2: 7+6+8=21",
        "</think>",
        "<answer>Video 1 is better</answer>",
    ]
)


def test_unifiedreward_think_dimension_lines():
    """UnifiedReward-Think's "Image 1 (9/10) - ...; Image 2 (7/10) - ..." lines, also one candidate per line (its
    Qwen3-VL scripts) and with Image 2 first (its extra dimensions); totals and "Video 1: 9+8" lines are not dims."""
    inline = (
        "1. Semantic consistency: Image 1 (9/10) - a red car; Image 2 (7/10) - blue\n"
        "2. Authenticity: Image 1 (5/10) - x; Image 2 (6/10) - y"
    )
    assert parse_dim_scores(inline, "Image") == {"Semantic consistency": (9.0, 7.0), "Authenticity": (5.0, 6.0)}
    assert parse_chain_of_thought(THINK_QWEN3, VIDEO, "Video").dims == {
        "Semantic consistency": (9.0, 7.0),
        "Temporal coherence": (8.0, 6.0),
        "Camera stability": (6.0, 8.0),
    }
    # A block that scores only one candidate is skipped rather than paired with the next dimension's score.
    assert parse_dim_scores("Aesthetics: Image 1 (9/10)\nRealism: Image 1 (4/10); Image 2 (3/10)", "Image") == {
        "Realism": (4.0, 3.0)
    }


_NAMES = (
    st.text(alphabet=string.ascii_letters + " ", min_size=1, max_size=24)
    .map(str.strip)
    .filter(lambda name: name and name.split()[0].lower() not in ("total", "sum", "overall", "image", "video"))
)
_RATIONALE = st.text(alphabet=string.ascii_letters + " ,.'", max_size=30)


@st.composite
def _think_blocks(draw):
    """Per-dimension score blocks in random layouts, and the scores they hold."""
    noun = draw(st.sampled_from(["Image", "Video"]))
    names = draw(st.lists(_NAMES, min_size=1, max_size=5, unique_by=str.lower))
    expected, blocks = {}, []
    for n, name in enumerate(names):
        a, b = draw(st.integers(1, 10)), draw(st.integers(1, 10))
        expected[name] = (float(a), float(b))
        form = draw(st.sampled_from(["({s}/10)", "{s}/10", ": {s}", "= {s} / 10", "({s})"]))
        mentions = [f"{noun} {k} " + form.format(s=s) + " - " + draw(_RATIONALE) for k, s in ((1, a), (2, b))]
        if draw(st.booleans()):
            mentions.reverse()  # the order of the A and B lines does not matter
        indent = " " * draw(st.integers(0, 8))
        separator = draw(st.sampled_from(["; ", ";\n" + indent, "\n" + indent, ", "]))
        marker = draw(st.sampled_from(["", f"{n + 1}. ", "- ", f"{n + 1}) "]))
        after_colon = draw(st.sampled_from([" ", "", " \n" + indent, "\n\n" + indent]))
        blocks.append(f"{marker}{name}:{after_colon}" + separator.join(mentions))
    totals = f"Total score:\n{noun} 1: 1+2=3\n{noun} 2: 2+2=4"
    return noun, "\n".join(blocks) + "\n" + totals, expected


@given(_think_blocks())
def test_dimension_scores_survive_layout_and_order(case):
    noun, text, expected = case
    assert parse_dim_scores(text, noun) == expected
    assert parse_dim_scores(f"<think>\n{text}\n</think>", noun) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>x</think><answer>Image 2 is better</answer>", "second"),
        # The first <answer> block counts (the robust parser takes the last).
        ("<answer>Image 1 is better</answer> then <answer>Image 2 is better</answer>", "first"),
        # Substrings, case-sensitive, the first phrase tested first.
        ("<answer>Image 2 is better than Image 1 is better</answer>", "first"),
        ("<answer>image 1 is better</answer>", None),
        ("<answer>Image 1 is better", None),  # no closed block: no verdict
        ("<ANSWER>Image 1 is better</ANSWER>", None),
        ("Image 1 is better", None),
        ("<answer>Image1 is better</answer>", None),
        ("<answer>Image 12 is better</answer>", None),
        ("", None),
    ],
)
def test_reference_verdict_reads_like_pref_grpo(text, expected):
    assert reference_verdict(text, NO_TIE, answer_block=True) == expected


def test_reference_verdict_without_answer_block_reads_the_whole_text():
    assert reference_verdict("Both images are equally good, Image 1 is better", IMAGE, answer_block=False) == "first"
    assert reference_verdict("So: Both images are equally good.", IMAGE, answer_block=False) == "tie"
    assert reference_verdict("image 2 is better", IMAGE, answer_block=False) is None
    assert parse_verdict("image 2 is better", IMAGE) == "second"  # what the robust parser makes of it


def test_shipped_templates_render_media_slots_and_fields():
    pairwise = load_template("unifiedreward-pairwise", kind="pairwise").section("video")
    parts = pairwise.render('a "red" car {not a field}', num_frames=8)
    assert parts[:2] == [MediaPart("media_a"), MediaPart("media_b")]
    assert isinstance(parts[2], TextPart)
    assert "The first 8 images" in parts[2].text and 'a "red" car {not a field}' in parts[2].text
    pointwise = load_template("unifiedreward-pointwise", kind="pointwise")
    assert pointwise.score_range == (1, 5)
    assert pointwise.section("image").answer_skeleton() == [
        "Alignment Score (1-5): ",
        "\nCoherence Score (1-5): ",
        "\nStyle Score (1-5): ",
    ]
    assert load_template("unifiedreward-think", kind="cot").section("video").noun == "Video"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "pairwise", "image": {"user": "{media_a} {prompt}", "verdicts": {}}}, "exactly once"),
        ({"kind": "pairwise", "image": {"user": "{media_a}{media_b} {caption}"}}, "unknown fields"),
        ({"kind": "pairwise", "image": {"user": "{media_a}{media_b}", "verdicts": {"first": "A"}}}, "verdicts"),
        ({"kind": "pointwise", "score_range": [1, 5], "image": {"user": "{media}"}}, "dims"),
        ({"kind": "pointwise", "image": {"user": "{media}", "dims": ["A"]}}, "score_range"),
        ({"kind": "head", "image": {"user": "{media}", "colour": 1}, "wanted": "head"}, "unknown keys"),
        ({"kind": "cot", "wanted": "pairwise"}, "is of kind 'cot'"),
        ({"kind": "pairwise"}, "needs an 'image' or a 'video' section"),
    ],
)
def test_template_validation(data, message):
    data = dict(data)
    wanted = data.pop("wanted", data["kind"])
    with pytest.raises(ConfigError, match=message):
        parse_template(data, name="t", kind=wanted)


def test_unknown_template_lists_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="unifiedreward-pairwise"):
        load_template("no-such-template", kind="pairwise")
    with pytest.raises(ConfigError, match="cannot read template"):
        load_template(template_file=tmp_path / "missing.yaml", kind="pairwise")
