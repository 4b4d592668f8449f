"""Generator-benchmark pieces against hand-computed values: UniGenBench scoring from per-test-point verdicts,
within-prompt diversity, paired comparisons, prompt sets, sizes, LoRA checks, and per-sample seeding."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mmreward import testing
from mmreward.errors import ConfigError
from mmreward.evaluation import gen_results, generation
from mmreward.evaluation.diversity import (
    ImageEmbeddingFeatures,
    mean_pairwise_distance,
    per_group_diversity,
    pixel_features,
    within_group_diversity,
)
from mmreward.evaluation.prompt_sets import PROMPT_SETS, load_prompt_set
from mmreward.evaluation.unigenbench import (
    ImageVerdicts,
    paired_overall_difference,
    primary_of,
    sub_of,
    unigenbench_scores,
)
from mmreward.rewards.brightness import BrightnessReward

# ---------------------------------------------------------------------------------------------- UniGenBench

P0 = ("Style", "Attribute - Color", "Attribute - Quantity")
P1 = ("Attribute - Color", "Action - Animal")
P2 = ("World Knowledge", "Action-State")  # no spaces around the dash: the same sub-dimension as "Action - State"
IMAGES = [
    ImageVerdicts("0", P0, (True, True, False)),
    ImageVerdicts("0", P0, (True, False, False)),
    ImageVerdicts("1", P1, (True, True)),
    ImageVerdicts("1", P1, None),  # the judge's answer did not parse: left out, not scored
    ImageVerdicts("2", P2, (False, True)),
    ImageVerdicts("2", P2, (True, True)),
]


def test_unigenbench_scores_pool_test_points_and_average_primary_dimensions():
    """By hand, pooling every test point of every scored image:

    Style 2/2 = 1; Attribute: Color (1, 0 | 1) + Quantity (0, 0) = 2/5 = 0.4, sub Color 2/3, Quantity 0/2;
    Action: Animal 1/1, State 2/2 -> 3/3 = 1; World Knowledge 1/2 = 0.5.
    Overall = mean of the four primary dimensions present = (1 + 0.5 + 0.4 + 1) / 4 = 0.725.
    The failed image of prompt 1 removes its two test points from every count.
    """
    scores = unigenbench_scores(IMAGES, n_boot=0)
    assert list(scores["primary"]) == ["Style", "World Knowledge", "Attribute", "Action"]  # the benchmark's order
    expected_primary = {"Style": (2, 2), "World Knowledge": (1, 2), "Attribute": (2, 5), "Action": (3, 3)}
    assert {k: (v["passed"], v["total"]) for k, v in scores["primary"].items()} == expected_primary
    expected_sub = {
        "Style": (2, 2),
        "World Knowledge": (1, 2),
        "Attribute - Color": (2, 3),
        "Attribute - Quantity": (0, 2),
        "Action - Animal": (1, 1),
        "Action - State": (2, 2),
    }
    assert {k: (v["passed"], v["total"]) for k, v in scores["sub"].items()} == expected_sub
    assert scores["primary"]["Attribute"]["accuracy"] == pytest.approx(0.4)
    assert scores["sub"]["Attribute - Color"]["accuracy"] == pytest.approx(2 / 3)
    assert scores["overall"]["value"] == pytest.approx(0.725)
    assert scores["overall"]["dimensions"] == 4 and scores["overall"]["n"] == 3
    assert math.isnan(scores["overall"]["low"])  # n_boot=0: no interval
    assert scores["images"] == {"total": 6, "failed": 1}
    assert scores["testpoints"] == {"scored": 12, "excluded": 2}
    with_ci = unigenbench_scores(IMAGES, n_boot=200, seed=1)["overall"]
    assert with_ci["low"] <= with_ci["value"] <= with_ci["high"]


def test_unigenbench_names_and_paired_difference():
    assert primary_of("Attribute - Color") == "Attribute" and primary_of("Style") == "Style"
    assert sub_of("Action-State") == "Action - State" and sub_of("Text Generation") == "Text Generation"
    # The aligned run passes one more Attribute - Color point: Attribute 3/5 = 0.6, Overall (1+.5+.6+1)/4 = 0.775.
    aligned = list(IMAGES)
    aligned[1] = ImageVerdicts("0", P0, (True, True, False))
    assert unigenbench_scores(aligned, n_boot=0)["overall"]["value"] == pytest.approx(0.775)
    gain = paired_overall_difference(IMAGES, aligned, n_boot=300, seed=0)
    assert gain["value"] == pytest.approx(0.05) and gain["n"] == 3
    assert 0.0 <= gain["low"] <= 0.05 <= gain["high"]  # the aligned run is never worse on any resample
    with pytest.raises(ValueError, match="2 verdicts for 3 test points"):
        ImageVerdicts("0", P0, (True, False))


def test_paired_reward_gain_and_win_share():
    """Samples a_0, a_1 (prompt a) and b_0 (prompt b); base 0.1, 0.5, 0.3, other 0.4, 0.5, 0.2: differences
    0.3, 0, -0.1 -> gain 0.2 / 3; wins 1, 0.5 (tie), 0 -> 0.5. A sample missing from one run is left out."""
    prompt_of = {"a_0": "a", "a_1": "a", "b_0": "b", "b_1": "b"}
    base = {"a_0": 0.1, "a_1": 0.5, "b_0": 0.3, "b_1": 0.9}
    other = {"a_0": 0.4, "a_1": 0.5, "b_0": 0.2, "b_1": None}
    paired = gen_results.paired_gain(base, other, prompt_of, n_boot=100)
    assert paired["gain"]["value"] == pytest.approx(0.2 / 3) and paired["gain"]["n"] == 3
    assert paired["beats_base"]["value"] == pytest.approx(0.5)
    mean = gen_results.mean_estimate(base, prompt_of, n_boot=0)
    assert mean["value"] == pytest.approx(0.45) and mean["n"] == 4
    assert gen_results.mean_estimate({"a_0": None}, prompt_of) is None


# ------------------------------------------------------------------------------------------------- diversity


def test_pixel_diversity_matches_hand_computed_distances():
    """Black, white and mid-grey images: RMS differences 1, 0.5, 0.5 -> mean 2/3; identical images -> 0."""
    black, white, grey = torch.zeros(3, 8, 8), torch.ones(3, 8, 8), torch.full((3, 8, 8), 0.5)
    feats = pixel_features(torch.stack([black, white, grey]))
    assert mean_pairwise_distance(feats) == pytest.approx(2 / 3, abs=1e-6)
    photo = torch.rand(3, 40, 24, generator=torch.Generator().manual_seed(0))
    assert mean_pairwise_distance(pixel_features(torch.stack([photo] * 4))) == 0.0
    assert math.isnan(mean_pairwise_distance(pixel_features(photo[None])))
    uint8 = (torch.stack([black, white]) * 255).to(torch.uint8)
    assert mean_pairwise_distance(pixel_features(uint8)) == pytest.approx(1.0)
    # Groups: prompt "a" (black, white) 1.0; prompt "b" (grey twice) 0; prompt "c" alone: NaN, left out of the mean.
    groups = ["a", "a", "b", "b", "c"]
    per = per_group_diversity(pixel_features(torch.stack([black, white, grey, grey, photo[:, :8, :8]])), groups)
    assert per["a"] == pytest.approx(1.0) and per["b"] == 0.0 and math.isnan(per["c"])
    assert within_group_diversity(
        pixel_features(torch.stack([black, white, grey, grey])), groups[:4]
    ) == pytest.approx(0.5)
    # Videos: 4 frames spread over the clip; a clip that is black then white differs from an all-black one by
    # the RMS over its frames: frames 0, 2 (black) and 4, 6 (white) of 7 -> sqrt(2/4).
    clip = torch.stack([black] * 4 + [white] * 3)
    assert mean_pairwise_distance(pixel_features(torch.stack([clip, torch.stack([black] * 7)]))) == pytest.approx(
        math.sqrt(0.5)
    )


def test_clip_embedding_diversity(tiny_root):
    reward = testing.tiny_clip_reward("clip-score", root=tiny_root)
    features = ImageEmbeddingFeatures(reward)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    feats = features(images)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        raw = reward.model.encode_image(reward.preprocess_pixels(images)).float()
    raw = torch.nn.functional.normalize(raw, dim=-1)
    cos = raw[0] @ raw[1]
    assert float(torch.dist(feats[0], feats[1])) == pytest.approx(float(torch.sqrt(2 * (1 - cos))), abs=1e-5)
    assert mean_pairwise_distance(features(torch.stack([images[0]] * 3))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="no CLIP image encoder"):
        ImageEmbeddingFeatures(BrightnessReward())


# ----------------------------------------------------------------------------------------------- prompt sets


def test_shipped_prompt_sets():
    counts = {
        "unigenbench": 600,
        "geneval": 553,
        "pickscore": 2048,
        "vbench": 946,
        "videogen-eval": 400,
        "ta-hard": 72,
    }
    for name, count in counts.items():
        assert len(load_prompt_set(name)) == count, name
    unigen = load_prompt_set("unigenbench")
    assert unigen.has_checklists and unigen.media_kind == "image"
    assert sum(len(item.checklist) for item in unigen.items) == 1813  # the benchmark's EN short test points
    first = unigen.items[0]
    assert first.id == "0" and [p.name for p in first.checklist] == [
        "Style",
        "World Knowledge",
        "Attribute - Quantity",
    ]
    assert first.checklist[2].description == "two pandas"
    geneval = load_prompt_set("geneval")
    assert geneval.items[0].prompt == "a photo of a bench" and geneval.items[0].meta["tag"] == "single_object"
    assert load_prompt_set("vbench").media_kind == "video" and not load_prompt_set("pickscore").has_checklists
    assert load_prompt_set("unigenbench").limited(5).items == unigen.items[:5]
    assert set(PROMPT_SETS) >= {"unigenbench", "geneval", "pickscore", "vbench", "videogen-eval"}


def test_prompt_files_and_their_errors(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("a cat\n\n  a dog  \n")
    assert [(i.id, i.prompt) for i in load_prompt_set(str(text)).items] == [("0", "a cat"), ("1", "a dog")]
    table = tmp_path / "p.csv"
    table.write_text("caption,other\na red car,x\na blue bus,y\n")
    assert [i.prompt for i in load_prompt_set(str(table), "caption").items] == ["a red car", "a blue bus"]
    with pytest.raises(ConfigError, match="no prompt field 'prompt'.*caption"):
        load_prompt_set(str(table))
    lines = tmp_path / "p.jsonl"
    lines.write_text(json.dumps({"prompt": "a", "tag": "t"}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    assert load_prompt_set(str(lines)).items[0].meta == {"tag": "t"}
    dims = {"Testpoints": ["Style", "Attribute - Color"], "Testpoint Description": ["oil painting", "red"]}
    unigen = tmp_path / "u.csv"
    unigen.write_text(
        "index,prompt_en,sub_dims_en\n"
        + f'7,"a red apple, oil painting","{json.dumps(dims).replace(chr(34), chr(34) * 2)}"\n'
    )
    item = load_prompt_set(str(unigen)).items[0]
    assert item.id == "7" and [(p.name, p.description) for p in item.checklist] == list(
        zip(*dims.values(), strict=True)
    )
    dims["Testpoint Description"] = ["oil painting"]
    unigen.write_text("index,prompt_en,sub_dims_en\n" + f'7,"x","{json.dumps(dims).replace(chr(34), chr(34) * 2)}"\n')
    with pytest.raises(ConfigError, match="row 1: 'Testpoints' and 'Testpoint Description' must be lists of the same"):
        load_prompt_set(str(unigen))
    with pytest.raises(ConfigError, match="unknown prompt set 'drawbench'.*unigenbench"):
        load_prompt_set("drawbench")


# ------------------------------------------------------------------------------------------ sizes and LoRAs


def test_sizes_are_checked_before_the_model_loads():
    generation.check_size("sd3", "org/model", 512, 512, None)
    generation.check_size("sd3", "tiny", 36, 36, None)
    with pytest.raises(ConfigError, match=r"--height 500 does not fit sd3: use a positive multiple of 16 \(496\)"):
        generation.check_size("sd3", "org/model", 500, 512, None)
    with pytest.raises(ConfigError, match=r"--num-frames 80 does not fit wan: use 4k \+ 1 frames \(e.g. 81\)"):
        generation.check_size("wan", "org/model", 480, 832, 80)
    with pytest.raises(ConfigError, match="--num-frames is for video families"):
        generation.check_size("flux", "tiny", 32, 32, 5)


def _lora_file(directory, keys: dict[str, tuple[int, int]]):
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, directory / generation.LORA_WEIGHTS_NAME)
    return directory


def test_lora_family_is_read_from_layer_names_and_training_config(tmp_path):
    flux = _lora_file(
        tmp_path / "flux",
        {
            "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 32),
            "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (4, 32),
        },
    )
    info = generation.inspect_lora(flux)
    # FLUX.1 Kontext's transformer is FLUX.1's class: a LoRA of either has the same layer names
    assert info.families == {"flux", "flux-kontext", "flux2klein", "flux2"} and info.rank == 4
    assert len(info.digest) == 64
    with pytest.raises(
        ConfigError, match="layers of a flux or flux-kontext or flux2 or flux2klein transformer, not sd3"
    ):
        generation.check_lora_family(info, "sd3")
    wan = _lora_file(tmp_path / "wan", {"transformer.blocks.0.attn1.to_q.lora_A.weight": (2, 32)})
    assert generation.inspect_lora(wan).families == {"wan", "wan22", "wan22ti2v", "wan-i2v"}  # one layer layout
    joint = _lora_file(
        tmp_path / "run" / "lora", {"transformer.transformer_blocks.0.attn.add_q_proj.lora_B.weight": (32, 4)}
    )
    assert generation.inspect_lora(joint).families == {
        "sd3",
        "flux",
        "flux-kontext",
        "qwenimage",
        "qwenimage-edit",
        "flux2klein",
        "flux2",
        "hunyuanvideo15",
    }  # MM-DiT names
    qwen = _lora_file(tmp_path / "qwen", {"transformer.transformer_blocks.0.img_mlp.net.2.lora_A.weight": (2, 32)})
    assert generation.inspect_lora(qwen).families == {"qwenimage", "qwenimage-edit"}
    qwen21 = _lora_file(
        tmp_path / "qwen21",
        {
            "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (2, 32),
            "transformer.transformer_blocks.0.img_mlp.gate_layer.lora_A.weight": (2, 32),
        },
    )
    assert generation.inspect_lora(qwen21).families == {"qwenimage21"}  # its SwiGLU names, attention shared
    attention = _lora_file(tmp_path / "attn", {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (2, 8)})
    assert "qwenimage21" in generation.inspect_lora(attention).families
    zimage = _lora_file(tmp_path / "zimage", {"transformer.layers.0.attention.to_q.lora_A.weight": (2, 32)})
    assert generation.inspect_lora(zimage).families == {"zimage"}
    (tmp_path / "run" / "config.yaml").write_text("model:\n  family: sd3\n  path: tiny\n")
    info = generation.inspect_lora(joint)
    assert info.trained_on == {"family": "sd3", "path": "tiny"}
    generation.check_lora_family(info, "sd3")
    with pytest.raises(ConfigError, match="trained on a sd3 model.*--family is flux"):
        generation.check_lora_family(info, "flux")
    # a Qwen-Image-Edit run's LoRA (align/pref_grpo.py writes its family) benchmarks its family, not Qwen-Image
    (tmp_path / "qwen-edit-run").mkdir()
    (tmp_path / "qwen-edit-run" / "config.yaml").write_text("model:\n  family: qwenimage-edit\n")
    edit_lora = _lora_file(
        tmp_path / "qwen-edit-run" / "lora", {"transformer.transformer_blocks.0.img_mlp.net.2.lora_A.weight": (2, 32)}
    )
    generation.check_lora_family(generation.inspect_lora(edit_lora), "qwenimage-edit")
    with pytest.raises(ConfigError, match="trained on a qwenimage-edit model"):
        generation.check_lora_family(generation.inspect_lora(edit_lora), "qwenimage")
    other = _lora_file(tmp_path / "unet", {"unet.down_blocks.0.attn.to_q.lora_A.weight": (4, 32)})
    with pytest.raises(ConfigError, match="not a diffusers transformer LoRA"):
        generation.inspect_lora(other)
    with pytest.raises(ConfigError, match="is not a directory"):
        generation.inspect_lora(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no pytorch_lora_weights.safetensors"):
        generation.inspect_lora(tmp_path / "empty")


@pytest.fixture(scope="module")
def tiny_sd3():
    from mmreward.flow.models import load_flow_model

    return load_flow_model("sd3", "tiny")


def test_lora_shapes_must_fit_the_transformer(tmp_path, tiny_sd3):
    transformer = tiny_sd3.transformer
    layer = transformer.transformer_blocks[0].attn.to_q
    ok = {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (4, layer.in_features),
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": (layer.out_features, 4),
    }
    generation.check_lora_shapes(transformer, _lora_file(tmp_path / "ok", ok) / generation.LORA_WEIGHTS_NAME)
    wide = {**ok, "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (4, 2 * layer.in_features)}
    with pytest.raises(
        ConfigError, match=f"to_q: LoRA input {2 * layer.in_features}, layer input {layer.in_features}"
    ):
        generation.check_lora_shapes(transformer, _lora_file(tmp_path / "wide", wide) / generation.LORA_WEIGHTS_NAME)


def test_samples_are_seeded_per_prompt_and_index_not_per_batch(tmp_path, tiny_sd3):
    """Sample k of prompt p gets the same pixels whether it is drawn alone or in a batch with others, so a run
    with --limit or another --batch-size, and the base and aligned runs, start from the same noise."""
    model = tiny_sd3
    prompts = load_prompt_set("unigenbench").limited(2)
    settings = generation.GenerationSettings("sd3", "tiny", None, None, 2, 4.5, 16, 16, None, "", 0, "float32")
    together = generation.plan_samples(prompts, 2, tmp_path / "together", "image")
    alone = generation.plan_samples(prompts, 2, tmp_path / "alone", "image")
    assert [s.path.name for s in together] == ["0_0.png", "0_1.png", "1_0.png", "1_1.png"]
    generation.generate_samples(model, together, settings, batch_size=4, progress=False)
    generation.generate_samples(model, alone[::-1], settings, batch_size=1, progress=False)
    a, b = generation.load_samples(together), generation.load_samples(alone)
    assert torch.equal(a, b)
    assert float((a[0] - a[1]).abs().mean()) > 0.01  # different indices, different noise
    assert not list((tmp_path / "together").glob(".*"))  # atomic writes leave no temporary files behind
    assert settings.differences({**settings.to_dict(), "num_steps": 40}) == ["num_steps: 40 -> 2"]
    assert np.isfinite(a.numpy()).all()


def test_geneval2_set_is_fetched_at_the_rewards_pin(tmp_path, monkeypatch):
    from mmreward import pinned_files
    from mmreward.errors import DataNotAvailableError
    from mmreward.evaluation.prompt_sets import NamedSet
    from mmreward.rewards.soft_tifa import GENEVAL2_DATA

    # One pin for the prompts and the reward's questions: the reward's own.
    assert PROMPT_SETS["geneval2"].file == GENEVAL2_DATA
    monkeypatch.setattr(pinned_files, "hf_cache_root", lambda kind: tmp_path / kind)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataNotAvailableError, match="raw.githubusercontent.com/facebookresearch/GenEval2"):
        load_prompt_set("geneval2")
    # A cached copy in GenEval 2's layout (our wording) under a pin of its own bytes is read as the set.
    data = b'{"prompt": "two red apples", "vqa_list": [["How many apples are in the image?", "two"]]}\n'
    pinned = pinned_files.PinnedFile("facebookresearch/GenEval2", "a" * 40, "geneval2_data.jsonl", sha256_hex(data))
    cached = pinned_files.cache_path(pinned, tmp_path / "data")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    monkeypatch.setitem(PROMPT_SETS, "geneval2", NamedSet(pinned.spec(), "image", "fixture"))
    (item,) = load_prompt_set("geneval2").items
    assert item.prompt == "two red apples" and item.meta["vqa_list"] == [["How many apples are in the image?", "two"]]
    cached.write_bytes(data.replace(b"two red", b"six red"))
    with pytest.raises(ConfigError, match="sha256"):
        load_prompt_set("geneval2")


def sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
