"""HPSv3 scores exactly as the hpsv3 package's own inferencer scores the same checkpoint.

golden.json holds what ``HPSv3RewardInferencer.reward`` (hpsv3 1.0.0, transformers 4.45) gave for a tiny random
full-state-dict checkpoint (HPSv3.safetensors on base/) on three real sample photos; make_golden.py regenerates it.
"""

import json
from pathlib import Path

import pytest
import torch

import mmreward
from mmreward import testing

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden.json").read_text())
TOLERANCE = 1e-4


def load(**overrides):
    kwargs = {
        "weights": str(HERE),
        "base_model": str(HERE / "base"),
        "template": None,
        "template_file": str(HERE / "template.yaml"),
        "device": "cpu",
        "dtype": "float32",
        **overrides,
    }
    return mmreward.load_reward("hpsv3", **kwargs)


@pytest.fixture(scope="module")
def reward():
    return load()


def images():
    return [str(path) for path in testing.sample_images(tuple(GOLDEN["images"]))]


def test_scores_match_hpsv3(reward):
    out = reward.score(GOLDEN["prompts"], images())
    assert not out.failed.any(), out.errors
    expected = torch.tensor([row[0] for row in GOLDEN["batched"]])
    torch.testing.assert_close(out.scores, expected, rtol=0, atol=TOLERANCE)


def test_both_head_outputs_match_hpsv3(reward):
    prepared = [reward.prepare(reward.load_media(path)) for path in images()]
    with torch.inference_mode():
        raw = reward.forward_raw(reward._encode(GOLDEN["prompts"], prepared))  # (B, 2): mu and the second output
    torch.testing.assert_close(raw, torch.tensor(GOLDEN["batched"]), rtol=0, atol=TOLERANCE)


def test_layout_defaults_are_the_references_and_the_alternatives_one_option_away(reward):
    """The full-file layout loads with sequential positions and HPSv3's PIL resize; M-RoPE or the processor's
    resize are one option away and move the scores well beyond the golden tolerance (by up to 0.4 and 1.2e-3)."""
    assert (reward.positions, reward.image_resize) == ("sequential", "pil")
    expected = torch.tensor([row[0] for row in GOLDEN["batched"]])
    for option in ({"positions": "mrope"}, {"image_resize": "processor"}):
        scores = load(**option).score(GOLDEN["prompts"], images()).scores
        assert (scores - expected).abs().max() > 5 * TOLERANCE, option
