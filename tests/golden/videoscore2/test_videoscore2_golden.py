"""VideoScore2's reading of an answer, reproduced by mmreward on canned answers and step scores.

golden.json holds what the authors' inference script (vs2_inference.py; make_golden.py) read from the canned answers
and per-step scores of cases.py: the three integers, the step that wrote each, and the soft scores. mmreward's
reader gets the same tokens and scores; the reward on a tiny random Qwen2.5-VL checks that the scores it reads are
the ones of the steps that wrote each token.
"""

import dataclasses
import inspect
import json
import math
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError, MediaError, MMRewardError
from mmreward.rewards.registry import find_preset
from mmreward.rewards.vlm.heads import qwen_smart_resize
from mmreward.rewards.vlm.templates import TextPart
from mmreward.rewards.vlm.videoscore2 import (
    LABELS,
    VideoScore2Reward,
    digit_token_ids,
    hard_scores,
    read_answer,
    score_step,
    soft_score,
)
from tests.golden.videoscore2.cases import CASES, step_scores, tokenizer, tokens

LABEL_LIST = (
    "'visual quality: <score>', 'text-to-video alignment: <score>', 'physical/common-sense consistency: <score>'"
)
GOLDEN = json.loads((Path(__file__).resolve().parent / "golden.json").read_text())


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.mark.parametrize("name", list(CASES))
def test_reads_each_answer_as_the_reference(tok, name):
    golden = GOLDEN[name]
    ids = tokens(tok, name)
    scores = step_scores(tok, name, golden["seed"])
    text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert list(hard_scores(text) or (None, None, None)) == golden["hard"]

    def decode(chunk):
        return tok.decode(chunk, skip_special_tokens=False)

    assert [score_step(label, ids, decode) for _, label in LABELS] == golden["steps"]
    soft, answer, why = read_answer(ids, scores, tok, digit_token_ids(tok))
    assert answer == text
    if golden["soft"][0] is None:
        assert soft is None and why
    else:
        assert why is None
        assert [soft[name] for name, _ in LABELS] == pytest.approx(golden["soft"], abs=1e-4)


def test_cases_cover_the_quirks():
    # The restated label reads the next label's digit; a top-k of one leaves the written digits exact.
    assert (
        GOLDEN["label restated in the reasoning"]["steps"][0] == GOLDEN["label restated in the reasoning"]["steps"][1]
    )
    assert GOLDEN["top-k of one"]["soft"] == [3.0, 3.0, 4.0]
    assert GOLDEN["flat digits"]["soft"][2] < 1.0  # a 1 written with low confidence falls below the scale


def test_tiny_reward_reads_the_scores_of_the_steps_that_wrote_each_token(tiny_root, sample_videos):
    reward = mmreward.load_reward(
        str(testing.tiny_vlm_preset("videoscore2", tiny_root, backbone="qwen2_5_vl")), temperature=0
    )
    assert isinstance(reward, VideoScore2Reward) and reward.template.describe() == "ours (videoscore2)"
    videos = [torch.rand(6, 3, 40, 56, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    prepared = [reward.prepare(reward.load_media(v)) for v in videos]
    assert prepared[0].dtype == torch.uint8 and prepared[0].shape[-2:] == (
        56,
        84,
    )  # 40 x 56 scaled up to min pixels, sides multiples of 28
    batch = reward._encode(["a red fox", "a cat in the snow"], prepared)
    assert batch["video_grid_thw"][:, 0].tolist() == [3, 3]  # 6 frames, 2 per temporal patch: a video, not images
    assert batch["second_per_grid_ts"].tolist() == [1.0, 1.0]  # told 2 fps, as the script tells the processor
    tokens_, scores = reward._generate(batch)
    for ids, steps in zip(tokens_, scores, strict=True):
        assert steps.shape[0] == len(ids) and steps.argmax(-1).tolist() == ids  # greedy: each token its step's best
    out = reward.score(["a red fox", "a cat"], videos)
    assert out.failed.all() and torch.isnan(out.scores).all()
    assert all("visual quality: <score>" in e and "max_new_tokens" in e for e in out.errors)
    assert out.rationales is not None and all(r for r in out.rationales)
    # A 4.0 s clip at 29.97 fps: 2 fps gives 8 frames (qwen-vl-utils' rule), read from the file.
    assert reward.load_media(sample_videos["carphone_pristine"]).shape[0] == 8
    from_file = reward.score(["a phone call"], [sample_videos["carphone_pristine"]])
    assert from_file.failed.all() and "visual quality: <score>" in from_file.errors[0]
    image = reward.score(["a red fox"], [torch.rand(3, 32, 32)])
    assert image.failed.all() and "scores videos; got an image" in image.errors[0]


def test_each_video_gets_the_scores_of_its_own_answer_across_chunks_failures_and_the_context(tiny_root, monkeypatch):
    # The model's answers are replaced by canned ones keyed by the prompt, each step's scores keeping only the written
    # token (a top-k of one): the soft scores are the written digits exactly, so every number can be checked by hand.
    reward = mmreward.load_reward(
        str(testing.tiny_vlm_preset("videoscore2", tiny_root, backbone="qwen2_5_vl")), temperature=0, batch_size=2
    )
    tok, end = reward.tokenizer, reward.tokenizer.convert_tokens_to_ids("<|im_end|>")
    context = int(reward.model.config.get_text_config().max_position_embeddings)
    reward.max_new_tokens = 200  # more than any canned answer takes
    answers = {
        "four three two": "visual quality: 4; text-to-video alignment: 3, physical/common-sense consistency: 2",
        "five five one": "Ok.\nvisual quality: 5;\ntext-to-video alignment: 5,\nphysical/common-sense consistency: 1",
        # Longer than the 200 characters an error quotes; spaces before punctuation are kept as written.
        "no scores": "The video shows a fox , running . " * 8,
        "one two three": "visual quality: 1; text-to-video alignment: 2, physical/common-sense consistency: 3",
    }

    def encode(prompts, frames):
        # The prompt "too long" fills the model's context: its chunk cannot be answered.
        length = context if "too long" in prompts else context - reward.max_new_tokens  # the rest just fit
        return {"input_ids": torch.zeros(len(prompts), length, dtype=torch.long), "prompts": prompts}

    def generate(batch):
        tokens, scores = [], []
        for prompt in batch["prompts"]:
            ids = tok.encode(answers[prompt], add_special_tokens=False) + [end]
            steps = torch.full((len(ids), len(tok)), float("-inf"))
            steps[torch.arange(len(ids)), ids] = 0.0
            tokens.append(ids)
            scores.append(steps)
        return tokens, scores

    monkeypatch.setattr(reward, "_encode", encode)
    monkeypatch.setattr(reward, "_generate", generate)
    prompts = ["four three two", "failed to load", "no scores", "too long", "x", "five five one", "one two three"]
    # Item 1 failed before scoring; the others go in chunks of two: [0, 2], [3, 4], [5, 6].
    errors = [None, "unreadable file", None, None, None, None, None]
    out = reward.score_prepared_batch(prompts, [torch.zeros(1)] * len(prompts), errors)
    assert out.failed.tolist() == [False, True, True, True, True, False, False]
    assert out.errors[1] == "unreadable file"
    assert out.errors[2] == f"the answer does not give all of {LABEL_LIST}: {answers['no scores'][:200]!r}"
    assert (
        out.errors[3]
        == out.errors[4]
        == (
            f"the prompt with its video is up to {context} tokens (plus {reward.max_new_tokens} to write), more than "
            f"the model's context of {context}; lower video_fps or frame_max_pixels"
        )
    )
    assert out.scores[[0, 5, 6]].tolist() == pytest.approx([3.0, 11 / 3, 2.0])
    assert torch.isnan(out.scores[1:5]).all()
    written = {"visual_quality": [4, 5, 1], "text_alignment": [3, 5, 2], "physical_consistency": [2, 1, 3]}
    for name, values in written.items():
        assert out.dims[name][[0, 5, 6]].tolist() == values and torch.isnan(out.dims[name][1:5]).all()
    assert out.rationales == [answers["four three two"], None, answers["no scores"], None, None] + [
        answers["five five one"],
        answers["one two three"],
    ]
    scores, dims = reward.score_prepared(prompts[:1], [torch.zeros(1)])
    assert scores.tolist() == [3.0] and dims["physical_consistency"].tolist() == [2.0]
    # An answer cut at the token budget says so.
    reward.max_new_tokens = 3
    cut = reward.score_prepared_batch(["no scores"], [torch.zeros(1)], [None])
    assert cut.errors[0] == (
        f"the answer does not give all of {LABEL_LIST} (the answer was cut at max_new_tokens; raise it): "
        f"{answers['no scores'][:200]!r}"
    )
    # Nothing answered: no rationales at all.
    assert reward.score_prepared_batch(["x"], [torch.zeros(1)], ["unreadable file"]).rationales is None


def test_soft_score_by_hand():
    # Digits 1..5 at token ids 0..4 of a 6-token vocabulary; token 5 is not a digit.
    scores = torch.tensor([0.0, math.log(2.0), 0.0, 0.0, 0.0, 10.0])
    assert soft_score(scores, [0, 1, 2, 3, 4]) == 0.6667  # 2 * (2 / 6), rounded to 4 decimals
    # Every digit filtered out (-inf) at that step: no confidence in any digit.
    filtered = torch.tensor([float("-inf")] * 5 + [0.0])
    assert soft_score(filtered, [0, 1, 2, 3, 4]) == 0.0


def test_a_digit_merged_into_a_longer_token_has_no_step():
    pieces = ["visual quality: ", "4x"]  # the digit is only ever decoded together with the x

    def decode(ids):
        return "".join(pieces[i] for i in ids)

    assert score_step("visual quality:", [0, 1], decode) == -1


def test_defaults_are_the_authors_recipe():
    defaults = {k: p.default for k, p in inspect.signature(VideoScore2Reward.__init__).parameters.items()}
    assert defaults["template"] == "reference" and defaults["template_name"] == "videoscore2"
    assert (defaults["video_fps"], defaults["max_new_tokens"], defaults["temperature"]) == (2.0, 1024, 0.7)
    assert (defaults["frame_min_pixels"], defaults["frame_max_pixels"]) == (128 * 28 * 28, 768 * 28 * 28)
    assert defaults["video_total_pixels"] == int(128000 * 28 * 28 * 0.9)
    assert defaults["generation_config"] == "checkpoint"


def test_frames_are_sampled_resized_and_quantized_as_qwen_vl_utils(tiny_root):
    reward = mmreward.load_reward(
        str(testing.tiny_vlm_preset("videoscore2", tiny_root, backbone="qwen2_5_vl")), input_video_fps=8.0
    )
    assert reward.frame_factor == 28 and reward.weights_id.startswith(str(tiny_root))
    # The processor leaves the frames at the size prepare() gave them (28 x 28 here: 2 x 2 patches of 14).
    small = torch.zeros(4, 3, 28, 28, dtype=torch.uint8)
    assert reward._encode(["a red fox"], [small])["video_grid_thw"].tolist() == [[2, 2, 2]]
    # In-memory video at a known rate: 16 frames at 8 fps are 2 s, sampled at 2 fps -> 4 frames, uniformly spread.
    video = torch.arange(16.0).div(15).view(16, 1, 1, 1).expand(16, 3, 8, 8)
    assert reward.load_media(video)[:, 0, 0, 0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    reward.input_video_fps = None
    assert reward.load_media(video).shape[0] == 16  # taken as already sampled
    with pytest.raises(MediaError, match="^VideoScore2 scores videos; got an image$"):
        reward.load_media(torch.rand(3, 8, 8))
    with pytest.raises(MediaError, match=r"^VideoScore2 scores videos; got a tensor of shape \(3, 8, 8\)$"):
        reward.prepare(torch.rand(3, 8, 8))
    with pytest.raises(MediaError, match=r"^video has 1 frame\(s\); at least 2 are needed$"):
        reward.prepare(torch.rand(1, 3, 56, 56))
    # The user turn: the video, then the template's text about this item's prompt; a system message goes first.
    frames = reward.prepare(torch.rand(4, 3, 56, 56))
    text = "".join(p.text for p in reward.section.render("a red fox") if isinstance(p, TextPart))
    assert "a red fox" in text
    for system in (None, "Be brief."):
        reward.section = dataclasses.replace(reward.section, system=system)
        batch = reward._encode(["a red fox", "a cat in the snow"], [frames, frames])
        decoded = reward.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
        user = decoded.index("<|im_start|>user\n<|vision_start|><|video_pad|>")
        assert decoded.endswith("<|vision_end|>" + text + "<|im_end|>\n<|im_start|>assistant\n")
        if system:
            assert decoded[:user].endswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "a cat in the snow" in reward.tokenizer.decode(batch["input_ids"][1])
    # Out-of-range values are clamped, then scaled by 255 and rounded.
    levels = torch.tensor([-0.5, 0.5, 1.5]).view(3, 1, 1, 1).expand(3, 3, 56, 56)
    assert reward.prepare(levels)[:, 0, 0, 0].tolist() == [0, 128, 255]
    # The per-frame bound: video_total_pixels / frames * 2 (4 frames of 224 x 224 -> 84 x 84) ...
    f = 28 * 28
    reward.frame_min_pixels, reward.frame_max_pixels, reward.video_total_pixels = 4 * f, 64 * f, 24 * f
    assert reward.prepare(torch.rand(4, 3, 224, 224)).shape == (4, 3, 84, 84)
    assert qwen_smart_resize(224, 224, 28, 4 * f, 12 * f) == (84, 84)
    # ... but never below 1.05 x frame_min_pixels (4 frames of 112 x 112 -> 84 x 84).
    reward.frame_min_pixels, reward.video_total_pixels = 9 * f, 4 * f
    assert reward.prepare(torch.rand(4, 3, 112, 112)).shape == (4, 3, 84, 84)
    # Antialiased bicubic, as qwen-vl-utils resizes frames.
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    checker = (torch.arange(224).view(1, -1) // 2 + torch.arange(224).view(-1, 1) // 3) % 2  # (224, 224)
    frames = checker.float().expand(2, 3, 224, 224)
    uint8 = frames.mul(255).round().to(torch.uint8)
    expected = resize(uint8, [84, 84], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert not torch.equal(expected, resize(uint8, [84, 84], interpolation=InterpolationMode.BICUBIC, antialias=False))
    assert not torch.equal(expected, resize(uint8, [84, 84], antialias=True))  # bilinear
    reward.frame_min_pixels, reward.video_total_pixels = 4 * f, 12 * f  # 2 frames: bound 12 f -> 84 x 84
    assert torch.equal(reward.prepare(frames), expected)


def test_generation_settings_follow_the_temperature_and_the_checkpoint(tiny_root, monkeypatch):
    # The smallest settings accepted (they do not matter below, where the model is replaced).
    smallest = dict(video_fps=0.5, frame_min_pixels=1, frame_max_pixels=1, max_new_tokens=1, generation_config="plain")
    reward = mmreward.load_reward(
        str(testing.tiny_vlm_preset("videoscore2", tiny_root, backbone="qwen2_5_vl")), temperature=0.7, **smallest
    )
    assert reward.generation_config == "plain"
    reward.model.generation_config.top_k = 7
    reward.max_new_tokens = 17
    end = reward.model.config.get_text_config().eos_token_id
    end = end[0] if isinstance(end, list) else end
    seen = []

    def generate(input_ids, generation_config, **_):
        seen.append(generation_config)
        new = torch.tensor([[5, 6, end, 7]] * input_ids.shape[0])
        steps = tuple(torch.full((input_ids.shape[0], 11), float(k)) for k in range(4))
        return type("Out", (), {"sequences": torch.cat([input_ids, new], 1), "scores": steps})()

    monkeypatch.setattr(reward.model, "generate", generate)
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long)}
    reward._generate(batch)
    assert seen[-1].top_k != 7 and seen[-1].do_sample and seen[-1].temperature == 0.7  # "plain", as loaded
    reward.generation_config = "checkpoint"
    tokens, scores = reward._generate(batch)
    assert tokens == [[5, 6, end]] * 2 and [s[:, 0].tolist() for s in scores] == [[0.0, 1.0, 2.0]] * 2
    config = seen[-1]
    assert (config.do_sample, config.temperature, config.top_k, config.max_new_tokens) == (True, 0.7, 7, 17)
    assert config.output_scores and config.return_dict_in_generate
    # The checkpoint's generation config names the end tokens (a list here), else the model's text config does.
    reward.model.generation_config.eos_token_id = [6, 9]
    assert reward._generate(batch)[0] == [[5, 6]] * 2
    reward.generation_config = "plain"
    assert reward._generate(batch)[0] == [[5, 6, end]] * 2
    reward.generation_config = "checkpoint"
    reward.model.generation_config.eos_token_id = end
    reward.generation_config, reward.temperature = "checkpoint", 0.0
    reward._generate(batch)
    config = seen[-1]
    assert (config.do_sample, config.temperature, config.top_k, config.top_p) == (False, None, None, None)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"video_fps": 0}, "video_fps must be > 0, got 0"),
        ({"video_fps": -1.0}, "video_fps must be > 0, got -1.0"),
        ({"frame_min_pixels": 0}, "need 0 < frame_min_pixels <= frame_max_pixels, got 0, 602112"),
        ({"frame_min_pixels": 9, "frame_max_pixels": 8}, "need 0 < frame_min_pixels <= frame_max_pixels, got 9, 8"),
        ({"max_new_tokens": 0}, "need max_new_tokens >= 1 and temperature >= 0, got 0, 0.7"),
        ({"temperature": -0.1}, "need max_new_tokens >= 1 and temperature >= 0, got 1024, -0.1"),
        ({"generation_config": "greedy"}, "generation_config must be 'checkpoint' or 'plain', got 'greedy'"),
    ],
)
def test_bad_settings_are_refused_before_loading(setting, message):
    with pytest.raises(ConfigError) as err:
        VideoScore2Reward("no/such-checkpoint", **setting)
    assert str(err.value) == message


def test_a_missing_checkpoint_is_named_with_the_fix(tmp_path):
    with pytest.raises(MMRewardError) as err:
        VideoScore2Reward(str(tmp_path / "missing"), template="ours")
    message = str(err.value)
    assert message.startswith(f"VideoScore2 checkpoint weights '{tmp_path / 'missing'}' are not available")
    assert message.endswith("or point at local weights: load_reward('videoscore2', weights=...)")


def test_template_settings_reach_the_template(tmp_path):
    """Each template setting is the one read: the default is the authors' prompt (which needs where it is published),
    a template file, a reference prompt and a local clone are each used (their errors prove it)."""
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="^template='reference' needs reference_prompt="):
        VideoScore2Reward(missing)
    with pytest.raises(ConfigError, match="^cannot read template '/nonexistent/t.yaml'"):
        VideoScore2Reward(missing, template="ours", template_file="/nonexistent/t.yaml")
    with pytest.raises(
        ConfigError, match=r"^reference_prompt for template 'videoscore2' \[video\] needs 'expression'"
    ):
        VideoScore2Reward(missing, reference_prompt={"video": {"repository": "TIGER-AI-Lab/VideoScore2"}})
    published = find_preset("videoscore2").kwargs["reference_prompt"]
    clone = tmp_path / "clone"
    with pytest.raises(MMRewardError, match=f"^template_source_dir '{clone}' has no file 'vs2_inference.py'"):
        VideoScore2Reward(missing, reference_prompt=published, template_source_dir=str(clone))


def test_a_tokenizer_that_splits_a_digit_is_refused():
    class SplitsDigits:
        def encode(self, text, add_special_tokens):
            return [1, 2] if text == "3" else [int(text)]

    with pytest.raises(ConfigError) as err:
        digit_token_ids(SplitsDigits())
    assert (
        str(err.value)
        == "the tokenizer does not spell each score digit 1..5 as one token: [[1], [2], [1, 2], [4], [5]]"
    )
