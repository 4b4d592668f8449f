"""Continuing reward-model training from the released VideoReward (both VideoAlign layouts) and HPSv3 checkpoints
(model.init_from), on the tiny golden checkpoints: untrained, the saved directory scores as the released one; a
few steps on, it reloads to the trained model's scores."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mmreward
from align.train_reward import TrainRewardConfig
from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.reward_training.head_task import init_arguments, save_head_dir, scorer_state
from mmreward.reward_training.pair_loading import pair_loader, read_training_pairs
from mmreward.reward_training.tasks import build_task
from mmreward.reward_training.trainable import TokenRowMask, make_trainable
from mmreward.rewards.registry import PRESET_DIR
from mmreward.train.config import load_config

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
VIDEOREWARD = GOLDEN / "videoreward"
HPSV3 = GOLDEN / "hpsv3"
VIDEO_GOLDEN = json.loads((VIDEOREWARD / "golden.json").read_text())
IMAGE_GOLDEN = json.loads((HPSV3 / "golden.json").read_text())
# The golden VideoReward scores were taken with these frame bounds (see tests/golden/videoreward).
FRAME_PIXELS = ("data.frame_min_pixels=3136", "data.frame_max_pixels=12544")
SMALL_IMAGES = ("data.image_min_pixels=3136", "data.image_max_pixels=3136")
FAST = ("lora.rank=4", "lora.alpha=8", "lora.dropout=0.0", "train.batch_size=4") + tuple(
    f"train.{lr}=0.01" for lr in ("lr", "vision_lr", "merger_lr", "token_lr", "head_lr")
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return testing.synthetic_preference_pairs(tmp_path_factory.mktemp("pairs"), pairs=16, images=8)


@pytest.fixture(scope="module")
def video_template(tmp_path_factory):
    """The golden VideoReward template with an image section (the same questions), so it trains on image pairs."""
    template = yaml.safe_load((VIDEOREWARD / "template.yaml").read_text())
    template["image"] = dict(template["video"])
    path = tmp_path_factory.mktemp("template") / "videoreward.yaml"
    path.write_text(yaml.safe_dump(template))
    return path


@pytest.fixture(scope="module")
def hpsv3_preset(tmp_path_factory):
    """The shipped hpsv3 preset pointed at the tiny golden checkpoint and its template."""
    preset = yaml.safe_load((PRESET_DIR / "hpsv3.yaml").read_text())
    for key in ("template", "template_name", "reference_prompt"):
        preset.pop(key)
    preset.update(weights=str(HPSV3), base_model=str(HPSV3 / "base"), template_file=str(HPSV3 / "template.yaml"))
    path = tmp_path_factory.mktemp("preset") / "hpsv3-golden.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def videos():
    found = testing.sample_videos()
    return [str(found[name]) for name in VIDEO_GOLDEN["videos"]]


def images():
    return [str(path) for path in testing.sample_images(tuple(IMAGE_GOLDEN["images"]))]


def continue_training(out: Path, pairs: Path, steps: int, *overrides: str):
    """The head task continued from model.init_from, ``steps`` optimizer steps on, saved to ``out`` as the
    training program saves it (the checkpoint's stats kept); returns the task, its model in eval mode."""
    args = [f"output_dir={out}", f"data.train={pairs}", *FAST, *overrides]
    cfg = load_config(TrainRewardConfig, None, args)
    task = build_task(cfg, torch.device("cpu"), True, lambda: None)
    optimizer = torch.optim.AdamW(make_trainable(task, cfg))
    dims = list(cfg.model.dims)
    train, _ = read_training_pairs(cfg.data, dims, 0)
    loader = pair_loader(train, task, dims, cfg.train.margin, cfg.train.batch_size, 0, None, False)
    for _, batch in zip(range(steps), loader, strict=False):
        loss, _ = task.loss(task.module, batch)
        loss.backward()
        TokenRowMask(task.model, task.token_ids).apply()
        optimizer.step()
        optimizer.zero_grad()
    task.module.eval()
    state, trainable = scorer_state(task.module, True)
    save_head_dir(cfg, task.reward, state, trainable, task.options, steps, dict(task.reward.reference_stats))
    return task


def released_videoreward(weights: Path):
    return mmreward.load_reward(
        "videoreward",
        weights=str(weights),
        base_model=str(VIDEOREWARD / "base"),
        template=None,
        template_file=str(VIDEOREWARD / "template.yaml"),
        device="cpu",
        frame_min_pixels=3136,
        frame_max_pixels=12544,
    )


def assert_same_scores(got, expected, rtol=0.0):
    """Equal to 1e-5 (plus ``rtol``: a reloaded model has its new LoRA merged into the float32 weights, which
    rounds differently from the unmerged in-memory model by about 1e-6 of the score)."""
    assert not got.failed.any(), got.errors
    torch.testing.assert_close(got.scores, expected.scores, rtol=rtol, atol=1e-5)
    assert set(got.dims) == set(expected.dims)
    for dim in expected.dims:
        torch.testing.assert_close(got.dims[dim], expected.dims[dim], rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("layout", ["reward", "reward_full"])
def test_untrained_videoreward_saves_as_released(tmp_path, pairs, video_template, layout):
    """Zero steps from either VideoAlign layout (LoRA adapter + non-LoRA pickle, or model.pth): the saved directory
    loads on the base alone and scores the golden clips as the released checkpoint does (and as VideoAlign did);
    it holds the language-model weights the released LoRA changed, in safetensors, and nothing the base already
    has."""
    out = tmp_path / "out"
    init = (f"model.init_from={VIDEOREWARD / layout}", f"model.base={VIDEOREWARD / 'base'}")
    continue_training(out, pairs, 0, *init, f"model.template_file={video_template}", *FRAME_PIXELS, *SMALL_IMAGES)
    saved = mmreward.load_reward(str(out), device="cpu")
    assert (saved.positions, saved.frame_resize) == ("sequential", "videoalign")
    assert saved.reference_stats == released_videoreward(VIDEOREWARD / layout).reference_stats
    got = saved.score(VIDEO_GOLDEN["prompts"], videos())
    assert_same_scores(got, released_videoreward(VIDEOREWARD / layout).score(VIDEO_GOLDEN["prompts"], videos()))
    golden = VIDEO_GOLDEN["batched" if layout == "reward" else "full_model"]
    torch.testing.assert_close(got.scores, torch.tensor([row["Overall"] for row in golden]), rtol=0, atol=1e-4)

    step_dir = out / "checkpoint-0"
    assert sorted(p.name for p in step_dir.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "non_lora_state_dict.safetensors",
    ]
    state = load_file(step_dir / "non_lora_state_dict.safetensors")
    base = load_file(VIDEOREWARD / "base" / "model.safetensors")
    # The released LoRA adapted q_proj (merged into it); the layer norms are the base's and are not saved.
    merged = "language_model.layers.0.self_attn.q_proj.weight"
    base_q = next(v for k, v in base.items() if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert merged in state and not torch.allclose(state[merged], base_q)
    assert not any("layernorm" in key or key.endswith(".norm.weight") for key in state)
    # The new LoRA starts at zero (B = 0), so the untrained adapter changes nothing.
    adapter = load_file(step_dir / "adapter_model.safetensors")
    assert all(float(v.abs().max()) == 0 for k, v in adapter.items() if ".lora_B." in k)


def test_trained_videoreward_reloads_to_the_trained_scores(tmp_path, pairs, video_template):
    """Three steps on: the reloaded directory scores the golden clips as the in-memory trained model (new LoRA
    unmerged, on the merged released one) does, and no longer as the released checkpoint."""
    out = tmp_path / "out"
    init = (f"model.init_from={VIDEOREWARD / 'reward'}", f"model.base={VIDEOREWARD / 'base'}")
    task = continue_training(out, pairs, 3, *init, f"model.template_file={video_template}", *FRAME_PIXELS)
    trained = task.reward.score(VIDEO_GOLDEN["prompts"], videos())
    assert_same_scores(mmreward.load_reward(str(out), device="cpu").score(VIDEO_GOLDEN["prompts"], videos()), trained)
    start = torch.tensor([row["Overall"] for row in VIDEO_GOLDEN["batched"]])
    assert float((trained.scores - start).abs().max()) > 1e-2
    # Its own saved directory is a starting point too (two LoRAs merged in turn); the base and template come from
    # its mmreward_reward.yaml.
    again = tmp_path / "again"
    continue_training(again, pairs, 0, f"model.init_from={out}")
    assert_same_scores(
        mmreward.load_reward(str(again), device="cpu").score(VIDEO_GOLDEN["prompts"], videos()), trained
    )


def test_untrained_hpsv3_saves_as_released(tmp_path, pairs, hpsv3_preset):
    """Zero steps from HPSv3's full state dict (through a preset naming it): the head, its one token, (mu, log
    sigma), sequential positions and PIL resizing carry over; the saved directory gives the golden outputs, with
    no normalization added (HPSv3 has no stats)."""
    out = tmp_path / "out"
    continue_training(out, pairs, 0, f"model.init_from={hpsv3_preset}", "model.dims=[VQ]")
    recorded = json.loads((out / "model_config.json").read_text())
    assert recorded["inference_config"] == {} and recorded["model_config"]["output_dim"] == 2
    assert recorded["mmreward"]["head"] == "mlp" and recorded["mmreward"]["reward_tokens"] == ["<|Reward|>"]
    saved = mmreward.load_reward(str(out), device="cpu")
    assert (saved.positions, saved.image_resize, saved.output_dim) == ("sequential", "pil", 2)
    prepared = [saved.prepare(saved.load_media(path)) for path in images()]
    with torch.inference_mode():
        raw = saved.forward_raw(saved._encode(IMAGE_GOLDEN["prompts"], prepared))  # (B, 2): mu, log sigma
    torch.testing.assert_close(raw, torch.tensor(IMAGE_GOLDEN["batched"]), rtol=0, atol=1e-4)
    released = mmreward.load_reward(str(hpsv3_preset), device="cpu")
    expected = released.score(IMAGE_GOLDEN["prompts"], images())
    assert_same_scores(saved.score(IMAGE_GOLDEN["prompts"], images()), expected)


def test_trained_hpsv3_reloads_to_the_trained_scores(tmp_path, pairs, hpsv3_preset):
    """HPSv3's uncertainty loss, LoRA on the fully fine-tuned model, three steps: the reload reproduces the
    in-memory model's mu on the golden photos."""
    out = tmp_path / "out"
    args = (f"model.init_from={hpsv3_preset}", "model.dims=[VQ]", "train.loss=uncertainty", *SMALL_IMAGES)
    # Its tiny random head diverges at the other tests' 0.01.
    args += tuple(f"train.{lr}=0.0001" for lr in ("lr", "vision_lr", "merger_lr", "token_lr", "head_lr"))
    task = continue_training(out, pairs, 3, *args)
    trained = task.reward.score(IMAGE_GOLDEN["prompts"], images())
    # |mu| is about 12 here, 1e-6 of it as large as the absolute tolerance.
    reloaded = mmreward.load_reward(str(out), device="cpu").score(IMAGE_GOLDEN["prompts"], images())
    assert_same_scores(reloaded, trained, rtol=1e-6)
    released = mmreward.load_reward(str(hpsv3_preset), device="cpu", image_min_pixels=3136, image_max_pixels=3136)
    assert float((trained.scores - released.score(IMAGE_GOLDEN["prompts"], images()).scores).abs().max()) > 1e-3


def test_init_from_errors_name_the_fix(tmp_path, pairs):
    base = (f"output_dir={tmp_path}", f"data.train={pairs}")
    with pytest.raises(ConfigError, match="training continues only vlm-head models"):
        build_task(load_config(TrainRewardConfig, None, [*base, "model.init_from=pickscore"]), "cpu", True, int)
    with pytest.raises(ConfigError, match="0 only with model.init_from"):
        load_config(TrainRewardConfig, None, [*base, "train.epochs=0"])
    with pytest.raises(ConfigError, match="set it, or use train.stats: measure"):
        load_config(TrainRewardConfig, None, [*base, "train.stats=keep"])
    with pytest.raises(ConfigError, match="continues a head model"):
        load_config(TrainRewardConfig, None, [*base, "model.kind=judge", "model.init_from=videoreward"])
    with pytest.raises(ConfigError, match="set model.init_from too"):
        load_config(TrainRewardConfig, None, [*base, "model.init_filename=HPSv3.safetensors"])
    # Label columns named otherwise than the checkpoint's normalized dimensions: its stats cannot be kept.
    tokens = "model.reward_tokens=[<|VQ_reward|>,<|MQ_reward|>,<|TA_reward|>]"
    renamed = [*base, f"model.init_from={VIDEOREWARD / 'reward'}", f"model.base={VIDEOREWARD / 'base'}", tokens]
    renamed += ["model.dims=[A,B,C]", f"model.template_file={VIDEOREWARD / 'template.yaml'}"]
    with pytest.raises(ConfigError, match=r"model.dims \['A', 'B', 'C'\] are not the dimensions"):
        build_task(load_config(TrainRewardConfig, None, renamed), "cpu", True, int)


def test_init_arguments_take_the_preset_where_the_run_leaves_options_unset():
    """The preset's weights, base, head settings, frame sampling and template choice, overridden only by what the
    run sets; a template name alone keeps the preset's template_name and published-prompt reference, a template
    file drops them; a bare checkpoint path becomes the weights."""
    run = {"dims": ["Overall"], "head": None, "template": None, "template_file": None, "image_max_pixels": 3136}
    hpsv3 = init_arguments("hpsv3", None, None, run)
    assert (hpsv3["weights"], hpsv3["filename"], hpsv3["base_model"]) == (
        "MizzenAI/HPSv3",
        "HPSv3.safetensors",
        "Qwen/Qwen2-VL-7B-Instruct",
    )
    assert (hpsv3["head"], hpsv3["head_output_dim"], hpsv3["reward_tokens"]) == ("mlp", 2, ["<|Reward|>"])
    assert (hpsv3["image_min_pixels"], hpsv3["image_max_pixels"], hpsv3["dims"]) == (200704, 3136, ["Overall"])
    videoreward = init_arguments("videoreward", None, None, {**run, "frame_min_pixels": 3136})
    assert (videoreward["video_fps"], videoreward["frame_min_pixels"], videoreward["frame_max_pixels"]) == (
        2.0,
        3136,
        200704,
    )
    ours = init_arguments("videoreward", None, "/base", {**run, "template": "ours"})
    assert (ours["template"], ours["template_name"], ours["base_model"]) == ("ours", "videoreward", "/base")
    assert ours["reference_prompt"]["video"]["repository"] == "KwaiVGI/VideoAlign"
    own = init_arguments("videoreward", None, None, {**run, "template_file": "mine.yaml"})
    assert own["template_file"] == "mine.yaml" and not {"template", "template_name", "reference_prompt"} & set(own)
    bare = init_arguments(str(HPSV3), "HPSv3.safetensors", "/base", run)
    assert bare == {
        # Frame sampling neither sets: the reward's defaults (VideoAlign's 2 fps and pixel bounds).
        "video_fps": 2.0,
        "frame_min_pixels": 128 * 28 * 28,
        "frame_max_pixels": 448 * 448,
        "weights": str(HPSV3),
        "filename": "HPSv3.safetensors",
        "base_model": "/base",
        **{k: v for k, v in run.items() if v is not None},
    }
