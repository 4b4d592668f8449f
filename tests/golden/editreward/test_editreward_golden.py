"""EditReward scores exactly as EditReward's own model class and inferencer score the same checkpoint.

golden.json holds what ``EditRewardVLInferencer.reward`` (transformers 4.57, EditReward's pin) gave for a tiny random
full-state-dict checkpoint (model.safetensors on base/, the released ``ranknet_multi_head`` layout) on three
(source, edited) pairs of real sample photos, fused with ``mean`` (the released setting) and ``min``, and each
head's ``(mu, log sigma)``; make_golden.py regenerates it.
"""

import json
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing
from mmreward.errors import ConfigError

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
TOLERANCE = 1e-4


def load(**overrides):
    kwargs = {"weights": str(HERE), "base_model": str(HERE / "base"), "template": "ours", "dtype": "float32"}
    return mmreward.load_reward("editreward", **{**kwargs, **overrides})


@pytest.fixture(scope="module")
def reward():
    return load()


def pairs():
    sources = [str(p) for p in testing.sample_images(tuple(s for s, _ in GOLDEN["pairs"]))]
    edited = [str(p) for p in testing.sample_images(tuple(e for _, e in GOLDEN["pairs"]))]
    return sources, edited


def test_scores_and_heads_match_editreward(reward):
    sources, edited = pairs()
    out = reward.score(GOLDEN["prompts"], edited, sources=sources)
    assert not out.failed.any(), out.errors
    expected = torch.tensor([row[0] for row in GOLDEN["fused_mean"]])
    torch.testing.assert_close(out.scores, expected, rtol=0, atol=TOLERANCE)
    for head, rows in GOLDEN["per_head"].items():
        torch.testing.assert_close(out.dims[head], torch.tensor([r[0] for r in rows]), rtol=0, atol=TOLERANCE)
    # The source is shown first: swapping the two images moves the scores far beyond the tolerance (by up to 3.2).
    swapped = reward.score(GOLDEN["prompts"], sources, sources=edited).scores
    assert (swapped - expected).abs().max() > 0.5


def test_both_outputs_of_each_head_and_min_fusion_match(reward):
    sources, edited = pairs()
    prepared = [
        (reward.prepare(reward.load_media(e)), reward.prepare(reward.load_media(s)))
        for s, e in zip(sources, edited, strict=True)
    ]
    with torch.inference_mode():
        for i, head in enumerate(("instruction_following", "visual_quality")):
            raw = reward.head_outputs(i, reward.encode(head, GOLDEN["prompts"], prepared))  # (B, 2): mu, log sigma
            torch.testing.assert_close(raw, torch.tensor(GOLDEN["per_head"][head]), rtol=0, atol=TOLERANCE)
    reward.fusion = "min"
    try:
        scores, _ = reward.score_prepared(GOLDEN["prompts"], prepared)
    finally:
        reward.fusion = "mean"
    torch.testing.assert_close(scores, torch.tensor([r[0] for r in GOLDEN["fused_min"]]), rtol=0, atol=TOLERANCE)


def test_sources_are_required_and_settings_refused_with_the_fix(reward):
    sources, edited = pairs()
    with pytest.raises(ConfigError, match="sources="):
        reward.score(GOLDEN["prompts"], edited)
    out = reward.score(["x"], [torch.rand(2, 3, 32, 32)], sources=[sources[0]])
    assert out.failed.all() and "scores images; got a video" in out.errors[0]
    with pytest.raises(ConfigError, match="fusion must be one of"):
        load(fusion="sum")
    with pytest.raises(ConfigError, match="needs weights="):
        load(weights=None)


def test_reference_prompts_join_each_heads_parts_from_their_pinned_files(tmp_path):
    import hashlib

    from mmreward.rewards.vlm.edit_reward import read_head_prompts

    files = {
        "pkg/prompts.py": 'FOLLOW = """Follow {text_prompt} {{exactly}}"""\nLOOK = "Look at {text_prompt}"\n',
        "pkg/collate.py": 'import os\nline = "\\nRating: <|Reward|>"\n',
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)

    def part(path, expression, **extra):
        digest = hashlib.sha256(files[path].encode()).hexdigest()
        pin = {"repository": "someone/edits", "commit": "a" * 40, "path": path, "sha256": digest}
        return {**pin, "expression": expression, **extra}

    spec = {
        "instruction_following": [
            part("pkg/prompts.py", "FOLLOW.format(text_prompt=prompt)"),
            part("pkg/collate.py", "line", caption=None),
        ],
        "visual_quality": [
            part("pkg/prompts.py", "LOOK.format(text_prompt=prompt)"),
            part("pkg/collate.py", "line", caption=None),
        ],
    }
    texts = read_head_prompts("reference", spec, tmp_path)
    assert texts["instruction_following"].format(prompt="the cat") == "Follow the cat {exactly}\nRating: <|Reward|>"
    assert texts["visual_quality"] == "Look at {prompt}\nRating: <|Reward|>"
    with pytest.raises(ConfigError, match="no part shows the instruction"):
        read_head_prompts(
            "reference", {**spec, "visual_quality": [part("pkg/collate.py", "line", caption=None)]}, tmp_path
        )
    with pytest.raises(ConfigError, match="must map each head"):
        read_head_prompts("reference", {"instruction_following": spec["instruction_following"]}, tmp_path)


def test_tiny_stand_in_loads_through_the_preset_and_scores_edits(tiny_root):
    reward = mmreward.load_reward(str(testing.tiny_vlm_preset("editreward", tiny_root, backbone="qwen2_5_vl")))
    image = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    out = reward.score(["make it red", "make it red"], [image, image.flip(-1)], sources=[image.flip(-1), image])
    assert not out.failed.any() and torch.isfinite(out.scores).all()
    assert out.scores[0] != out.scores[1]  # the order of source and edit matters
    torch.testing.assert_close(out.scores, (out.dims["instruction_following"] + out.dims["visual_quality"]) / 2)


def test_other_base_families_are_refused(tiny_root):
    from mmreward.tiny_models import tiny_vlm_backbone

    base = tiny_vlm_backbone(tiny_root / "qwen2_vl-base", "qwen2_vl")
    with pytest.raises(ConfigError, match="is a 'qwen2_vl' model; EditReward is built here on Qwen2.5-VL"):
        load(base_model=str(base))
