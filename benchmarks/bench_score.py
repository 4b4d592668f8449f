"""Throughput of `mmreward score` against its parts and against the naive per-image loop.

    python benchmarks/bench_score.py [--images 128] [--batch-size 32] [--architecture ViT-B-32]
    python benchmarks/bench_score.py --smoke   # 4 photos, batches of 2, tiny CLIP, one repeat: checks it runs

128 real photos (the scikit-image photos, each copy cropped by a few pixels so no two files are identical and
the deduplication cannot skip work) are scored with a real-size open_clip CLIP (random weights; weights do not
change speed). Measured in one process, on the same machine state:

(a) the `mmreward score` code path end to end (hashing, loader workers, preprocessing, model), images/s;
(b) decoding + preprocessing alone, in the main process;
(c) the model alone on prepared batches of --batch-size;
(d) the naive loop: decode, preprocess and score one image at a time.

The last lines print ``efficiency: a / min(b, c)`` (how well decoding is hidden behind compute; goal >= 0.9)
and ``speedup: a / d`` (goal >= 1.5x on 2 CPU cores). A second table compares decord and PyAV sampling
--video-frames frames (16) from each sample mp4 (median of --repeats).

Measured on the 2-core CPU machine, quiet (``python benchmarks/bench_score.py --repeats 3``): (a) 15.5, (b) 90.8,
(c) 19.3, (d) 7.0 images/s: ``efficiency: 0.80``, ``speedup: 2.2x``. On two cores the decoding worker and the
two model threads share the same CPU: (b) costs 128 / 91 = 1.4 core-seconds that the model would otherwise use, so
even perfect sharing caps (a) near 0.9 x (c), and the model's intra-op threads wait for the one the worker displaced,
which costs the rest. The first batch (32 images, ~0.35 s of decoding) also has nothing to overlap with. Lowering
the worker's priority (nice 10) changed nothing (15.4 img/s). On a GPU the model does not compete with decoding.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mmreward import load_reward, media  # noqa: E402
from mmreward.score_inputs import expand_inputs  # noqa: E402
from mmreward.scoring import default_workers, score_items  # noqa: E402
from mmreward.testing import sample_images, sample_videos, tiny_reward_preset  # noqa: E402


def make_photos(directory: Path, count: int) -> list[Path]:
    photos = [Image.open(p).convert("RGB") for p in sample_images()]
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        crop = 1 + i // len(photos)  # distinct bytes for every repeat of the same photo
        w, h = photo.size
        path = directory / f"{i:04d}.png"
        photo.crop((crop, crop, w - crop, h - crop)).save(path, compress_level=1)
        paths.append(path)
    return paths


def timed(fn, repeats: int) -> float:
    """Best of ``repeats`` wall times (the least disturbed run on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_interleaved(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds that run every function once, in turn, so that
    load from other processes on a shared machine hits all paths alike instead of whichever ran last."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn, 1))
    return best


# ``--smoke``: every path above at the smallest size (two batches, so loading overlaps scoring), run once.
SMOKE = {"images": 4, "batch_size": 2, "architecture": "tiny", "repeats": 1, "video_frames": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--architecture", default="ViT-B-32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video-frames", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat (the test suite's run)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "photos").mkdir()
        paths = make_photos(root / "photos", args.images)
        reward = load_reward(str(tiny_reward_preset("clip-score", root, architecture=args.architecture)))
        reward.batch_size = args.batch_size
        prompt = "a photo"
        n = len(paths)
        print(
            f"{n} photos, CLIP {args.architecture} (random weights), batch {args.batch_size}, "
            f"torch threads {torch.get_num_threads()}, loader workers {default_workers()}"
        )

        def end_to_end():
            items = expand_inputs([str(root / "photos")]).items
            for item in items:
                item.prompt = prompt
            rows = list(score_items(items, {"clip": reward}, {"clip": 1.0}, batch_size=args.batch_size))
            assert len(rows) == n and not any(r.failed for r in rows)

        prepared: list[torch.Tensor] = []

        def decode_and_preprocess():
            prepared.clear()
            prepared.extend(reward.prepare(reward.load_media(p)) for p in paths)

        def model_alone():
            with torch.inference_mode():
                for start in range(0, n, args.batch_size):
                    chunk = prepared[start : start + args.batch_size]
                    reward.score_prepared([prompt] * len(chunk), chunk)

        def naive():
            for p in paths:
                reward.score([prompt], [p])

        end_to_end()  # warm-up: first calls allocate and initialize
        decode_and_preprocess()  # model_alone needs the prepared inputs
        times = best_interleaved(
            {
                "(a) mmreward score, end to end": end_to_end,
                "(b) decode + preprocess alone": decode_and_preprocess,
                "(c) model alone": model_alone,
                "(d) naive one-at-a-time loop": naive,
            },
            args.repeats,
        )

    rates = {name: n / t for name, t in times.items()}
    print(f"\n{'path':<36} {'images/s':>9}")
    for name, rate in rates.items():
        print(f"{name:<36} {rate:>9.1f}")

    videos = sample_videos()
    print(f"\n{f'video ({args.video_frames} frames)':<22} {'decord s':>9} {'pyav s':>9} {'pyav/decord':>12}")
    for name, path in videos.items():
        t_decord, t_pyav = (
            statistics.median(
                timed(lambda b=backend, p=path: media.load_video(p, num_frames=args.video_frames, backend=b), 1)
                for _ in range(args.repeats)
            )
            for backend in ("decord", "pyav")
        )
        print(f"{name:<22} {t_decord:>9.3f} {t_pyav:>9.3f} {t_pyav / t_decord:>11.2f}x")

    a, b, c, d = rates.values()
    print(f"\nefficiency: {a / min(b, c):.2f}")
    print(f"speedup: {a / d:.1f}x")


if __name__ == "__main__":
    main()
