"""The Qwen-VL backbone: our token assembly matches the processor, cached visual features match pixel inputs,
left-padded batches match single prompts, and loading errors are clear."""

import pytest
import torch

import mmreward
from mmreward.errors import ConfigError, WeightsNotFoundError
from mmreward.rewards.vlm.backbone import PromptSequence, VLMBackbone, choose_attn_implementation, read_model_type
from mmreward.rewards.vlm.templates import MediaPart, TextPart
from mmreward.tiny_models import tiny_vlm_backbone

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module", params=FAMILIES)
def backbone(request, tiny_root):
    directory = tiny_vlm_backbone(tiny_root / f"{request.param}-base", request.param)
    return VLMBackbone.from_pretrained(directory, device=torch.device("cpu"), dtype=torch.float32)


def _images(seed: int):
    generator = torch.Generator().manual_seed(seed)
    sizes = [(64, 80), (100, 60), (56, 56)]
    return [torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8) for h, w in sizes]


def test_assembly_matches_the_processor_and_pixel_inputs(backbone):
    """Two prompts with different images and text lengths: ids, masks, grids and logits equal the processor path."""
    images = _images(0)
    texts, sequences = [], []
    for prompt, (a, b) in [("a cat", (images[0], images[1])), ("a much longer caption here", (images[1], images[2]))]:
        parts = [MediaPart("media_a"), MediaPart("media_b"), TextPart(f"Which is better for {prompt}?")]
        text = backbone.chat_text(parts, {"media_a": 1, "media_b": 1}, system=None)
        texts.append(text)
        visuals = backbone.encode([backbone.process_images([a]), backbone.process_images([b])])
        sequences.append(PromptSequence(ids=backbone.token_ids(text), visuals=visuals))
    ours = backbone.assemble(sequences)
    backbone.tokenizer.padding_side = "left"
    theirs = backbone.processor(
        text=texts,
        images=[images[0], images[1], images[1], images[2]],
        images_kwargs={"size": backbone.image_size},
        padding=True,
        return_tensors="pt",
    )
    assert torch.equal(ours.input_ids, theirs["input_ids"])
    assert torch.equal(ours.attention_mask, theirs["attention_mask"])
    assert torch.equal(ours.mm_token_type_ids, theirs["mm_token_type_ids"])
    assert torch.equal(ours.image_grid_thw, theirs["image_grid_thw"])
    with torch.inference_mode():
        cached = backbone.model(**ours.as_kwargs(), logits_to_keep=1).logits
        direct = backbone.model(**dict(theirs), logits_to_keep=1).logits
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-5)


def test_left_padded_batch_matches_single_prompts(backbone):
    images = _images(1)
    visuals = backbone.encode([backbone.process_images([im]) for im in images])
    prompts = ["short", "a considerably longer prompt with many more words in it"]
    sequences = []
    for k, prompt in enumerate(prompts):
        text = backbone.chat_text([MediaPart("media"), TextPart(prompt)], {"media": 1}, system="Be brief.")
        sequences.append(PromptSequence(ids=backbone.token_ids(text), visuals=[visuals[k]]))
    with torch.inference_mode():
        batched = backbone.model(**backbone.assemble(sequences).as_kwargs(), logits_to_keep=1).logits
        for k, seq in enumerate(sequences):
            single = backbone.model(**backbone.assemble([seq]).as_kwargs(), logits_to_keep=1).logits
            torch.testing.assert_close(batched[k], single[0], atol=1e-4, rtol=1e-4)


def test_attention_choice_and_clear_errors(tmp_path, tiny_root):
    assert choose_attn_implementation("auto", torch.device("cpu"), torch.float32) == "sdpa"
    with pytest.raises(ConfigError, match="one of"):
        choose_attn_implementation("flash", torch.device("cpu"), torch.float32)
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(ConfigError, match="Qwen2-VL"):
        read_model_type(tmp_path)
    # A hub id that is not in the offline cache names the id and how to use local weights.
    with pytest.raises(WeightsNotFoundError, match="CodeGoat24/UnifiedReward-2.0-qwen3vl-8b"):
        mmreward.load_reward("unifiedreward-pairwise", template="ours")
