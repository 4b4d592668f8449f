"""Pref-GRPO's UnifiedReward-Edit rewards (pointwise and pairwise), reproduced by mmreward's edit judges on canned
answers.

golden.json holds what Pref-GRPO's own edit reward code (``fastvideo/rewards/unifiedreward_edit_pointwise.py``;
make_golden.py) gave for the canned answers of cases.py under four weight settings: each answer's two scores as its
``_parse_scores`` reads them, and the instruction-following and quality rewards they combine into. Here the same
answers come from a canned backend behind :class:`~mmreward.rewards.vlm.edit_score.UnifiedRewardEditJudge`: with
``parsing="reference"`` every score and reward is the reference's; the default reading differs only where the
reference scores an answer it cannot read [0, 0] (it fails the item, or reads the "score" list of an answer that
copied the prompt's trailing comma) and clamps to [0, 25].

The golden also records what the reference sends: the images of each request (source then edit; the edit alone)
and the sha256 of each request's text; with ``UNIFIEDREWARD_DIR`` set to a checkout of CodeGoat24/UnifiedReward,
the text mmreward reads from the authors' scripts is checked against those hashes.

Pairwise: golden.json["pairwise"] holds what Pref-GRPO's ``cal_win_rate_edit_images``
(``fastvideo/rewards/unifiedreward_edit_pairwise.py``) gave for groups of two edits answered by each canned answer of
cases.PAIR_ANSWERS, and for three groups (three sources) in one call. With ``parsing="reference-pref-grpo"`` and
``orders="ab"`` (each pair once, in index order, as Pref-GRPO) the judge gives the same win rates (to the reference's
3-decimal rounding); an edit alone in its group fails here, where the reference gives it 0.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.rewards.registry import find_preset
from mmreward.rewards.vlm.edit_score import (
    FORMS,
    UnifiedRewardEditJudge,
    UnifiedRewardEditPairwiseJudge,
    read_edit_scores,
)
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend
from mmreward.rewards.vlm.parsing import AnswerParseError
from mmreward.rewards.vlm.templates import MediaPart, TextPart
from tests.golden.unifiedreward_edit.cases import ANSWERS, INSTRUCTION, PAIR_ANSWERS, PAIR_GROUPS, WEIGHTS

GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())
NAMES = list(ANSWERS)
# Answers the reference reads as [0, 0] because it cannot read them, and the robust reading fails.
ROBUST_FAILURES = {"booleans", "one score", "no score", "score not a list", "words", "infinite", "plain text", "empty"}
# Answers the reference cannot read but whose "score" list the robust reading finds.
ROBUST_READS = {"trailing comma": (20.0, 18.0), "two objects": (5.0, 5.0)}


class CannedAnswers(JudgeBackend):
    """Answers every question about edited image n (pixels n / 100) with the n-th canned answer; records what each
    prompt showed (sources are filled with 0.9) and its text."""

    weights_id = "canned answers"

    def __init__(self):
        self.asked = []

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        for p in prompts:
            shown = [candidates[p.media[x.slot]] for x in p.parts if isinstance(x, MediaPart)]
            self.asked.append((shown, p.parts))
        return [Completion(ANSWERS[NAMES[candidates[p.media["media"]]]]) for p in prompts]


def weights(setting: int) -> list[float]:
    return [1.0 if w is None else w for w in WEIGHTS[setting]]


def judge(setting: int = 0, parsing: str = "reference", **options) -> UnifiedRewardEditJudge:
    options = {"following_weights": weights(setting), "quality_weights": weights(setting), **options}
    return UnifiedRewardEditJudge(
        CannedAnswers(), template="unifiedreward-edit", parsing=parsing, batch_size=8, **options
    )


def edits() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    edited = [torch.full((3, 8, 8), n / 100) for n in range(len(NAMES))]
    return edited, [torch.full((3, 8, 8), 0.9)] * len(NAMES)


def test_golden_covers_every_case():
    assert GOLDEN["answers"] == NAMES and [s["weights"] for s in GOLDEN["settings"]] == [list(w) for w in WEIGHTS]
    # The answers move the scores both ways and out of range, and include ones the reference cannot read.
    parsed = list(GOLDEN["parsed"].values())
    assert [0.0, 0.0] in parsed and [30.0, -3.0] in parsed and len({tuple(p) for p in parsed}) > 10


@pytest.mark.parametrize("name", NAMES)
def test_reads_each_answer_as_the_reference(name):
    assert list(read_edit_scores(ANSWERS[name], "reference")) == GOLDEN["parsed"][name]


@pytest.mark.parametrize("setting", range(len(WEIGHTS)))
def test_the_judge_gives_the_references_rewards(setting):
    """Through the judge with the reference's reading: both questions' scores and rewards for every answer."""
    expected = GOLDEN["settings"][setting]
    the_judge = judge(setting)
    edited, sources = edits()
    out = the_judge.score([INSTRUCTION] * len(NAMES), edited, sources=sources)
    assert not out.failed.any(), out.errors
    for form, (first, second) in FORMS.items():
        # The reference's float32 tensors, bit for bit.
        assert out.dims[first].tolist() == expected[form]["scores"][0]
        assert out.dims[second].tolist() == expected[form]["scores"][1]
        assert out.dims[form].tolist() == pytest.approx(expected[form]["combined"], rel=1e-6, abs=1e-6)
    following, quality = expected["instruction_following"]["combined"], expected["quality"]["combined"]
    both = [(a + b) / 2 for a, b in zip(following, quality, strict=True)]
    assert out.scores.tolist() == pytest.approx(both, rel=1e-6, abs=1e-6)
    assert out.rationales[0].startswith("[instruction_following]\n") and "[quality]\n" in out.rationales[0]


@pytest.mark.parametrize("name", NAMES)
def test_robust_reading_fails_or_reads_what_the_reference_cannot(name):
    reference = GOLDEN["parsed"][name]
    if name in ROBUST_FAILURES:
        with pytest.raises(AnswerParseError, match="score"):
            read_edit_scores(ANSWERS[name])
    elif name in ROBUST_READS:
        assert reference == [0.0, 0.0] and read_edit_scores(ANSWERS[name]) == ROBUST_READS[name]
    else:
        assert list(read_edit_scores(ANSWERS[name])) == [min(25.0, max(0.0, v)) for v in reference]


def test_robust_judge_fails_unreadable_items_alone_and_clamps():
    the_judge = judge(1, parsing="robust")
    edited, sources = edits()
    out = the_judge.score([INSTRUCTION] * len(NAMES), edited, sources=sources)
    for n, name in enumerate(NAMES):
        assert bool(out.failed[n]) == (name in ROBUST_FAILURES), (name, out.errors[n])
        if name in ROBUST_FAILURES:
            assert math.isnan(out.scores[n]) and out.errors[n].startswith("instruction_following: ")
            assert ANSWERS[name][:20] in out.errors[n]
    n = NAMES.index("out of range")  # [30, -3] -> [25, 0]: 0.6 * 25 + 0.4 * 0 for both questions
    assert out.scores[n].item() == pytest.approx(15.0) and out.dims["overediting"][n].item() == 0.0
    n = NAMES.index("trailing comma")  # 0.6 * 20 + 0.4 * 18
    assert out.scores[n].item() == pytest.approx(19.2)


def test_requests_show_the_references_images_in_its_order():
    """Pref-GRPO sends the source then the edit (instruction following) and the edit alone (quality), the images
    before the text, as the authors' client builds its messages; the judge asks the same."""
    requests = GOLDEN["requests"]
    assert requests["instruction_following"]["images"] == ["source-0", "edited-0"]
    assert requests["quality"]["images"] == ["edited-0"]
    the_judge = judge()
    the_judge.score([INSTRUCTION], [torch.full((3, 8, 8), 0.03)], sources=[torch.full((3, 8, 8), 0.9)])
    (following, following_parts), (quality, quality_parts) = the_judge.backend.asked
    assert following == [90, 3] and quality == [3]
    for parts, count in ((following_parts, 2), (quality_parts, 1)):
        assert all(isinstance(p, MediaPart) for p in parts[:count]) and isinstance(parts[count], TextPart)
    assert INSTRUCTION in parts_text(following_parts) and INSTRUCTION not in parts_text(quality_parts)


def parts_text(parts) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextPart))


@pytest.mark.skipif(not os.environ.get("UNIFIEDREWARD_DIR"), reason="needs a checkout of CodeGoat24/UnifiedReward")
def test_published_prompts_read_by_the_preset_are_the_references_texts():
    """The preset's prompts, read from the authors' scripts, give the text Pref-GRPO sends (by sha256)."""
    preset = find_preset("unifiedreward-edit").kwargs
    options = {k: preset[k] for k in preset if k.endswith(("template_name", "reference_prompt")) or k == "template"}
    the_judge = UnifiedRewardEditJudge(
        CannedAnswers(), template_source_dir=os.environ["UNIFIEDREWARD_DIR"], parsing="reference", **options
    )
    the_judge.score([INSTRUCTION], [torch.full((3, 8, 8), 0.0)], sources=[torch.full((3, 8, 8), 0.9)])
    for (_, parts), form in zip(the_judge.backend.asked, ("instruction_following", "quality"), strict=True):
        digest = hashlib.sha256(parts_text(parts).encode("utf-8")).hexdigest()
        assert digest == GOLDEN["requests"][form]["text_sha256"], form


def test_form_weights_skip_a_question_and_settings_are_checked():
    only_following = judge(form_weights={"quality": 0})
    out = only_following.score([INSTRUCTION], [torch.full((3, 8, 8), 0.0)], sources=[torch.full((3, 8, 8), 0.9)])
    assert len(only_following.backend.asked) == 1 and out.scores.tolist() == [22.0]  # "clean": (23 + 21) / 2
    assert math.isnan(out.dims["quality"][0]) and "quality" not in only_following.templates
    weighted = judge(form_weights={"instruction_following": 3, "quality": 1})
    out = weighted.score([INSTRUCTION], [torch.full((3, 8, 8), 0.01)], sources=[torch.full((3, 8, 8), 0.9)])
    assert out.scores.tolist() == [14.875]  # "decimals" both times: (17.5 + 12.25) / 2
    for bad, match in (
        (dict(form_weights={"quality": 0, "instruction_following": 0}), "not all 0"),
        (dict(form_weights={"aesthetics": 1}), "form_weights must map"),
        (dict(following_weights=[0, 0]), "following_weights must be two"),
        (dict(quality_weights=[1.0]), "quality_weights must be two"),
        (dict(mode="logits"), "use mode='generate'"),
    ):
        with pytest.raises(ConfigError, match=match):
            judge(**bad)
    with pytest.raises(ConfigError, match="parsing must be one of"):
        judge(parsing="lenient")


def test_needs_sources_and_refuses_videos():
    the_judge = judge()
    with pytest.raises(ConfigError, match="sources="):
        the_judge.score(["a"], [torch.rand(3, 8, 8)])
    out = the_judge.score(["a"], [torch.rand(4, 3, 8, 8)], sources=[torch.rand(3, 8, 8)])
    assert out.failed.all() and "scores edited images; got a video" in out.errors[0]
    with pytest.raises(ConfigError, match="'edit-score' template"):
        UnifiedRewardEditJudge(CannedAnswers(), template="unifiedreward-edit-quality")


def test_local_and_remote_presets_ask_the_same_published_prompts():
    local, remote = find_preset("unifiedreward-edit"), find_preset("unifiedreward-edit-remote")
    for key in ("reference_prompt", "quality_reference_prompt", "template_name", "quality_template_name"):
        assert local.kwargs[key] == remote.kwargs[key]
    assert local.describe()["template"] == "reference (CodeGoat24/UnifiedReward@ff6f520)"
    assert local.kwargs["reference_prompt"]["image"]["path"].endswith("edit_pointwise_instruction_following.py")
    local, remote = find_preset("unifiedreward-edit-pairwise"), find_preset("unifiedreward-edit-pairwise-remote")
    assert local.kwargs["reference_prompt"] == remote.kwargs["reference_prompt"]
    assert local.type == remote.type == "edit-pairwise-judge" and remote.kwargs["backend"] == "chat"
    assert local.kwargs["reference_prompt"]["image"]["path"].endswith("edit_pairwise_rank.py")


def test_tiny_judge_writes_and_fails_unreadable_answers(tiny_root):
    preset = testing.tiny_vlm_preset("unifiedreward-edit", tiny_root, backbone="qwen3_vl")
    the_judge = mmreward.load_reward(str(preset))
    assert isinstance(the_judge, UnifiedRewardEditJudge) and the_judge.uses_source
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    out = the_judge.score(["make it red"], [image], sources=[image.flip(-1)])
    assert out.failed.all() and 'no "score" list' in out.errors[0] and "max_new_tokens=32" in out.errors[0]
    assert out.rationales[0].count("[quality]\n") == 1


# -- the pairwise form: Pref-GRPO's unifiedreward_edit_pairwise reward ----------------------------------------------

PAIRWISE = GOLDEN["pairwise"]
# The robust reading's P(edit 1 better) per answer, or None where it fails the pair (no verdict sentence).
ROBUST_PAIRS = {
    "first": 1.0,
    "second": 0.0,
    "capitalized": 0.0,
    "markdown": 1.0,
    "reasoning then verdict": 0.0,
    "answer block": 1.0,
    "answer block without verdict": 0.0,
    "empty answer block": 0.0,  # the reference: an empty <answer> block is no verdict, though the text names one
    "both named": 1.0,  # the last verdict sentence; the reference takes the first phrase it checks
    "no verdict": None,
    "image 1 only": None,
    "empty": None,
}


class CannedPairs(JudgeBackend):
    """Answers the pair of edits (first, second) shown (pixels index / 100) with its canned answer; records the
    candidates each prompt showed, in order (sources are filled with 0.9)."""

    weights_id = "canned answers"

    def __init__(self, outputs):
        self.outputs = outputs
        self.asked = []

    def prepare(self, frames):
        return round(float(frames.mean()) * 100)

    def generate(self, candidates, prompts, *, max_new_tokens, temperature, batch_size):
        self.asked += [
            (p, [candidates[p.media[x.slot]] for x in p.parts if isinstance(x, MediaPart)]) for p in prompts
        ]
        return [
            Completion(self.outputs[(candidates[p.media["media_a"]], candidates[p.media["media_b"]])]) for p in prompts
        ]


def pair_judge(outputs, parsing="reference-pref-grpo") -> UnifiedRewardEditPairwiseJudge:
    return UnifiedRewardEditPairwiseJudge(
        CannedPairs(outputs), template="unifiedreward-edit-pairwise", parsing=parsing, batch_size=4
    )


def test_pairwise_golden_covers_every_case():
    assert list(PAIRWISE["answers"]) == list(PAIR_ANSWERS) and len(PAIRWISE["groups"]) == len(PAIR_GROUPS)
    assert {tuple(r) for r in PAIRWISE["answers"].values()} == {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}


@pytest.mark.parametrize("name", list(PAIR_ANSWERS))
def test_each_pair_answer_is_read_as_the_reference(name):
    """A group of two edits answered by each canned answer: the reference's rewards, through compare and win_rate."""
    expected = PAIRWISE["answers"][name]
    the_judge = pair_judge({(0, 1): PAIR_ANSWERS[name]})
    source, edits_ = torch.full((3, 8, 8), 0.9), [torch.full((3, 8, 8), k / 100) for k in range(2)]
    out = the_judge.compare([INSTRUCTION], [edits_[0]], [edits_[1]], orders="ab", sources=[source])
    assert not out.failed.any() and float(out.prob_a[0]) == expected[0]
    rates = mmreward.win_rate(the_judge, INSTRUCTION, edits_, orders="ab", source=source)
    assert rates.tolist() == expected
    robust = pair_judge({(0, 1): PAIR_ANSWERS[name]}, parsing="robust")
    out = robust.compare([INSTRUCTION], [edits_[0]], [edits_[1]], orders="ab", sources=[source])
    if ROBUST_PAIRS[name] is None:
        assert out.failed[0] and "no verdict" in out.errors[0]
    else:
        assert not out.failed[0] and float(out.prob_a[0]) == ROBUST_PAIRS[name]


def test_groups_of_edits_get_the_references_win_rates():
    """Pref-GRPO's reward over three groups of one step (three sources) in one call: win rates to its 3-decimal
    rounding; an edit alone in its group fails here (the reference gives it 0)."""
    outputs, edited, sources, labels = {}, [], [], []
    start = 0
    for g, group in enumerate(PAIR_GROUPS):
        for (i, j), name in group["answers"].items():
            outputs[(start + i, start + j)] = PAIR_ANSWERS[name]
        edited += [torch.full((3, 8, 8), (start + k) / 100) for k in range(group["size"])]
        sources += [torch.full((3, 8, 8), 0.9 - g / 100)] * group["size"]
        labels += [g] * group["size"]
        start += group["size"]
    the_judge = pair_judge(outputs)
    out = the_judge.score([INSTRUCTION] * len(edited), edited, groups=labels, orders="ab", sources=sources)
    expected = [r for rewards in PAIRWISE["groups"] for r in rewards]
    assert out.failed.tolist() == [False] * (len(edited) - 1) + [True] and "group of one" in out.errors[-1]
    assert out.scores[:-1].tolist() == pytest.approx(expected[:-1], abs=5e-4 + 1e-7) and expected[-1] == 0.0
    # Every pair once, in index order, each with its own group's source first.
    assert sorted(shown for _, shown in the_judge.backend.asked) == sorted([90 - labels[i], i, j] for i, j in outputs)


def test_pref_grpo_win_rate_reward_shows_the_judge_each_samples_source():
    from mmreward.alignment.group_rewards import WinRateGroupReward

    group = PAIR_GROUPS[0]
    outputs = {pair: PAIR_ANSWERS[name] for pair, name in group["answers"].items()}
    media = torch.stack([torch.full((3, 8, 8), k / 100) for k in range(3)])
    reward = WinRateGroupReward(pair_judge(outputs), orders="ab")
    out = reward.score([INSTRUCTION] * 3, media, groups=torch.zeros(3), sources=[torch.full((3, 8, 8), 0.9)] * 3)
    assert out.dims["win_rate"].tolist() == pytest.approx(PAIRWISE["groups"][0])
    with pytest.raises(ConfigError, match="pass sources="):
        reward.score([INSTRUCTION] * 3, media, groups=torch.zeros(3))


def test_pairwise_requests_show_the_source_then_both_edits_then_the_text():
    assert GOLDEN["requests"]["pairwise"]["images"] == ["source-0", "edited-0-0", "edited-0-1"]
    the_judge = pair_judge({(0, 1): "x"})
    the_judge.compare(
        [INSTRUCTION],
        [torch.zeros(3, 8, 8)],
        [torch.full((3, 8, 8), 0.01)],
        orders="ab",
        sources=[torch.full((3, 8, 8), 0.9)],
    )
    prompt, shown = the_judge.backend.asked[0]
    assert shown == [90, 0, 1] and [type(p).__name__ for p in prompt.parts] == ["MediaPart"] * 3 + ["TextPart"]
    with pytest.raises(ConfigError, match="pass sources="):
        the_judge.compare([INSTRUCTION], [torch.zeros(3, 8, 8)], [torch.zeros(3, 8, 8)])
    out = the_judge.compare(["a"], [torch.rand(2, 3, 8, 8)], [torch.rand(2, 3, 8, 8)], sources=[torch.rand(3, 8, 8)])
    assert out.failed.all() and "ranks edited images; got a video" in out.errors[0]
    with pytest.raises(ConfigError, match="use mode='generate'"):
        UnifiedRewardEditPairwiseJudge(CannedPairs({}), template="unifiedreward-edit-pairwise", mode="logits")


@pytest.mark.skipif(not os.environ.get("UNIFIEDREWARD_DIR"), reason="needs a checkout of CodeGoat24/UnifiedReward")
def test_published_pair_rank_prompt_is_the_references_text():
    preset = find_preset("unifiedreward-edit-pairwise").kwargs
    the_judge = UnifiedRewardEditPairwiseJudge(
        CannedPairs({(0, 1): "x"}),
        template="reference",
        template_name=preset["template_name"],
        reference_prompt=preset["reference_prompt"],
        template_source_dir=os.environ["UNIFIEDREWARD_DIR"],
    )
    the_judge.compare(
        [INSTRUCTION],
        [torch.zeros(3, 8, 8)],
        [torch.full((3, 8, 8), 0.01)],
        orders="ab",
        sources=[torch.full((3, 8, 8), 0.9)],
    )
    digest = hashlib.sha256(parts_text(the_judge.backend.asked[0][0].parts).encode("utf-8")).hexdigest()
    assert digest == GOLDEN["requests"]["pairwise"]["text_sha256"]


def test_tiny_pairwise_judge_writes_and_fails_unreadable_answers(tiny_root):
    preset = testing.tiny_vlm_preset("unifiedreward-edit-pairwise", tiny_root, backbone="qwen3_vl")
    the_judge = mmreward.load_reward(str(preset))
    assert isinstance(the_judge, UnifiedRewardEditPairwiseJudge) and the_judge.uses_source
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    out = the_judge.compare(["make it red"], [image], [image.flip(-1)], orders="ab", sources=[image.flip(-2)])
    assert out.failed.all() and "no verdict" in out.errors[0] and "max_new_tokens=32" in out.errors[0]


def test_win_rates_take_sources_for_judges_of_edits_only(tmp_path):
    """A pointwise judge of edits ranks a group by its scores' gaps, given the source; an unreadable source fails
    the pairs it is in, with the reason; a judge with neither sources nor judge_pairs refuses them."""
    edited = [torch.full((3, 8, 8), n / 100) for n in range(2)]  # "clean" (22) and "decimals" (14.875)
    rates = mmreward.win_rate(judge(), INSTRUCTION, edited, source=torch.full((3, 8, 8), 0.9))
    gap = torch.sigmoid(torch.tensor(22.0 - 14.875)).item()
    assert rates.tolist() == pytest.approx([gap, 1 - gap])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = pair_judge({(0, 1): "x"}).compare(
        [INSTRUCTION], [edited[0]], [edited[1]], orders="ab", sources=[tmp_path / "broken.png"]
    )
    assert out.failed.all() and out.errors[0].startswith("source: ") and "broken.png" in out.errors[0]

    class CompareOnly:
        def compare(self, prompts, media_a, media_b, orders):
            raise AssertionError("never asked")

    with pytest.raises(ConfigError, match="compares pairs without source images"):
        mmreward.win_rate(CompareOnly(), INSTRUCTION, edited, source=edited[0])
