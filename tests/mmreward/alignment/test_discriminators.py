"""Adv-GRPO's discriminators (mmreward.alignment: discriminators, discriminator_losses, references, adversarial):
the losses and metrics against hand-derived values, the DINOv2 reward against its formula on the same features as
training, learning of both discriminators, reference loading and its errors."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from mmreward.alignment.adversarial import DiscriminatorTrainer, iteration_plan
from mmreward.alignment.discriminator_losses import discrimination_metrics, hinge_loss, reference_preference_loss
from mmreward.alignment.discriminators import (
    DinoDiscriminator,
    DiscriminatorConfig,
    PickScoreDiscriminator,
    check_discriminator_config,
)
from mmreward.alignment.references import (
    ReferenceSet,
    draw,
    find_reference_files,
    load_references,
    mean_color_distance,
    read_prompt_references,
)
from mmreward.errors import ConfigError, WeightsNotFoundError
from mmreward.media import load_image
from mmreward.rewards.clip_preprocess import resize_shortest_center_crop
from mmreward.testing import sample_images, tiny_reward_preset, warm_reference_images
from mmreward.tiny_models import tiny_dinov2_dir


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True, mixed_precision="no")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    directory = tmp_path_factory.mktemp("refs")
    warm_reference_images(directory, count=6)
    return load_references(find_reference_files(directory), 32, 32)


def _gray_samples(count: int = 6) -> torch.Tensor:
    """Dim grey-blue uint8 images with some texture: clearly unlike the warm references."""
    g = torch.Generator().manual_seed(1)
    base = torch.tensor([0.3, 0.35, 0.45]).view(1, 3, 1, 1)
    return ((base + 0.1 * torch.rand(count, 3, 32, 32, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------------------- hand-derived math


def test_hinge_loss_by_hand():
    """real [2, 0.5] -> relu(1 - r) = [0, 0.5], mean 0.25; fake [-2, 0] -> relu(1 + f) = [0, 1], mean 0.5;
    loss = (0.25 + 0.5) / 2 = 0.375. Batches of different sizes are averaged separately."""
    assert float(hinge_loss(torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0]))) == pytest.approx(0.375)
    # real [1.5] (0), fake [0.5, -0.5, -3] -> [1.5, 0.5, 0], mean 2/3: loss 1/3
    assert float(hinge_loss(torch.tensor([1.5]), torch.tensor([0.5, -0.5, -3.0]))) == pytest.approx(1 / 3)


def test_preference_loss_by_hand():
    """s_ref [1, 0], s_gen [0, 0]: CE of softmax([s_ref, s_gen]) with label 0 = softplus(s_gen - s_ref) =
    [log(1 + e^-1), log 2] = [0.313262, 0.693147], mean 0.503204."""
    value = float(reference_preference_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])))
    assert value == pytest.approx((math.log1p(math.exp(-1)) + math.log(2)) / 2)
    assert value == pytest.approx(0.503204, abs=1e-6)
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert value == pytest.approx(float(F.cross_entropy(logits, torch.zeros(2, dtype=torch.long))))


def test_discrimination_metrics_by_hand():
    """ref [1, 3], gen [2, 0, 3]: pairs ref > gen: (1,0), (3,2), (3,0); (3,3) a tie counts 1/2 -> 3.5 / 6.
    Gap: mean ref 2 - mean gen 5/3 = 1/3."""
    metrics = discrimination_metrics(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0, 3.0]))
    assert metrics["disc/accuracy"] == pytest.approx(3.5 / 6)
    assert metrics["disc/reward_gap"] == pytest.approx(1 / 3)
    assert metrics["disc/reference_score"] == pytest.approx(2.0) and metrics["disc/sample_score"] == pytest.approx(
        5 / 3
    )


def test_mean_color_distance_by_hand():
    """Samples pure red (1, 0, 0), references black and white halves (mean 0.5 grey):
    RMS of (0.5, -0.5, -0.5) = 0.5."""
    samples = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    samples[:, 0] = 255
    refs = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    refs[1] = 255
    assert mean_color_distance(samples, refs) == pytest.approx(0.5)


def test_draw_covers_every_reference_before_repeating():
    picked = draw(7, 3, torch.Generator().manual_seed(0))
    assert sorted(picked[:3].tolist()) == [0, 1, 2] and sorted(picked[3:6].tolist()) == [0, 1, 2] and len(picked) == 7


def test_schedule_of_discriminator_and_policy():
    """generator_every=3: discriminator on iterations 0 and 1, the policy on 2 (the paper: d_times=10)."""
    cfg = DiscriminatorConfig(generator_every=3)
    assert [iteration_plan(cfg, s) for s in range(4)] == [(True, False), (True, False), (False, True), (True, False)]
    assert iteration_plan(DiscriminatorConfig(generator_every=1), 5) == (True, True)


# ------------------------------------------------------------------------------------------- DINOv2 variant


@pytest.fixture(scope="module")
def dino():
    cfg = DiscriminatorConfig(backbone=str(tiny_dinov2_dir()), num_patches=8, hidden_dim=16, learning_rate=1e-2)
    return DinoDiscriminator(cfg)


def test_dino_reward_is_the_formula_on_the_training_features(dino, references):
    """score = 0.7 head(CLS) + 0.3 mean_k head(patch_k), on the same L2-normalized tokens the loss sees (the public
    code trains on raw tokens and scores normalized ones)."""
    images = references[:4]
    with torch.no_grad():
        hidden = dino.backbone(pixel_values=dino.preprocess(images)).last_hidden_state  # (4, 1 + 16, 32)
    generator = torch.Generator().manual_seed(3)
    picks = torch.randint(16, (4, 8), generator=generator)  # (4, 8), with replacement as the public code
    cls = F.normalize(hidden[:, 0], dim=-1)
    patches = F.normalize(torch.stack([hidden[i, 1:][picks[i]] for i in range(4)]), dim=-1)  # (4, 8, 32)
    with torch.no_grad():
        expected = 0.7 * dino.head(cls).squeeze(-1) + 0.3 * dino.head(patches).squeeze(-1).mean(-1)
    got = dino.score([""] * 4, images, torch.Generator().manual_seed(3)).scores
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # The loss is the hinge loss of the same head outputs (references real, samples fake).
    shared = _g(4)  # the loss draws the references' patches, then the samples', from one generator
    tokens_ref, tokens_gen = (
        dino.tokens(images[:2], shared, training=True),
        dino.tokens(images[2:], shared, training=True),
    )
    with torch.no_grad():
        (rc, rp), (gc, gp) = dino.head_scores(*tokens_ref), dino.head_scores(*tokens_gen)
        loss = dino.loss(images[:2], images[2:], [""] * 2, _g(4))
    assert float(loss) == pytest.approx(float(hinge_loss(rc, gc) + 0.3 * hinge_loss(rp, gp)), rel=1e-5)
    assert torch.allclose(tokens_ref[0].norm(dim=-1), torch.ones(2)) and tokens_ref[1].shape == (2, 8, 32)


def test_the_backbone_encodes_a_batch_once_until_it_changes(dino, references):
    """The rollout tensor passed to the metrics, the reward and the discriminator steps is encoded once; two batches
    alternate without re-encoding; an in-place change or a third batch is encoded again; scores are unchanged."""
    calls = []
    hook = dino.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        dino._recent = []  # other tests' batches (module fixture)
        samples, refs = _gray_samples(4), references[:3].clone()
        first = dino.score([""] * 4, samples, _g(5)).scores
        dino.score([""] * 3, refs, _g(5))
        again = dino.score([""] * 4, samples, _g(5)).scores
        dino.loss(refs, samples, [""] * 4, _g(6))
        assert len(calls) == 2 and torch.equal(first, again)
        samples[0] = 255 - samples[0]  # in place: the version counter moves
        changed = dino.score([""] * 4, samples, _g(5)).scores
        assert len(calls) == 3 and not torch.equal(changed[0], first[0]) and torch.equal(changed[1:], first[1:])
        dino.score([""] * 2, references[3:5].clone(), _g(5))  # a third batch pushes out the least recent (refs)
        dino.score([""] * 3, refs, _g(5))
        assert len(calls) == 5
    finally:
        hook.remove()


@pytest.mark.learning
def test_dino_discriminator_learns_to_tell_references_from_samples(references, accelerator):
    cfg = DiscriminatorConfig(backbone=str(tiny_dinov2_dir()), num_patches=8, hidden_dim=16, learning_rate=1e-2)
    torch.manual_seed(0)
    dino = DinoDiscriminator(cfg)
    trainer = DiscriminatorTrainer(dino, cfg, accelerator)
    samples = _gray_samples()
    before = discrimination_metrics(
        dino.score([""] * 6, references, _g(0)).scores, dino.score([""] * 6, samples, _g(0)).scores
    )
    frozen = {k: v.clone() for k, v in dino.backbone.state_dict().items()}
    losses = [trainer.step(references, samples, [""] * 6, _g(k)) for k in range(30)]
    after = discrimination_metrics(
        dino.score([""] * 6, references, _g(0)).scores, dino.score([""] * 6, samples, _g(0)).scores
    )
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert before["disc/reward_gap"] < 0.1 and after["disc/reward_gap"] > 1.0, (before, after)
    assert after["disc/accuracy"] == 1.0
    assert all(torch.equal(frozen[k], v) for k, v in dino.backbone.state_dict().items())  # the backbone is frozen
    assert {n for n, p in dino.trainable().named_parameters() if p.requires_grad} == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    }
    # The optimizer state round-trips (checkpoints).
    state = trainer.state_dict()
    fresh = DiscriminatorTrainer(dino, cfg, accelerator)
    fresh.load_state_dict(state)
    assert fresh.optimizer.state_dict()["state"][0]["step"] == 30


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_missing_dino_backbone_names_the_fix(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=re.escape("discriminator.backbone: a local directory")):
        DinoDiscriminator(DiscriminatorConfig(backbone=str(tmp_path / "nothing-here")))
    with pytest.raises(ConfigError, match="has only 16 patch tokens"):
        DinoDiscriminator(DiscriminatorConfig(backbone=str(tiny_dinov2_dir()), num_patches=64))


# ----------------------------------------------------------------------------------------- PickScore variant


def test_pickscore_discriminator_trains_its_last_blocks_to_prefer_references(references, accelerator, tmp_path):
    preset = tiny_reward_preset("pickscore", tmp_path)
    cfg = DiscriminatorConfig(type="pickscore", backbone=str(preset), learning_rate=1e-3, trainable_layers=1)
    pick = PickScoreDiscriminator(cfg)
    trainable = {n for n, p in pick.trainable().named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("vision_model.encoder.layers.1.") for n in trainable)
    text_before = pick.model.text_model.embeddings.token_embedding.weight.clone()
    trainer = DiscriminatorTrainer(pick, cfg, accelerator)
    samples, prompts = _gray_samples(), ["a cat"] * 6
    before = discrimination_metrics(
        pick.score(prompts, references, _g(0)).scores, pick.score(prompts, samples, _g(0)).scores
    )
    losses = [trainer.step(references, samples, prompts, _g(0)) for _ in range(15)]
    after = discrimination_metrics(
        pick.score(prompts, references, _g(0)).scores, pick.score(prompts, samples, _g(0)).scores
    )
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert after["disc/reward_gap"] > before["disc/reward_gap"] + 1.0 and after["disc/accuracy"] == 1.0
    assert torch.equal(text_before, pick.model.text_model.embeddings.token_embedding.weight)


def _tinted_photos(tint: tuple[float, float, float], count: int = 16) -> torch.Tensor:
    """``(count, 3, 32, 32)`` uint8 sample photos as ``0.5 + 0.5 * photo * tint`` (the warm references' formula)."""
    photos = torch.stack(
        [resize_shortest_center_crop(load_image(path)[None], 32)[0] for path in sample_images()[:count]]
    )
    tinted = 0.5 + 0.5 * photos * torch.tensor(tint).view(1, 3, 1, 1)
    return (tinted.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.mark.learning
def test_pickscore_discriminator_prefers_held_out_references(accelerator, tmp_path):
    """Adv-GRPO's PickScore discriminator learns the references' look, not the training images: trained on 8
    warm-tinted photos (references) against the same 8 photos cool-tinted (samples), it prefers the warm version of
    each of the 8 other photos to its cool version under a prompt it did not train with (the pairing of Adv-GRPO's
    preference loss: reference and sample under one prompt). Measured: the warm version preferred for 0 of the 8
    held-out photos before training and all 8 after; mean margin -0.23 before, +3.3 after (smallest +1.0)."""
    warm, cool = _tinted_photos((1.0, 0.8, 0.5)), _tinted_photos((0.5, 0.8, 1.0))
    train, held_out = slice(0, 8), slice(8, 16)
    preset = tiny_reward_preset("pickscore", tmp_path)
    cfg = DiscriminatorConfig(type="pickscore", backbone=str(preset), learning_rate=1e-3, trainable_layers=1)
    pick = PickScoreDiscriminator(cfg)
    trainer = DiscriminatorTrainer(pick, cfg, accelerator)
    test_prompts = ["a photo", "a picture", "an image", "a scene"] * 2

    def held_out_margins() -> torch.Tensor:  # (8,) score of the warm version - score of the cool one, per photo
        return (
            pick.score(test_prompts, warm[held_out], _g(0)).scores
            - pick.score(test_prompts, cool[held_out], _g(0)).scores
        )

    before = held_out_margins()
    train_prompts = ["a cat", "a dog", "a car", "a tree"] * 2
    for step in range(20):
        trainer.step(warm[train], cool[train], train_prompts, _g(step))
    after = held_out_margins()
    assert (after > 0).all(), after
    assert after.mean() > before.mean() + 1.0, (before, after)


def test_pickscore_variant_needs_a_pickscore_reward(tmp_path):
    preset = tiny_reward_preset("clip-score", tmp_path)
    with pytest.raises(ConfigError, match="needs a PickScore reward"):
        PickScoreDiscriminator(DiscriminatorConfig(type="pickscore", backbone=str(preset)))


# ------------------------------------------------------------------------------------------------ references


def test_references_from_a_folder_or_manifest_at_the_generator_size(tmp_path):
    warm_reference_images(tmp_path / "refs", count=3, size=48)
    (tmp_path / "list.txt").write_text("# warm photos\nrefs/warm-astronaut.png\n\nrefs/warm-brick.png\n")
    from_folder = load_references(find_reference_files(tmp_path / "refs"), 24, 32)
    from_manifest = load_references(find_reference_files(tmp_path / "list.txt"), 24, 32)
    assert from_folder.shape == (3, 3, 24, 32) and from_folder.dtype == torch.uint8
    assert from_manifest.shape == (2, 3, 24, 32)
    # warm tint: red above green above blue on average
    red, green, blue = from_folder.float().mean(dim=(0, 2, 3))
    assert red > green > blue


def test_empty_or_unreadable_reference_sets_fail_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match="holds no images"):
        find_reference_files(tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        find_reference_files(tmp_path / "missing")
    warm_reference_images(tmp_path / "mixed", count=3)
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not a png")
    files = find_reference_files(tmp_path / "mixed")
    with pytest.raises(ConfigError, match=r"1 of 4 reference images could not be read: .*broken.png"):
        load_references(files, 32, 32)
    assert load_references(files, 32, 32, max_failed=0.25).shape[0] == 3


def _keyed(tmp_path, table: dict) -> tuple:
    """A prompt2img JSON over the warm photos in ``tmp_path/imgs``; returns (json path, {file name: image})."""
    files = warm_reference_images(tmp_path / "imgs", count=4)
    (tmp_path / "prompt2img.json").write_text(json.dumps(table))
    loaded = load_references(files, 32, 32)
    return tmp_path / "prompt2img.json", {f.name: loaded[i] for i, f in enumerate(files)}


def test_prompt_keyed_references_draw_each_samples_own_prompt(tmp_path):
    """Adv-GRPO's layout: {prompt: [file, ...]} relative to a root; reference j goes with sample j's prompt."""
    names = [f"warm-{stem}.png" for stem in ("astronaut", "brick", "camera", "cell")]
    table = {"a cat": [names[0], names[1]], "a dog": names[2], "a car": [names[3]]}
    path, images = _keyed(
        tmp_path, {k: ([f"imgs/{n}" for n in v] if isinstance(v, list) else f"imgs/{v}") for k, v in table.items()}
    )
    keyed = ReferenceSet.from_path(path, 32, 32)
    assert keyed.images.shape == (4, 3, 32, 32) and keyed.by_prompt == {"a cat": [0, 1], "a dog": [2], "a car": [3]}
    prompts = ["a dog", "a car", "a cat", "a dog", "a cat"]
    generator = torch.Generator().manual_seed(0)
    drawn = keyed.draw(7, prompts, generator)  # 7 >= 5 samples: slot j is for prompts[j % 5]
    assert drawn.shape == (7, 3, 32, 32)
    for j, image in enumerate(drawn):
        own = table[prompts[j % 5]]
        own = own if isinstance(own, list) else [own]
        assert any(torch.equal(image, images[name]) for name in own), (j, prompts[j % 5])
    # fewer references asked than samples: still one per sample, so every sample has its own prompt's reference
    assert keyed.draw(2, prompts, generator).shape[0] == 5
    # both references of "a cat" are drawn, not always the first
    cats = torch.stack([keyed.draw(1, ["a cat"], generator)[0] for _ in range(40)])
    assert all(any(torch.equal(c, images[n]) for c in cats) for n in table["a cat"])
    # a root other than the JSON's folder
    (tmp_path / "plain.json").write_text(json.dumps({"a cat": names[0]}))
    assert read_prompt_references(tmp_path / "plain.json", root=tmp_path / "imgs") == {
        "a cat": [tmp_path / "imgs" / names[0]]
    }


def test_unkeyed_draw_is_the_plain_random_draw(references):
    unkeyed = ReferenceSet(references)
    drawn = unkeyed.draw(9, ["any prompt"], torch.Generator().manual_seed(3))
    expected = references[draw(9, len(references), torch.Generator().manual_seed(3))]
    assert torch.equal(drawn, expected)
    unkeyed.check_prompts(["a prompt with no reference"], "data.prompts")  # unkeyed references fit every prompt


def test_prompt_keyed_reference_errors_name_the_prompt_and_the_fix(tmp_path):
    path, _ = _keyed(tmp_path, {"a cat": "imgs/warm-astronaut.png", "a dog": ["imgs/missing.png"]})
    with pytest.raises(ConfigError, match="1 of 2 reference images could not be read"):
        ReferenceSet.from_path(path, 32, 32)
    with pytest.raises(
        ConfigError, match="every reference image of 1 prompt\\(s\\) is unreadable \\(first: 'a dog'\\)"
    ):
        ReferenceSet.from_path(path, 32, 32, max_failed=0.5)
    keyed = ReferenceSet.from_path(*_keyed(tmp_path, {"a cat": "imgs/warm-astronaut.png"})[:1], 32, 32)
    with pytest.raises(
        ConfigError, match="1 of the prompts in data.prompts have no reference images \\(first: 'a dog'\\)"
    ):
        keyed.check_prompts(["a cat", "a dog", "a dog"], "data.prompts")
    keyed.check_prompts(["a cat"], "data.prompts")
    for text, message in [
        ("[1, 2]", "must hold a non-empty JSON object"),
        ("{}", "must hold a non-empty JSON object"),
        ("{not json", "is not UTF-8 JSON"),
        ('{"a cat": []}', "prompt 'a cat' must be a file name or a non-empty list"),
        ('{"a cat": [3]}', "prompt 'a cat' must be a file name or a non-empty list"),
    ]:
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_prompt_references(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompt_references(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_patches": 0}, "num_patches must be >= 1"),
        ({"cls_weight": 0.0, "patch_weight": 0.0}, "not both 0"),
        ({"update_when": "generator_wins", "generator_every": 10}, "set discriminator.generator_every: 1"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ],
)
def test_discriminator_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_discriminator_config(DiscriminatorConfig(**overrides))
