"""Flow-GRPO's OCR reward: the string formula by hand and as properties, then end to end with a tiny TrOCR.
The formula against Flow-GRPO's own code is in tests/golden/ocr."""

import hashlib
from functools import cache

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.evaluation.prompt_sets import load_prompt_set
from mmreward.rewards.ocr import levenshtein, ocr_text_reward, quoted_text


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "", 3), ("same", "same", 0)],
)
def test_levenshtein_by_hand(a, b, distance):
    assert levenshtein(a, b) == distance


@pytest.mark.parametrize(
    ("target", "reading", "reward"),
    [
        ("Hello World", "  hello world  ", 1.0),  # spaces and case do not count
        ("Hello World", "Sign: HELLOWORLD!!", 1.0),  # extra text around the target costs nothing
        ("hello", "help", 1 - 2 / 5),  # substitute p -> l, insert o
        ("SALE", "SAL", 1 - 1 / 4),
        ("abc", "an entirely different and long reading", 0.0),  # 30+ edits, clamped to len(target)
        ("abc", "", 0.0),
        ("to\tdo", "todo", 1 - 1 / 5),  # only ' ' is removed, as in the reference
    ],
)
def test_ocr_text_reward_by_hand(target, reading, reward):
    assert ocr_text_reward(target, reading) == pytest.approx(reward, abs=1e-12)


def test_quoted_text_is_the_first_quoted_span():
    assert quoted_text('a board with "Soup" and "Bread"') == "Soup"
    assert quoted_text('an unclosed "quote here') == "quote here"  # split('"')[1], as the reference
    with pytest.raises(ValueError, match="no text in double quotes"):
        quoted_text("a sign with no quotes")
    with pytest.raises(ValueError, match="empty once spaces are removed"):
        ocr_text_reward("   ", "anything")


def test_the_shipped_ocr_prompt_set_is_flow_grpos_test_split_and_every_prompt_has_a_target():
    """``--prompts ocr``: yifan123/flow_grpo @ac4c86e dataset/ocr/test.txt unchanged (its sha256), 1,018 prompts,
    each with quoted text the reward can look for (a prompt without one would fail its samples)."""
    prompt_set = load_prompt_set("ocr")
    assert hashlib.sha256(prompt_set.source.read_bytes()).hexdigest() == (
        "4dd8caf3ab6ade73bd376c7d14c6ca49b6eacfb1bd321e22c40714ae4a98d4dc"
    )
    assert (len(prompt_set), prompt_set.media_kind) == (1018, "image")
    targets = [quoted_text(item.prompt) for item in prompt_set.items]  # raises for a prompt without one
    assert min(len(t.replace(" ", "")) for t in targets) >= 2 and len(set(targets)) == 957
    assert all(ocr_text_reward(t, t.upper()) == 1.0 for t in targets)


@cache
def naive_distance(a: str, b: str) -> int:
    if not a or not b:
        return len(a) + len(b)
    return min(
        naive_distance(a[1:], b) + 1, naive_distance(a, b[1:]) + 1, naive_distance(a[1:], b[1:]) + (a[0] != b[0])
    )


short = st.text(alphabet="abcAB ", max_size=7)


@given(short, short, short)
def test_levenshtein_is_the_edit_distance_metric(a, b, c):
    assert levenshtein(a, b) == naive_distance(a, b) == levenshtein(b, a)
    assert levenshtein(a, c) <= levenshtein(a, b) + levenshtein(b, c)
    assert abs(len(a) - len(b)) <= levenshtein(a, b) <= max(len(a), len(b))


@given(short.filter(lambda t: t.replace(" ", "")), short, short)
def test_reward_bounds_and_the_substring_rule(target, before, after):
    reading = before + target.upper() + after
    assert ocr_text_reward(target, reading) == 1.0
    reward = ocr_text_reward(target, before + after)
    assert 0.0 <= reward <= 1.0
    normalized_target = target.replace(" ", "").lower()
    assert (reward == 1.0) == (normalized_target in (before + after).replace(" ", "").lower())
    n = len(normalized_target)
    assert reward * n == pytest.approx(round(reward * n))  # 1 - d/n with an integer d


@pytest.fixture(scope="module")
def reward(tiny_root):
    return testing.tiny_clip_reward("ocr", tiny_root)


def transformers_readings(directory, photos):
    """The tiny model's readings through transformers alone: processor, greedy generate, decode."""
    from PIL import Image
    from transformers import AutoProcessor, VisionEncoderDecoderModel

    processor = AutoProcessor.from_pretrained(directory)
    model = VisionEncoderDecoderModel.from_pretrained(directory).eval()
    pixels = processor(images=[Image.open(p).convert("RGB") for p in photos], return_tensors="pt").pixel_values
    with torch.no_grad():
        ids = model.generate(pixel_values=pixels, max_new_tokens=64, num_beams=1, do_sample=False)
    return processor.batch_decode(ids, skip_special_tokens=True)


def test_end_to_end_scores_follow_what_the_model_reads(reward, tiny_root, sample_images):
    photos = [str(p) for p in sample_images[:3]]
    readings = transformers_readings(reward.weights_id, photos)
    assert len({r.replace(" ", "") for r in readings}) == 3 and all(r.strip() for r in readings)
    inside = [f'a sign reading "{r.split()[0]}" here' for r in readings]  # a word the model read: 1
    assert reward.score(inside, photos).scores.tolist() == [1.0, 1.0, 1.0]
    # Quoting the first photo's reading for the others: Flow-GRPO's formula on what transformers read.
    target = readings[0].replace(" ", "")[:12] or "x"
    expected = [ocr_text_reward(target, r) for r in readings]
    out = reward.score([f'"{target}"'] * 3, photos)
    assert out.scores.tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[0] == 1.0 and min(expected) < 1.0


def test_prompts_without_quoted_text_fail_alone_and_batching_does_not_matter(reward, tiny_root, sample_images):
    photos = [str(p) for p in sample_images[:4]]
    prompts = ['"abc"', "no quotes at all", 'empty ""', '"T T"']
    out = reward.score(prompts, photos)
    assert out.failed.tolist() == [False, True, True, False]
    assert "no text in double quotes" in out.errors[1] and "empty once spaces" in out.errors[2]
    assert torch.isnan(out.scores[1:3]).all()
    one_by_one = testing.tiny_clip_reward("ocr", tiny_root, batch_size=1)
    torch.testing.assert_close(one_by_one.score(prompts, photos).scores, out.scores, equal_nan=True)


def test_max_new_tokens_bounds_the_reading_and_is_validated(reward, tiny_root, sample_images):
    frames = [reward.prepare(reward.load_media(p)) for p in sample_images[:2]]
    full = reward.read(frames)
    short = testing.tiny_clip_reward("ocr", tiny_root, max_new_tokens=3).read(frames)
    assert all(len(reward.processor.tokenizer(s, add_special_tokens=False).input_ids) <= 3 for s in short)
    assert all(f.startswith(s) for f, s in zip(full, short, strict=True)) and short != full  # greedy prefixes
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1, got 0"):
        testing.tiny_clip_reward("ocr", tiny_root, max_new_tokens=0)
