"""load_reward: presets, files, saved directories, module:Class; clear errors for everything else."""

from __future__ import annotations

import pytest
import torch
import yaml

import mmreward
from mmreward.errors import ConfigError, UnknownRewardError, WeightsNotFoundError
from mmreward.rewards.base import RewardModel
from mmreward.rewards.compressibility import JpegCompressibility, jpeg_size_kb
from mmreward.rewards.registry import SAVED_REWARD_FILE


class Brightness(RewardModel):
    """Mean pixel value; a reward class of "the user's own", loaded by its dotted path."""

    uses_prompt = False

    def score_prepared(self, prompts, inputs):
        return torch.stack([x.mean() for x in inputs]), {}


def test_unknown_name_lists_the_registered_rewards():
    with pytest.raises(
        UnknownRewardError, match=r"unknown reward 'pikscore'. Registered rewards: clip-h14, clip-score, "
    ):
        mmreward.load_reward("pikscore")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['wieghts'\] for reward 'pickscore'.*'weights'"):
        mmreward.load_reward("pickscore", wieghts="/x")


def test_dotted_path_and_preset_file_and_saved_directory(tmp_path, sample_images):
    reward = mmreward.load_reward(f"{__name__}:Brightness")
    assert reward.name.endswith(":Brightness")
    assert reward.score(["x"], [torch.full((3, 2, 2), 0.25)]).scores.item() == 0.25

    preset = tmp_path / "mine.yaml"
    preset.write_text(yaml.safe_dump({"type": "jpeg-compressibility", "batch_size": 3}))
    loaded = mmreward.load_reward(str(preset))
    assert isinstance(loaded, JpegCompressibility) and loaded.batch_size == 3 and loaded.name == "mine"

    saved = tmp_path / "run"
    saved.mkdir()
    (saved / SAVED_REWARD_FILE).write_text(yaml.safe_dump({"type": "jpeg-incompressibility"}))
    score = mmreward.load_reward(str(saved)).score([""], [sample_images[0]]).scores.item()
    assert score == pytest.approx(jpeg_size_kb(mmreward.media.load_image(sample_images[0])), rel=1e-6)


def test_jpeg_rewards_are_signed_sizes(sample_images):
    image = mmreward.media.load_image(sample_images[0])
    size = jpeg_size_kb(image)
    assert 10 < size < 500
    assert mmreward.load_reward("jpeg-compressibility").score([""], [image]).scores.item() == pytest.approx(-size)
    assert mmreward.load_reward("jpeg-incompressibility").score([""], [image]).scores.item() == pytest.approx(size)


@pytest.mark.parametrize(
    ("name", "mentions"),
    [
        ("pickscore", "yuvalkirstain/PickScore_v1"),
        ("hpsv2.1", "xswu/HPSv2' (file 'HPS_v2.1_compressed.pt')"),
        ("laion-aesthetic", "openai/clip-vit-large-patch14"),
        ("imagereward", "THUDM/ImageReward' (file 'ImageReward.pt')"),
        ("clip-score", "ViT-B-32/openai"),
    ],
)
def test_missing_weights_offline_name_the_id_cache_and_fix(name, mentions):
    with pytest.raises(WeightsNotFoundError) as info:
        mmreward.load_reward(name)
    message = str(info.value)
    assert mentions in message
    assert "cache" in message and ("local" in message or "HF_HOME" in message)


def test_missing_local_weights_path():
    with pytest.raises(WeightsNotFoundError, match="no such local file or directory"):
        mmreward.load_reward("hpsv2", weights="/nonexistent/HPS_v2_compressed.pt")
