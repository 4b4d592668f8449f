"""GenEval's rules by hand (positions, IoU, box selection, metadata checks) and the reward end to end on a tiny
random OWLv2 and CLIP. The rules against GenEval's and Flow-GRPO's own code are in tests/golden/geneval."""

import json
import math

import pytest
import torch

import mmreward
from mmreward.errors import ConfigError
from mmreward.rewards.geneval import (
    COLORS,
    Thresholds,
    box_iou,
    crop_box,
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
