"""GenEval's rules by hand (positions, IoU, box selection, metadata checks) and the reward end to end on a tiny
random OWLv2 and CLIP. The rules against GenEval's and Flow-GRPO's own code are in tests/golden/geneval."""

import json
import math
import re

import pytest
import torch

import mmreward
from mmreward.errors import ConfigError
from mmreward.rewards.geneval import (
    COLORS,
    RELATIONS,
    Thresholds,
    box_iou,
    crop_box,
    flow_grpo_score,
    geneval_correct,
    judge,
    read_metadata,
    relative_position,
    select_objects,
)
from mmreward.testing import sample_images, tiny_reward_preset


def test_relative_position_by_hand():
    # B is 20 x 20 at the origin; A 20 x 20 with its centre 40 px right and 10 px down. The offset (40, 10) shrinks
    # by 0.1 * (20 + 20) = 4 per axis to (36, 6); over |(40, 10)| = 41.23: dx = 0.873 (right of), dy = 0.146.
    b = (0, 0, 20, 20, 1.0)
    a = (40, 10, 60, 30, 1.0)
    assert relative_position(a, b, 0.1) == {"right of"}
    assert relative_position(b, a, 0.1) == {"left of"}
    # Diagonal: (30, 30) shrinks to (26, 26), over 42.43 each is 0.613: both relations.
    assert relative_position((30, 30, 50, 50, 1.0), b, 0.1) == {"right of", "below"}
    # Centres 3 px apart with 40 px of summed sizes: the shrunk offset is 0 on both axes, no relation.
    assert relative_position((3, 0, 23, 20, 1.0), b, 0.1) == set()
    # A larger threshold swallows the 10 px vertical offset but not the 40 px horizontal one.
    assert relative_position((0, -40, 20, -20, 1.0), b, 0.1) == {"above"}


def test_box_iou_counts_pixels_inclusively():
    # 11 x 11 = 121 px each, overlapping in 6 x 11 = 66: IoU 66 / 176.
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(66 / 176)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0


def test_select_objects_thresholds_orders_caps_and_suppresses():
    boxes = {
        "dog": [(0, 0, 10, 10, 0.5), (1, 0, 11, 10, 0.75), (50, 50, 60, 60, 0.25), (30, 30, 40, 40, 0.625)],
        "cat": [(0, 0, 5, 5, 0.125)],
    }
    kept = select_objects(boxes, 0.3, Thresholds())
    assert [b[4] for b in kept["dog"]] == [0.75, 0.625, 0.5]
    assert "cat" not in kept
    assert [b[4] for b in select_objects(boxes, 0.3, Thresholds(max_objects=2))["dog"]] == [0.75, 0.625]
    # (0, 0, 10, 10) overlaps the best box by 10 x 11 / (2 * 121 - 110) = 0.83: suppressed at 0.5, not at 0.9.
    assert [b[4] for b in select_objects(boxes, 0.3, Thresholds(max_overlap=0.5))["dog"]] == [0.75, 0.625]
    assert len(select_objects(boxes, 0.3, Thresholds(max_overlap=0.9))["dog"]) == 3


def test_judge_partial_credit_by_hand():
    # Two red cars asked, three found, two of the best two red: GenEval passes (>= 2, both red); Flow-GRPO's exact
    # count fails: count term 1 - 1/2, colour term 0 (count wrong): score 0.25.
    metadata = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}]}
    detected = {"car": [(0, 0, 9, 9, 0.9), (20, 0, 29, 9, 0.8), (40, 0, 49, 9, 0.7)]}
    verdict = judge(detected, metadata, lambda name, n: ["red", "red", "blue"][:n], Thresholds())
    assert (verdict.correct, verdict.strict_correct, verdict.score) == (True, False, 0.25)
    assert verdict.reasons == ("expected car==2, found 3",)  # GenEval's rule passed, so only the exact count speaks


def test_crop_box_is_never_empty():
    assert crop_box((3.4, 5.6, 10.5, 20.2, 0.9), 64, 64) == (3, 6, 10, 20)
    assert crop_box((64.0, 10.0, 64.0, 10.2, 0.9), 64, 64) == (63, 10, 64, 11)


def test_shipped_metadata_and_its_checks(tmp_path):
    table = read_metadata(mmreward.rewards.geneval.GENEVAL_METADATA)
    assert len(table) == 553
    assert len({r["class"] for m in table.values() for r in m["include"]}) == 80
    bad = tmp_path / "bad.jsonl"
    record = {"tag": "position", "prompt": "p", "include": [{"class": "dog", "count": 1, "position": ["near", 0]}]}
    bad.write_text(json.dumps(record) + "\n")
    with pytest.raises(ConfigError, match="needs a relation"):
        read_metadata(bad)
    bad.write_text(json.dumps({**record, "tag": "style"}) + "\n")
    with pytest.raises(ConfigError, match="tag 'style'"):
        read_metadata(bad)


def test_metadata_files_merge_and_a_prompt_with_two_rule_sets_is_refused(tmp_path):
    """A training set and its held-out prompts are read together; Flow-GRPO's test file repeats each prompt with the
    same record (kept once); a prompt given other rules, in the same file or another, names both places."""
    shipped = mmreward.rewards.geneval.GENEVAL_METADATA
    bench = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
    train = {
        "tag": "counting",
        "prompt": "a photo of five cups",
        "include": [{"class": "cup", "count": 5}],
        "exclude": [{"class": "cup", "count": 6}],
    }
    train_file = tmp_path / "train_metadata.jsonl"
    padded = {**train, "prompt": train["prompt"] + " "}  # found as the stripped training prompt
    train_file.write_text("\n".join(json.dumps(r) for r in (train, padded, bench)) + "\n")
    table = read_metadata([train_file, shipped])
    assert len(table) == 554 and table["a photo of five cups"] == train
    assert table["a photo of a bench"] == bench
    assert read_metadata(str(train_file)) == {train["prompt"]: train, bench["prompt"]: bench}
    other = {**bench, "include": [{"class": "bench", "count": 2}]}
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps(other) + "\n")
    with pytest.raises(ConfigError, match=r"'a photo of a bench' has one record at line 3 of .*train_metadata.jsonl"):
        read_metadata([train_file, clash])
    clash.write_text(json.dumps(bench) + "\n" + json.dumps(other) + "\n")
    with pytest.raises(ConfigError, match=r"line 2 of .*: prompt 'a photo of a bench' was listed before \(line 1"):
        read_metadata(clash)
    with pytest.raises(ConfigError, match="names no metadata file"):
        read_metadata([])


@pytest.fixture(scope="module")
def reward(tmp_path_factory):
    # Thresholds the random detector's confidences straddle, so boxes are kept and colours classified.
    path = tiny_reward_preset("geneval", tmp_path_factory.mktemp("geneval"))
    return mmreward.load_reward(str(path), threshold=0.5, counting_threshold=0.55, batch_size=3)


PROMPTS = [
    "a photo of a purple wine glass and a black apple",
    "a photo of a dog right of a teddy bear",
    "a photo of two clocks",
    "a photo of a bench",
]


def test_reward_end_to_end_on_tiny_models(reward):
    images = sample_images()[:4]
    out = reward.score(PROMPTS + ["a watercolour of a lighthouse"], images + images[:1])
    assert out.failed.tolist() == [False] * 4 + [True]
    assert "not in the GenEval metadata" in out.errors[4]
    scores = out.scores[:4]
    assert torch.isfinite(scores).all() and (scores <= 1).all() and (scores >= -14).all()
    for name in ("strict_accuracy", "accuracy"):
        assert set(out.dims[name][:4].tolist()) <= {0.0, 1.0}
    # Items are scored alone as in a batch (batching changes no decision).
    alone = torch.cat([reward.score([p], [m]).scores for p, m in zip(PROMPTS, images, strict=True)])
    assert torch.equal(alone, scores)


def test_reward_detections_lie_in_the_image_and_colours_are_unit_classifiers(reward):
    prepared = reward.prepare(torch.rand(3, 40, 72))
    assert prepared["image"].shape == (40, 72, 3) and prepared["pixels"].shape == (3, 64, 64)
    found = reward.detect(prepared["pixels"][None], [(40, 72)], [set(reward.classes)])[0]
    boxes = [b for v in found.values() for b in v]
    assert len(boxes) == 16  # one per patch of the 4 x 4 grid, each with its best class
    assert all(0 <= b[0] <= b[2] <= 72 and 0 <= b[1] <= b[3] <= 40 and 0 <= b[4] <= 1 for b in boxes)
    weights = reward.colour_weights("apple")
    assert weights.shape[1] == len(COLORS)
    assert torch.allclose(weights.norm(dim=0), torch.ones(len(COLORS)), atol=1e-5)


def test_detections_are_the_detectors_own_forward(reward):
    """Queries embedded once give what Owlv2ForObjectDetection's forward gives with the queries repeated per image:
    per box its best class, sigmoid confidence and corners (x the padded square's side)."""
    pixels = torch.stack([reward.prepare(torch.rand(3, 48, 64))["pixels"] for _ in range(2)])
    tokens = reward.processor.tokenizer(
        [f"a photo of a {c}" for c in reward.classes], padding="max_length", truncation=True, return_tensors="pt"
    )
    out = reward.detector(
        input_ids=tokens["input_ids"].repeat(2, 1),
        attention_mask=tokens["attention_mask"].repeat(2, 1),
        pixel_values=pixels,
    )
    found = reward.detect(pixels, [(48, 64)] * 2, [set(reward.classes)] * 2)
    for n in range(2):
        best = out.logits[n].max(dim=-1)
        cx, cy, w, h = out.pred_boxes[n].unbind(-1)
        corners = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1) * 64
        corners[:, 0::2], corners[:, 1::2] = corners[:, 0::2].clamp(0, 64), corners[:, 1::2].clamp(0, 48)
        expected = sorted(
            (reward.classes[int(c)], *box, float(torch.sigmoid(v)))
            for box, v, c in zip(corners.tolist(), best.values, best.indices, strict=True)
        )
        ours = sorted((name, *box) for name, boxes in found[n].items() for box in boxes)
        assert [e[0] for e in expected] == [o[0] for o in ours]
        torch.testing.assert_close(torch.tensor([e[1:] for e in expected]), torch.tensor([o[1:] for o in ours]))


def test_reward_rejects_videos_and_bad_settings(reward, tmp_path):
    out = reward.score(PROMPTS[:1], [torch.rand(4, 3, 32, 32)])
    assert out.failed.tolist() == [True] and "scores images" in out.errors[0]
    with pytest.raises(ConfigError, match="counting_threshold"):
        Thresholds(counting_threshold=1.5)
    assert math.isnan(reward.score(["nope"], [torch.rand(3, 8, 8)]).scores.item())


def test_box_iou_on_boxes_of_unequal_sides_and_degenerate_ones():
    # a: 11 x 21 px, b: 11 x 4 px; they share x 5..10 (6 px) and y 5..8 (4 px).
    assert box_iou((0, 0, 10, 20), (5, 5, 15, 8)) == pytest.approx(24 / (231 + 44 - 24))
    # Apart along one axis only: no overlap, whatever the other axis does.
    assert box_iou((0, 0, 10, 10), (20, 0, 30, 10)) == 0
    assert box_iou((0, 0, 10, 10), (0, 20, 10, 30)) == 0
    # Two empty (inverted) boxes have no union.
    assert box_iou((5, 5, 3, 3), (5, 5, 3, 3)) == 0


def test_crop_box_at_the_bottom_edge_and_for_a_box_thinner_than_a_pixel():
    assert crop_box((10.0, 64.0, 12.0, 64.0, 0.9), 64, 64) == (10, 63, 12, 64)
    assert crop_box((10.2, 10.0, 9.8, 12.0, 0.9), 64, 64) == (10, 10, 11, 12)


def test_genevals_rule_by_hand():
    """GenEval's ``correct`` clause by clause: count, then colour of the best ``count`` boxes, then position against
    the boxes of an earlier clause that matched; excluded classes must stay under their count."""

    def colours_of(table):
        # The colours of the n most confident boxes of a class: the checker must ask for exactly n.
        return lambda name, n: table[name][:n]

    dogs = [(0, 0, 9, 9, 0.9), (0, 40, 9, 49, 0.8)]
    cat = [(40, 0, 49, 9, 0.9)]
    red = {"include": [{"class": "dog", "count": 2, "color": "red"}]}
    assert geneval_correct({"dog": dogs}, red, colours_of({"dog": ["red", "red", "blue"]}), 0.1) == (True, [])
    assert geneval_correct({"dog": dogs}, red, colours_of({"dog": ["blue", "red", "red"]}), 0.1) == (
        False,
        ["expected red dog>=2, found 1 red"],
    )
    left = {"include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    assert geneval_correct({"dog": dogs, "cat": cat}, left, colours_of({}), 0.1) == (True, [])
    right = {"include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    assert geneval_correct({"dog": dogs, "cat": cat}, right, colours_of({}), 0.1) == (
        False,
        ["expected dog right of target"],
    )
    # The target clause failed (no cat): the position cannot hold.
    assert geneval_correct({"dog": dogs}, left, colours_of({}), 0.1) == (
        False,
        ["expected cat>=1, found 0", "no target for dog to be left of"],
    )
    # A clause whose colour failed is no target either.
    red_target = {
        "include": [
            {"class": "cat", "count": 1, "color": "red"},
            {"class": "dog", "count": 1, "position": ["left of", 0]},
        ]
    }
    assert geneval_correct({"dog": dogs, "cat": cat}, red_target, colours_of({"cat": ["blue"]}), 0.1) == (
        False,
        ["expected red cat>=1, found 0 red", "no target for dog to be left of"],
    )
    # Only exclusions: no "include" list at all.
    exclude = {"exclude": [{"class": "cat", "count": 1}]}
    assert geneval_correct({"cat": cat}, exclude, colours_of({}), 0.1) == (False, ["expected cat<1, found 1"])
    assert geneval_correct({"dog": dogs}, exclude, colours_of({}), 0.1) == (True, [])
    assert flow_grpo_score({"cat": cat}, exclude, colours_of({}), 0.1) == (True, 0, [])


def test_relative_position_of_unequal_boxes_with_their_scores():
    # Detector boxes carry their score in a fifth place: sizes and centres use the corners only.
    assert relative_position((9, 7, 22, 14, 0.9), (15, 10, 39, 33, 0.8), 0.1) == {"above"}
    # Close on x and y alike: both offsets are within the threshold, so no relation.
    assert relative_position((6, 7, 21, 17, 0.9), (9, 0, 18, 23, 0.8), 0.1) == set()
    # Without a threshold, one pixel apart is a relation.
    assert relative_position((0, 0, 2, 2, 0.9), (1, 0, 3, 2, 0.9), 0.0) == {"left of"}


def test_threshold_settings_and_their_bounds():
    Thresholds(threshold=0.0, counting_threshold=1.0, max_objects=1, max_overlap=0.0, position_threshold=0.0)
    for settings, message in (
        ({"threshold": 1.5}, "threshold must be in [0, 1], got 1.5"),
        ({"max_overlap": -0.1}, "max_overlap must be in [0, 1], got -0.1"),
        ({"max_objects": 0}, "max_objects must be >= 1, got 0"),
        ({"position_threshold": -0.1}, "position_threshold must be >= 0, got -0.1"),
    ):
        with pytest.raises(ConfigError) as err:
            Thresholds(**settings)
        assert str(err.value) == message


def test_select_objects_at_the_boundaries():
    # A box exactly at the threshold is not kept ("above" it).
    assert select_objects({"dog": [(0, 0, 9, 9, 0.3)]}, 0.3, Thresholds()) == {}
    # max_overlap 1 suppresses nothing, not even a duplicate box.
    twins = [(0, 0, 9, 9, 0.9), (0, 0, 9, 9, 0.8)]
    assert select_objects({"dog": twins}, 0.3, Thresholds(max_overlap=1.0)) == {"dog": twins}
    # IoU exactly max_overlap (50 of 100 pixels) suppresses.
    half = [(0, 0, 9, 9, 0.9), (0, 0, 9, 4, 0.8)]
    assert select_objects({"dog": half}, 0.3, Thresholds(max_overlap=0.5)) == {"dog": half[:1]}


def test_flow_grpos_score_by_hand():
    """Flow-GRPO's terms: per clause the count term, then a colour term over the best ``count`` boxes, and the
    position term (0 when it fails, then 1 after the pair loop, as the reference appends)."""

    def colours_of(table):
        return lambda name, n: table[name][:n]

    dogs = [(0, 0, 9, 9, 0.9), (0, 40, 9, 49, 0.8)]
    red = {"include": [{"class": "dog", "count": 2, "color": "red"}]}
    assert flow_grpo_score({"dog": dogs}, red, colours_of({"dog": ["blue", "red", "red"]}), 0.1) == (
        False,
        (1 + 0.5) / 2,
        ["expected red dog==2, found 1 red"],
    )
    cat, dog = [(40, 0, 49, 9, 0.9)], dogs[:1]
    left = {"include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}]}
    assert flow_grpo_score({"dog": dog, "cat": cat}, left, colours_of({}), 0.1) == (True, 1.0, [])
    right = {"include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    assert flow_grpo_score({"dog": dog, "cat": cat}, right, colours_of({}), 0.1) == (
        False,
        (1 + 1 + 0 + 1) / 4,
        ["expected dog right of target"],
    )
    assert flow_grpo_score({"dog": dog}, left, colours_of({}), 0.1) == (
        False,
        (0 + 1 + 0) / 3,
        ["expected cat==1, found 0", "no target for dog to be left of"],
    )


def test_metadata_errors_name_the_line_and_the_fix(tmp_path):
    path = tmp_path / "meta.jsonl"
    good = {"tag": "single_object", "prompt": "a dog", "include": [{"class": "dog", "count": 1}]}
    where = f"line 2 of GenEval metadata {str(path)!r}"

    def error(*records):
        path.write_text("\n" + "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
        with pytest.raises(ConfigError) as err:
            read_metadata(path)
        return str(err.value)

    # A blank line is skipped, not the end.
    path.write_text("\n" + json.dumps(good) + "\n")
    assert list(read_metadata(path)) == ["a dog"]
    message = error("{not json")
    assert message.startswith(f"{where} is not a record of its layout (") and message.endswith(
        "): each line needs prompt, tag, include ([{class, count, color?, position?}, ...]) and optionally exclude"
    )
    for clause in ({"class": "dog", "count": "1"}, {"count": 1}, {"class": "dog", "count": 0}):
        assert error({**good, "include": [clause]}) == (
            f"{where}: clause 0 needs a class name and a count >= 1, got {clause!r}"
        )
    assert error({**good, "exclude": [{"class": "cat", "count": 0}]}) == (
        f"{where}: clause 1 needs a class name and a count >= 1, got {{'class': 'cat', 'count': 0}}"
    )
    assert error({**good, "include": [{"class": "dog", "count": 1, "color": "teal"}]}) == (
        f"{where}: colour 'teal' is not one of {COLORS}"
    )
    for position in (["left of", 1], ["left of", -1], ["near", 0]):
        clauses = [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": position}]
        assert error({**good, "include": clauses}).endswith(
            f"position {position!r} needs a relation in {RELATIONS} and the index of an earlier include clause"
        )
    path.write_text("\n\n")
    with pytest.raises(ConfigError) as err:
        read_metadata(path)
    assert str(err.value) == f"GenEval metadata {str(path)!r} holds no prompts"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=f"^cannot read GenEval metadata from {re.escape(repr(str(path)))}: "):
        read_metadata(path)


def test_a_clause_without_its_target_is_no_target_either():
    """cat missing -> dog (left of the cat) has no target -> bird (above the dog) has none either, in both rules."""
    dog, bird = [(0, 40, 9, 49, 0.9)], [(0, 0, 9, 9, 0.9)]
    chain = {
        "include": [
            {"class": "cat", "count": 1},
            {"class": "dog", "count": 1, "position": ["left of", 0]},
            {"class": "bird", "count": 1, "position": ["above", 1]},
        ]
    }
    reasons = ["no target for dog to be left of", "no target for bird to be above"]
    assert geneval_correct({"dog": dog, "bird": bird}, chain, lambda name, n: [], 0.1) == (
        False,
        ["expected cat>=1, found 0", *reasons],
    )
    assert flow_grpo_score({"dog": dog, "bird": bird}, chain, lambda name, n: [], 0.1) == (
        False,
        (0 + 1 + 0 + 1 + 0) / 5,
        ["expected cat==1, found 0", *reasons],
    )


def test_relations_need_more_than_half_the_revised_offset():
    # Offsets (-4, 3) -> norm 5; widths 1 + 2 at threshold 0.5 revise x to -(4 - 1.5) = -2.5: exactly half, so no
    # "left of"; heights 1 + 1 revise y to 3 - 1 = 2 (0.4 of the norm).
    a, b = (0, 0, 1, 1, 0.9), (3.5, -3, 5.5, -2, 0.9)
    assert relative_position(a, b, 0.5) == set() and relative_position(b, a, 0.5) == set()
    # The same with the axes swapped: exactly half a norm above or below is neither.
    a_t, b_t = (0, 0, 1, 1, 0.9), (-3, 3.5, -2, 5.5, 0.9)
    assert relative_position(a_t, b_t, 0.5) == set() and relative_position(b_t, a_t, 0.5) == set()
    # A revised offset of exactly 1e-3 is a relation; only smaller ones count as the same place.
    assert relative_position((0, 0, 0.002, 1, 0.9), (0, 0, 0, 1, 0.9), 0.0) == {"right of"}
