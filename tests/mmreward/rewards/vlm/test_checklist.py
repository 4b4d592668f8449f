"""Checklist judges (UniGenBench-style test points): the written-answer parser, the template, the P(yes) read-out
against a hand computation, agreement of the read-out with written verdicts on a fine-tuned tiny judge, per-item
failures, and the remote judge against a small local OpenAI-compatible server."""

import math

import pytest
import torch
import torch.nn.functional as F

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.vlm.backbone import PromptSequence
from mmreward.rewards.vlm.checklist import ChecklistJudge, TestPoint
from mmreward.rewards.vlm.judge_base import JudgePrompt
from mmreward.rewards.vlm.parsing import AnswerParseError, parse_checklist
from mmreward.rewards.vlm.templates import load_template, parse_template
from tests.fake_servers import fake_checklist_server

# ------------------------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        ("<score>[1, 0, 1]</score>", 3, [True, False, True]),
        ('<analysis>["ok", "no"]</analysis>\n<score>["1", "0"]</score>', 2, [True, False]),
        ("<SCORE> [ 0 ,1 ] </SCORE>", 2, [False, True]),
        ("**<score>[1]</score>**", 1, [True]),
        # the last block counts: judges restate the format before they answer
        ("Answer like <score>[1, 0]</score>. My verdicts: <score>[0, 0]</score>", 2, [False, False]),
        (
            "<description><checkpoint>x</checkpoint><score>[1,1,0,1]</score></description>",
            4,
            [True, True, False, True],
        ),
    ],
)
def test_checklist_answers_that_parse(text, count, expected):
    assert parse_checklist(text, count) == expected


@pytest.mark.parametrize(
    ("text", "count", "message"),
    [
        ("", 1, "empty answer"),
        ("All test points are satisfied: 1, 1", 2, "no <score>"),
        ("<score>[1, 0", 2, "not closed"),
        ("<score>1, 0</score>", 2, "does not hold a [...] list"),
        ("<score>[1, 0]</score>", 3, "2 verdict(s) for 3 test point(s)"),
        ("<score>[1, 0, 1]</score>", 2, "3 verdict(s) for 2"),
        ("<score>[1, 2]</score>", 2, "only 0 and 1, found ['2']"),
        ("<score>[yes, no]</score>", 2, "only 0 and 1"),
        ("<score>[0.5, 1]</score>", 2, "only 0 and 1"),
        ("<score>[]</score>", 1, "0 verdict(s) for 1"),
    ],
)
def test_checklist_answers_that_do_not_parse_name_the_reason(text, count, message):
    with pytest.raises(AnswerParseError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_checklist(text, count)


# ---------------------------------------------------------------------------------------------- the template


def test_shipped_template_and_its_validation():
    template = load_template("unigenbench-checklist", kind="checklist")
    assert set(template.sections) == {"image", "video"}
    section = template.section("image")
    assert section.answers == (("Yes", "yes"), ("No", "no"))
    assert len(template.definitions) == 27 and "Attribute - Color" in template.definitions
    base = {"user": "{media} {prompt} {checklist} ({count})", "question": "{media} {prompt} {point}: {description}"}
    parse_template({"kind": "checklist", "image": base}, name="ok", kind="checklist")
    bad = [
        ({"user": base["user"]}, "asks about one test point in 'question'"),
        ({**base, "question": "{prompt} {point}"}, r"must contain \{media\}"),
        ({**base, "question": "{media} {checklist}"}, "unknown fields ['checklist']"),
        ({**base, "user": "{media} {point}"}, "unknown fields ['point']"),
        ({**base, "answers": {"yes": "Yes", "no": ["No", "Yes"]}}, "both a yes and a no answer"),
        ({**base, "answers": {True: "Yes", False: "No"}}, "YAML reads them as booleans"),
        ({**base, "item_line": "{index}. {media}"}, "must contain no media slot"),
    ]
    for section_data, message in bad:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_template({"kind": "checklist", "image": section_data}, name="bad", kind="checklist")
    with pytest.raises(ConfigError, match="is for checklist templates"):
        parse_template(
            {
                "kind": "pointwise",
                "score_range": [1, 5],
                "definitions": {"Style": "x"},
                "image": {"user": "{media}", "dims": ["A"]},
            },
            name="bad",
            kind="pointwise",
        )


# ----------------------------------------------------------------------------------------- local judges


@pytest.fixture(scope="module")
def judge(tiny_root):
    return testing.tiny_judge("checklist", root=tiny_root, mode="logits")


def _ids(judge, parts, candidate) -> list[int]:
    """Token ids of a question about one candidate, as the local backend builds them."""
    question = JudgePrompt(parts, judge.template.section(candidate.kind).system, {"media": 0})
    return judge.backend.prompt_ids(question, [candidate.data])


def _reference_p_yes(judge, prompt: str, image: torch.Tensor, point: TestPoint) -> float:
    """(p(Yes) + p(yes)) / (p(Yes) + p(yes) + p(No) + p(no)) after the question, from one plain forward pass over
    the whole question (no batching, no shared prefix, no cache)."""
    backbone, section = judge.backend.backbone, judge.template.section("image")
    tokenizer = backbone.tokenizer
    yes = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "yes")]
    no = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("No", "no")]
    candidate = judge.prepare(image)
    ids = _ids(judge, judge.render_question(section, prompt, point), candidate)
    assert "Does the image clearly satisfy this test point?" in tokenizer.decode(ids)
    with torch.inference_mode():
        batch = backbone.assemble([PromptSequence(ids=ids, visuals=backbone.encode([candidate.data]))])
        probs = backbone.model(**batch.as_kwargs()).logits[0, -1].float().softmax(-1)
    p_yes, p_no = float(probs[yes].sum()), float(probs[no].sum())
    return p_yes / (p_yes + p_no)


def test_p_yes_is_the_renormalized_mass_of_the_yes_words(judge, photos):
    """P(yes) of every test point equals the plain forward pass over its whole question, although the questions
    about one image share one cached forward over the image and caption."""
    points = [TestPoint("Attribute - Color", "a red umbrella"), TestPoint("Style", "an ink painting")]
    out = judge.check(["a red umbrella, ink painting", "a cat"], photos[:2], [points, [("Text Generation", "HI")]])
    assert not bool(out.failed.any()) and len(out.p_yes[0]) == 2 and len(out.p_yes[1]) == 1
    for k, point in enumerate(points):
        expected = _reference_p_yes(judge, "a red umbrella, ink painting", photos[0], point)
        assert math.isclose(out.p_yes[0][k], expected, rel_tol=1e-4)
        assert out.passed[0][k] == (expected > 0.5)
    assert math.isclose(
        out.p_yes[1][0], _reference_p_yes(judge, "a cat", photos[1], TestPoint("Text Generation", "HI")), rel_tol=1e-4
    )  # noqa: E501
    assert math.isclose(float(out.scores[0]), sum(out.p_yes[0]) / 2, rel_tol=1e-6)
    # Without checklists each prompt is one test point about the whole caption (a VQAScore-style reward).
    whole = judge.score(["a cat"], photos[1:2])
    same = judge.check(["a cat"], photos[1:2], [[("Prompt", "a cat")]])
    assert math.isclose(float(whole.scores[0]), same.p_yes[0][0], rel_tol=1e-6)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_shared_prefix_readout_on_other_backbones(tiny_root, photos, family):
    """Qwen2.5-VL and Qwen3-VL (deepstack features, interleaved M-RoPE): images of two sizes (left-padded prefixes
    of different lengths) and checklists of different lengths in one chunk give the plain forward's P(yes)."""
    judge = testing.tiny_judge("checklist", backbone=family, root=tiny_root, mode="logits")
    small = torch.nn.functional.interpolate(photos[2][None], size=(28, 56), mode="bilinear")[0]
    points = [
        [
            TestPoint("Style", "a photo"),
            TestPoint("World Knowledge", "the Alps"),
            TestPoint("Grammar - Negation", "none"),
        ],
        [TestPoint("Attribute - Shape", "round")],
    ]
    prompts = ["mountains without people", "a round thing"]
    out = judge.check(prompts, [photos[3], small], points)
    for item, image in enumerate((photos[3], small)):
        expected = [_reference_p_yes(judge, prompts[item], image, p) for p in points[item]]
        assert out.p_yes[item] == pytest.approx(expected, rel=1e-4)


def test_bad_input_fails_per_item_or_up_front(judge, photos, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = judge.check(["a", "b"], [str(broken), photos[0]], [[("Style", "x")], [("Style", "y")]])
    assert out.failed.tolist() == [True, False] and out.p_yes[0] is None and out.passed[1] is not None
    assert "broken.png" in out.errors[0] and math.isnan(float(out.scores[0]))
    with pytest.raises(ValueError, match="2 checklists for 1 items"):
        judge.check(["a"], photos[:1], [[("Style", "x")], [("Style", "y")]])
    with pytest.raises(ValueError, match="non-empty list"):
        judge.check(["a"], photos[:1], [[]])
    with pytest.raises(ConfigError, match="mode must be 'logits' or 'generate'"):
        testing.tiny_judge("checklist", root=judge.backend.directory.parent, mode="sample")


def test_unparseable_written_answers_fail_their_item_and_keep_the_text(tiny_root, photos):
    writer = testing.tiny_judge("checklist", root=tiny_root, mode="generate", max_new_tokens=6)
    out = writer.check(["a photo"], photos[:1], [[("Style", "a photo"), ("World Knowledge", "Paris")]])
    assert bool(out.failed[0]) and out.p_yes[0] is None and out.passed[0] is None
    assert "no <score>" in out.errors[0] and "max_new_tokens=6" in out.errors[0]
    assert out.rationales[0] is not None
    reward = writer.score(["a photo"], photos[:1])
    assert bool(reward.failed[0]) and math.isnan(float(reward.scores[0]))


# A fine-tuned tiny judge: the test point "bright" holds for bright images, "dark" for dark ones. A short template
# keeps its sequences short, so that it learns both answer forms in seconds; the wording does not matter here.
SHORT_TEMPLATE = """kind: checklist
image:
  user: "{media}{checklist}"
  item_line: "{description}"
  question: "{media}{description}?"
  answers: {"yes": "Yes", "no": "No"}
"""
_POINTS = {"bright": TestPoint("Attribute - Color", "bright"), "dark": TestPoint("Attribute - Color", "dark")}


def _toned(photo: torch.Tensor, tone: str) -> torch.Tensor:
    return photo * 0.25 + (0.75 if tone == "bright" else 0.0)


def _fine_tune(judge, photos, steps: int = 1000, lr: float = 3e-3) -> None:
    """Teach the tiny judge both answer forms: the one-point question ("Yes"/"No") and the written checklist
    ("<score>[1, 0]</score>" for the points in their listed order).

    The decisions are learned suddenly, at a step that depends on the CPU's instruction set: measured, decisive
    (every P(yes) within 0.01 of 0 or 1) after 500 steps natively (AVX512) but not under avx2 (400 and 500 steps:
    one point near 0.6), decisive there after 650 and 800 steps, and after 800 under torch's portable kernels."""
    backbone = judge.backend.backbone
    tokenizer = backbone.tokenizer
    model = backbone.model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    section = judge.template.section("image")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pool = {(k, tone): judge.prepare(_toned(photo, tone)) for k, photo in enumerate(photos) for tone in _POINTS}
    some = pool[(0, "bright")]

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] + [end]

    questions = {t: _ids(judge, judge.render_question(section, "x", p), some) for t, p in _POINTS.items()}
    orders = (("bright", "dark"), ("dark", "bright"))
    lists = {o: _ids(judge, judge.render_checklist(section, "x", [_POINTS[t] for t in o]), some) for o in orders}
    generator = torch.Generator().manual_seed(0)

    def draw(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    for _ in range(steps):
        examples = []  # (pool key, prompt ids, answer ids)
        for _ in range(8):
            key = (draw(len(photos)), ("bright", "dark")[draw(2)])
            if draw(2):
                asked = ("bright", "dark")[draw(2)]
                examples.append((key, questions[asked], encode("Yes" if asked == key[1] else "No")))
            else:
                order = orders[draw(2)]
                verdicts = ", ".join("1" if t == key[1] else "0" for t in order)
                examples.append((key, lists[order], encode(f"<score>[{verdicts}]</score>")))
        keys = sorted({key for key, _, _ in examples})
        encoded = dict(zip(keys, backbone.encode([pool[key].data for key in keys]), strict=True))
        batch = backbone.assemble([PromptSequence(ids=p + a, visuals=[encoded[key]]) for key, p, a in examples])
        logits = model(**batch.as_kwargs()).logits
        width = logits.shape[1]
        loss = sum(
            F.cross_entropy(logits[r, width - len(a) - 1 : width - 1].float(), batch.input_ids[r, width - len(a) :])
            for r, (_, _, a) in enumerate(examples)
        ) / len(examples)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def trained_judge(tiny_root, photos, tmp_path_factory):
    template = tmp_path_factory.mktemp("checklist-template") / "short.yaml"
    template.write_text(SHORT_TEMPLATE)
    judge = testing.tiny_judge(
        "checklist", root=tiny_root, mode="logits", max_new_tokens=12, template=None, template_file=str(template)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread, and more so on a shared machine
    try:
        _fine_tune(judge, photos[:6])
    finally:
        torch.set_num_threads(threads)
    return judge


@pytest.mark.learning
def test_logit_readout_agrees_with_the_written_verdicts(trained_judge, photos):
    """The same judge, both modes, on six images it was trained on and two it never saw: identical pass/fail per
    test point, and the verdicts follow the images (bright images pass "bright" and fail "dark")."""
    judge = trained_judge
    tones = ["bright", "dark"] * 4
    images = [_toned(photos[k], tone) for k, tone in enumerate(tones)]
    checklists = [
        [_POINTS["bright"], _POINTS["dark"]] if k % 3 else [_POINTS["dark"], _POINTS["bright"]] for k in range(8)
    ]
    read = judge.check(["x"] * 8, images, checklists)
    judge.mode = "generate"
    try:
        written = judge.check(["x"] * 8, images, checklists)
    finally:
        judge.mode = "logits"
    assert not bool(read.failed.any()) and not bool(written.failed.any()), written.errors
    assert all(text.startswith("<score>[") for text in written.rationales)
    assert read.passed == written.passed
    truth = [[p.description == tone for p in points] for tone, points in zip(tones, checklists, strict=True)]
    assert read.passed == truth
    assert all(abs(p - 0.5) > 0.4 for row in read.p_yes for p in row)  # decisive after training
    torch.testing.assert_close(written.scores, torch.full((8,), 0.5))  # one of two points passes in each image


# ---------------------------------------------------------------------------------------------- remote judge


@pytest.fixture(scope="module")
def checklist_server():
    with fake_checklist_server() as url:
        yield url


def test_remote_checklist_judge_parses_written_verdicts(checklist_server, photos):
    judge = mmreward.load_reward("unigenbench-eval-remote", endpoint=checklist_server)
    assert isinstance(judge, ChecklistJudge) and judge.mode == "generate"
    bright, dark = photos[0].clamp(min=0.8), photos[1] * 0.2
    points = [("Style", "a photo"), ("World Knowledge", "the Eiffel tower"), ("Attribute - Color", "red")]
    out = judge.check(["a photo", "a photo", "garbage"], [bright, dark, bright], [points, points[:2], points])
    assert out.passed[:2] == [[True, True, True], [False, False]]
    assert out.failed.tolist() == [False, False, True] and "no <score>" in out.errors[2]
    assert out.rationales[2] == "I cannot tell."
    torch.testing.assert_close(out.scores[:2], torch.tensor([1.0, 0.0]))
