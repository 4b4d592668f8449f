"""Soft-TIFA (GenEval 2): answer words and means by hand, and the reward end to end on a tiny Qwen3-VL against
transformers' own one-question ``generate``. The reading against GenEval 2's code is in tests/golden/geneval2."""

import json

import pytest
import torch

import mmreward
from mmreward.errors import ConfigError
from mmreward.rewards.soft_tifa import answer_token_ids, answer_words, benchmark_score, combine, soft_score
from mmreward.tiny_models import tiny_vlm_backbone

DATA = [
    {
        "prompt": "three red apples",
        "vqa_list": [["How many apples are in the image?", "three"], ["Are the apples red?", "Yes"]],
    },
    {
        "prompt": "a cat under a table",
        "vqa_list": [
            ["Is there a cat in the image?", "Yes"],
            ["Is the cat under the table?", "Yes"],
            ["How many tables are in the image?", "eleven"],
        ],
    },
]


def test_answer_words_follow_the_question_kind():
    assert answer_words("How many cows are in the image?", "three") == [
        "three",
        "Three",
        " three",
        " Three",
        "3",
        " 3",
    ]
    assert answer_words("How many cows are in the image?", "eleven")[-2:] == ["other", " other"]
    assert answer_words("Are the cows plastic?", "Yes") == ["Yes", "yes", " yes", " Yes"]
    assert answer_words("how many cows?", "two") == ["Yes", "yes", " yes", " Yes"]  # "How many" only, as written


def test_means_by_hand():
    assert combine([0.5, 0.5, 1.0], "am") == pytest.approx(2 / 3)
    assert combine([0.25, 1.0], "gm") == pytest.approx(0.5)
    assert combine([0.9, 0.0, 0.8], "gm") == 0.0
    assert benchmark_score([[1.0, 0.25], [0.5]], "gm") == pytest.approx(100 * (0.5 + 0.5) / 2)
    probs = torch.tensor([0.1, 0.2, 0.7])
    assert soft_score(probs, [2, 2, 0]) == pytest.approx(1.5)  # a token listed twice counts twice
    with pytest.raises(ValueError, match="'gm' or 'am'"):
        combine([0.5], "median")
    with pytest.raises(ValueError, match="^a prompt needs at least one atom to be scored$"):
        combine([], "am")
    with pytest.raises(ValueError, match="^no prompts to average$"):
        benchmark_score([], "gm")


def test_the_question_file_skips_blank_lines_and_refuses_an_empty_one(tmp_path):
    from mmreward.rewards.soft_tifa import read_geneval2

    file = tmp_path / "data.jsonl"
    file.write_text("\n" + json.dumps(DATA[0]) + "\n\n" + json.dumps(DATA[1]) + "\n")
    table = read_geneval2(file)
    assert table == {row["prompt"]: [tuple(pair) for pair in row["vqa_list"]] for row in DATA}
    file.write_text("\n \n")
    with pytest.raises(ConfigError, match="holds no prompts"):
        read_geneval2(file)


@pytest.fixture(scope="module")
def setup(tiny_root, tmp_path_factory):
    data = tmp_path_factory.mktemp("geneval2") / "geneval2_data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in DATA))
    weights = tiny_vlm_backbone(tiny_root / "qwen3_vl-soft-tifa", "qwen3_vl")
    reward = mmreward.load_reward("geneval2", weights=str(weights), data=str(data), question_batch_size=3)
    return reward, weights


def one_question(weights, image, question, answer):
    """The reference's way: one conversation, ``generate`` one token with its scores, softmax, sum the words."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(weights)
    model = AutoModelForImageTextToText.from_pretrained(weights).eval()
    picture = Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy())
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": picture},
                {"type": "text", "text": f"{question} Answer in one word."},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    out = model.generate(**inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True)
    probs = torch.softmax(out.scores[0], dim=-1)[0]
    return soft_score(probs, answer_token_ids(processor.tokenizer, question, answer))


def test_batched_scores_match_one_question_at_a_time(setup, sample_images):
    reward, weights = setup
    images = [mmreward.media.load_image(p) for p in sample_images[:2]]
    images = [torch.nn.functional.interpolate(i[None], size=(56, 84), mode="area")[0] for i in images]
    prompts = [row["prompt"] for row in DATA]
    out = reward.score(prompts, images)
    assert not out.failed.any(), out.errors
    expected = [
        [one_question(weights, img, q, a) for q, a in row["vqa_list"]] for img, row in zip(images, DATA, strict=True)
    ]
    torch.testing.assert_close(
        out.dims["am"], torch.tensor([combine(s, "am") for s in expected]), rtol=1e-4, atol=1e-7
    )
    torch.testing.assert_close(
        out.dims["gm"], torch.tensor([combine(s, "gm") for s in expected]), rtol=1e-4, atol=1e-7
    )
    torch.testing.assert_close(out.scores, out.dims["gm"])  # the preset's aggregate


def test_a_video_scores_the_mean_of_its_frames(setup, sample_videos):
    reward, _ = setup
    frames, _ = mmreward.media.load_video(sample_videos["carphone_pristine"], num_frames=2)
    frames = torch.nn.functional.interpolate(frames, size=(56, 84), mode="area")
    video = reward.score([DATA[0]["prompt"]], [frames])
    each = reward.score([DATA[0]["prompt"]] * 2, list(frames))
    for name in ("am", "gm"):
        torch.testing.assert_close(video.dims[name], each.dims[name].mean().view(1), rtol=1e-5, atol=1e-8)
    assert each.dims["am"][0] != each.dims["am"][1]  # the frames differ, so the mean is not one frame's score


def test_prompts_outside_the_data_fail_alone(setup, sample_images):
    reward, _ = setup
    images = [str(p) for p in sample_images[:2]]
    out = reward.score(["three red apples", "a prompt GenEval 2 never asked"], images)
    assert out.failed.tolist() == [False, True] and "is not a GenEval 2 prompt" in out.errors[1]
    assert torch.isnan(out.scores[1]) and not torch.isnan(out.scores[0])


def test_bad_options_and_data_are_refused(setup, tmp_path):
    _, weights = setup
    with pytest.raises(ConfigError, match="aggregate must be 'gm'"):
        mmreward.load_reward("geneval2", weights=str(weights), data=str(tmp_path / "x.jsonl"), aggregate="mean")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    with pytest.raises(ConfigError, match="line 1 of GenEval 2 question file"):
        mmreward.load_reward("geneval2", weights=str(weights), data=str(bad))
