"""Reward throughput: items/s of every shipped preset, at its real architecture on tiny widths.

    python benchmarks/bench_rewards.py [--images 16] [--repeats 3] [--batch-size 8] [--only NAME ...]
    python benchmarks/bench_rewards.py --smoke   # 2 photos, batches of 2, one repeat: checks every preset runs

Each preset is built by the test kit with random weights in its released layout (``mmreward.testing``: the CLIP
family, ImageReward, TrOCR, GenEval's OWLv2 and CLIP, the JPEG rewards; the VLM heads, judges and Soft-TIFA on a tiny
Qwen backbone of the family the preset's checkpoint uses, Soft-TIFA with three questions per image) and loaded
through ``load_reward``. GenEval scores the prompt as one red stop sign, every box kept, so colours are classified.
The scikit-image photos, decoded once into tensors, are scored with a prompt that quotes a text (so the OCR reward
has a target); pointwise rewards by ``score`` (items/s), pairwise judges by ``compare`` in both presentation orders
(pairs/s); editing rewards score each photo as an edit of the next one (its source, a second image per item), and
judges of edits compare each pair as edits of a third photo.
Video-only rewards (VideoScore2) score one clip per photo instead: 8 frames panning across it, taken as
sampled at the reward's frame rate (items/s are clips/s). Decoding is not timed. Remote presets have no weights of
their own and are listed as served.

Tiny widths measure each pipeline's fixed costs (preprocessing, tokenization, generation loop), not the FLOPs of
the released sizes: compare presets of one kind with each other, and expect the released checkpoints to be
compute-bound and far slower on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mmreward import load_reward, media  # noqa: E402
from mmreward.rewards.registry import find_preset, list_rewards  # noqa: E402
from mmreward.testing import sample_images, tiny_reward_preset, tiny_vlm_preset  # noqa: E402
from mmreward.tiny_models import tiny_vlm_backbone  # noqa: E402

PROMPT = 'a shop window with a sign that says "open late"'
# Soft-TIFA's atoms for PROMPT (our wording, in GenEval 2's data layout): three questions per image.
PROMPT_ATOMS = [
    ["Is there a shop window in the image?", "Yes"],
    ["How many signs are in the image?", "one"],
    ["Does the sign say open late?", "Yes"],
]
KIT_TYPES = {
    "clip-score",
    "hpsv2",
    "pickscore",
    "laion-aesthetic",
    "imagereward",
    "ocr",
    "geneval",
    "jpeg-compressibility",
    "jpeg-incompressibility",
}
# The Qwen family of each VLM preset's released checkpoint, so the tiny stand-in runs the same code.
VLM_FAMILY = {
    "hpsv3": "qwen2_vl",
    "videoreward": "qwen2_vl",
    "unifiedreward-pairwise": "qwen3_vl",
    "unifiedreward-pointwise": "qwen3_vl",
    "unifiedreward-think": "qwen3_vl",
    "unifiedreward-think-qwen2.5": "qwen2_5_vl",
    "unifiedreward-flex": "qwen3_vl",
    "unigenbench-eval": "qwen3_vl",
    "unigenbench-eval-qwen72b": "qwen2_5_vl",
    "videoscore2": "qwen2_5_vl",
    "rationalrewards": "qwen3_vl",
    "rationalrewards-edit": "qwen3_vl",
    "unifiedreward-edit": "qwen3_vl",
    "unifiedreward-edit-pairwise": "qwen3_vl",
    "editreward": "qwen2_5_vl",
}
CLIP_FRAMES = 8  # frames of each clip a video-only reward scores


def build(name: str, root: Path, batch_size: int):
    """The tiny stand-in of preset ``name`` loaded through ``load_reward``, or None for a served preset."""
    preset = find_preset(name)
    if preset.kwargs.get("backend") == "chat":
        return None
    if preset.type == "geneval":
        data = root / "geneval_metadata.jsonl"
        record = {
            "tag": "color_attr",
            "prompt": PROMPT,
            "include": [{"class": "stop sign", "count": 1, "color": "red"}],
        }
        data.write_text(json.dumps(record) + "\n")
        kit = find_preset(name).kwargs
        path = tiny_reward_preset(name, root)
        return load_reward(
            str(path),
            data=str(data),
            batch_size=batch_size,
            threshold=0.0,
            **{k: kit[k] for k in ("max_objects", "max_overlap", "position_threshold")},
        )
    if preset.type in KIT_TYPES:
        path = tiny_reward_preset(name, root)
    elif preset.type == "soft-tifa":
        data = root / "geneval2_data.jsonl"
        data.write_text(json.dumps({"prompt": PROMPT, "vqa_list": PROMPT_ATOMS}) + "\n")
        weights = tiny_vlm_backbone(root / "qwen3_vl-base", "qwen3_vl")
        return load_reward(name, weights=str(weights), data=str(data), batch_size=batch_size)
    elif name in VLM_FAMILY:
        path = tiny_vlm_preset(name, root, backbone=VLM_FAMILY[name])
    else:
        raise SystemExit(f"no tiny stand-in for preset {name!r} (type {preset.type}): add it to this benchmark")
    return load_reward(str(path), batch_size=batch_size)


def pan(image: torch.Tensor, frames: int = CLIP_FRAMES) -> torch.Tensor:
    """``(3, H, W)`` -> a clip ``(frames, 3, H, W)`` whose frames shift the photo 4 pixels to the left each."""
    return torch.stack([torch.roll(image, shifts=-4 * k, dims=-1) for k in range(frames)])


def throughput(reward, images: list[torch.Tensor], repeats: int) -> tuple[str, float]:
    """(unit, median items per second over ``repeats`` runs)."""
    prompts = [PROMPT] * len(images)
    if "image" not in reward.media_kinds:
        images = [pan(image) for image in images]
    if reward.kind == "pairwise":
        other = images[1:] + images[:1]
        # Judges of edits compare two edits of a source: each pair as edits of a third photo.
        extra = {"sources": images[2:] + images[:2]} if reward.uses_source else {}

        def run():
            return reward.compare(prompts, images, other, **extra)

        unit = "pairs/s"
    elif reward.uses_source:
        sources = images[1:] + images[:1]  # each photo scored as an edit of the next one

        def run():
            return reward.score(prompts, images, sources=sources)

        unit = "items/s"
    else:

        def run():
            return reward.score(prompts, images)

        unit = "items/s"
    run()  # warm-up: first-call allocations and lazy imports
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(len(images) / (time.perf_counter() - start))
    return unit, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="items per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per preset (median reported)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=None, help="preset names (default: every shipped preset)")
    parser.add_argument("--smoke", action="store_true", help="2 photos, batches of 2, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.repeats, args.batch_size = 2, 1, 2
    names = args.only or list_rewards()
    photos = [media.load_image(p) for p in sample_images()]
    images = [photos[i % len(photos)] for i in range(args.images)]
    torch.manual_seed(0)
    print(f"{'preset':<30} {'kind':<10} {'rate':>10}  unit     ({args.images} items, batch {args.batch_size})")
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            reward = build(name, Path(scratch), args.batch_size)
            if reward is None:
                print(f"{name:<30} {'served':<10} {'-':>10}  (an OpenAI-compatible server's speed)")
                continue
            unit, rate = throughput(reward, images, args.repeats)
            print(f"{name:<30} {reward.kind:<10} {rate:>10.2f}  {unit}")
            del reward


if __name__ == "__main__":
    main()
