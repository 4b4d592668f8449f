"""Checklist judging (UniGenBench test points): the logit read-out against per-test-point and written-list baselines.

    python benchmarks/bench_checklist.py [--images 8] [--hidden 256] [--layers 4] [--vision-depth 4] [--size 224]
    python benchmarks/bench_checklist.py --smoke   # one prompt's 4 images at 56 px, a 1-layer judge: checks it runs

The first ``--images // 4`` UniGenBench prompts with 4 real photos each (scikit-image, resized to --size x --size,
through the real Qwen2-VL image processor) are checked against their prompts' test points (2-5 each) by a
random-weight Qwen2-VL judge built offline at the given size (weights do not change speed), with the shipped
``unigenbench-checklist`` template. Measured in one process, best of --repeats after a warm-up:

- baseline: one ``processor(...)`` + forward per (image, test point), the question template, P(yes) from the
  logits: what a per-question VQA loop does (the vision tower encodes the image once per test point);
- written list: one ``processor(...)`` + ``generate`` per image with the whole checklist, generating exactly the
  tokens of ``<score>[1, 0, ...]</score>`` plus the end token: the least UniGenBench's evaluation scripts
  generate (their models also write an analysis per test point, hundreds of tokens more);
- ``check(mode="logits")``: the questions about one image share their start (image and caption): one forward
  over the shared prefixes of ``--batch-sizes`` images (each image through the vision tower once), then one over all
  their test-point tails on the cached keys and values;
- ``check(mode="generate")``: the written list, batched, with ``max_new_tokens`` = the list's tokens.

The last line prints ``speedup``: the fastest ``check(mode="logits")`` against the baseline (goal >= 2x).

Measured on the shared 2-core CPU machine (``OMP_NUM_THREADS=1``; 8 images, 28 test points; the tiny tokenizer
makes each question ~170-240 tokens):

- ``--size 224`` (64 visual tokens): baseline 1.06 s, written list 0.95 s (1.12x), ``check(mode="logits")`` 0.50 s
  at batch 2 (2.1x), ``check(mode="generate")`` 0.80 s (1.3x); ``speedup: 2.1x``;
- ``--size 448`` (256 visual tokens): baseline 2.86 s, written list 1.41 s (2.0x), logits 1.06 s (2.7x), generate
  1.34 s (2.1x); ``speedup: 2.7x``. The shared prefix grows with the image, so the gain does too (a 1024 px
  UniGenBench image is ~1,300 tokens for Qwen2.5-VL).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import mmreward  # noqa: E402
from mmreward import media, testing, tiny_models  # noqa: E402
from mmreward.evaluation.prompt_sets import load_prompt_set  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Best of ``repeats`` wall times after one warm-up call (the least disturbed run on a shared machine)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def photos(count: int, size: int) -> list[torch.Tensor]:
    out = []
    for path in itertools.islice(itertools.cycle(testing.sample_images()), count):
        image = F.interpolate(media.load_image(path)[None], size=(size, size), mode="bilinear", antialias=True)
        out.append(image[0].clamp(0, 1))
    return out


def _uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round().to(torch.uint8)


def baseline(judge, prompts, images, checklists) -> int:
    """One processor call and one forward per (image, test point), batch 1; returns the number of answers."""
    backbone, section = judge.backend.backbone, judge.template.section("image")
    yes, no = judge.backend.answer_token_ids(*section.answers)
    count = 0
    for prompt, image, points in zip(prompts, images, checklists, strict=True):
        for point in points:
            text = backbone.chat_text(judge.render_question(section, prompt, point), {"media": 1}, section.system)
            inputs = backbone.processor(
                text=[text], images=[_uint8(image)], images_kwargs={"size": backbone.image_size}, return_tensors="pt"
            )
            with torch.inference_mode():
                logp = backbone.model(**inputs, logits_to_keep=1).logits[0, -1].float().log_softmax(-1)
            float(torch.sigmoid(torch.logsumexp(logp[yes], 0) - torch.logsumexp(logp[no], 0)))
            count += 1
    return count


def written_list(judge, prompts, images, checklists) -> int:
    """One processor + generate call per image, generating exactly the <score> list and the end token."""
    backbone, section = judge.backend.backbone, judge.template.section("image")
    eos = backbone.eos_token_ids()
    for prompt, image, points in zip(prompts, images, checklists, strict=True):
        text = backbone.chat_text(judge.render_checklist(section, prompt, points), {"media": 1}, section.system)
        inputs = backbone.processor(
            text=[text], images=[_uint8(image)], images_kwargs={"size": backbone.image_size}, return_tensors="pt"
        )
        tokens = answer_tokens(judge, len(points))
        with torch.inference_mode():
            backbone.model.generate(
                **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=eos
            )
    return sum(len(p) for p in checklists)


def answer_tokens(judge, points: int) -> int:
    answer = "<score>[" + ", ".join(["1"] * points) + "]</score>"
    return len(judge.backend.backbone.tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1


def measure(judge, prompts, images, checklists, batch_sizes, repeats) -> dict[str, tuple[int, float]]:
    answers = sum(len(p) for p in checklists)
    rows = {
        "baseline: forward per test point": (
            answers,
            timed(lambda: baseline(judge, prompts, images, checklists), repeats),
        ),
        "written list: generate per image": (
            answers,
            timed(lambda: written_list(judge, prompts, images, checklists), repeats),
        ),
    }
    judge.mode = "logits"
    for size in batch_sizes:
        judge.batch_size = size
        rows[f"check(mode=logits), batch {size}"] = (
            answers,
            timed(lambda: judge.check(prompts, images, checklists), repeats),
        )
    judge.mode, judge.batch_size = "generate", len(images)
    judge.max_new_tokens = max(answer_tokens(judge, len(p)) for p in checklists)
    rows["check(mode=generate), one batch"] = (
        answers,
        timed(lambda: judge.check(prompts, images, checklists), repeats),
    )
    judge.mode = "logits"
    return rows


def report(title: str, rows: dict[str, tuple[int, float]]) -> float:
    base = rows["baseline: forward per test point"][1]
    print(f"\n{title}")
    print(f"{'method':<40} {'answers':>8} {'seconds':>9} {'vs baseline':>12}")
    for name, (count, seconds) in rows.items():
        print(f"{name:<40} {count:>8} {seconds:>9.3f} {base / seconds:>11.2f}x")
    return base / min(s for name, (_, s) in rows.items() if name.startswith("check(mode=logits)"))


# ``--smoke``: every method at the smallest judge and images the processor takes (56 px), one repeat; batches of 2
# so that a call spans several batches.
SMOKE = {
    "images": 4,
    "hidden": 64,
    "layers": 1,
    "vision_depth": 1,
    "vision_width": 32,
    "size": 56,
    "batch_sizes": [2],
    "repeats": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images (4 per UniGenBench prompt)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vision-depth", type=int, default=4)
    parser.add_argument("--vision-width", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat (the test suite's run)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    items = load_prompt_set("unigenbench").limited(max(1, args.images // 4)).items
    prompts = [items[k // 4].prompt for k in range(args.images)]
    checklists = [list(items[k // 4].checklist) for k in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = tiny_models.tiny_vlm_backbone(
            root / "judge",
            "qwen2_vl",
            hidden_size=args.hidden,
            num_layers=args.layers,
            vision_depth=args.vision_depth,
            vision_width=args.vision_width,
            max_pixels=args.size * args.size,
        )
        judge = mmreward.load_reward(
            "unigenbench-eval",
            weights=str(weights),
            mode="logits",
            image_min_pixels=args.size * args.size,
            image_max_pixels=args.size * args.size,
            device=args.device,
        )
        images = photos(args.images, args.size)
        params = sum(p.numel() for p in judge.backend.backbone.model.parameters()) / 1e6
        tokens = sum(judge.backend.backbone.image_tokens(judge.backend.prepare(images[0][None]).grid_thw))
        title = (
            f"judge: Qwen2-VL hidden {args.hidden}, {args.layers} language layers, {args.vision_depth}-block vision "
            f"tower (width {args.vision_width}), {params:.1f}M params; {args.images} images of {args.size} x "
            f"{args.size} ({tokens} tokens each), {sum(len(c) for c in checklists)} test points; torch threads "
            f"{torch.get_num_threads()}, device {args.device}"
        )
        speedup = report(title, measure(judge, prompts, images, checklists, args.batch_sizes, args.repeats))
    print(f"speedup: {speedup:.1f}x")


if __name__ == "__main__":
    main()
