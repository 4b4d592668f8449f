"""Benchmark a generator (a base model, optionally with a LoRA): generate on a prompt set, score, report.

    python eval/gen_bench.py --model stabilityai/stable-diffusion-3.5-medium --family sd3 --prompts unigenbench \\
        --judge unigenbench-eval-remote --reward pickscore --reward hpsv2.1=0.5 --out outputs/gen/sd35m
    python eval/gen_bench.py --model stabilityai/stable-diffusion-3.5-medium --family sd3 --lora run/lora \\
        --prompts unigenbench --judge unigenbench-eval-remote --reward pickscore --reward hpsv2.1=0.5 \\
        --out outputs/gen/sd35m-dpo --compare-to outputs/gen/sd35m
    python eval/gen_bench.py compare outputs/gen/sd35m outputs/gen/sd35m-dpo --out outputs/gen/compare
    python eval/gen_bench.py --model stabilityai/stable-diffusion-3.5-medium --family sd3 --prompts geneval2 \\
        --images-per-prompt 1 --reward geneval2 --out outputs/gen/sd35m-geneval2
    python eval/gen_bench.py --model Qwen/Qwen-Image-Edit-2509 --family qwenimage-edit --prompts edits.jsonl \
        --images-per-prompt 1 --reward editreward --out outputs/gen/qwen-edit
    python eval/gen_bench.py --list          # prompt sets, per-family sampling defaults, judge presets

Generation: ``--images-per-prompt`` samples per prompt (4, UniGenBench's protocol) with the ODE sampler and the
family's evaluation defaults (``--list``; override with ``--steps``, ``--guidance-scale``, sizes). Sample k of prompt
p starts from the noise of ``seeded(seed, p, k)``, so base and aligned runs with the same ``--seed`` see the same
noise. Samples are saved as ``OUT/samples/{prompt id}_{k}.png`` (``.mp4`` for videos), UniGenBench's naming.

Editing families (qwenimage-edit, flux-kontext) take an editing prompt file: ``.jsonl`` objects or ``.csv`` /
``.tsv`` rows with ``prompt`` and ``image`` (``--prompt-field``, ``--image-field``; image paths relative to the file),
the layout align/pref_grpo.py trains on. A prompt's id is its line number, so ``samples/7_0.png`` edits line 7's
source. A malformed line or a source image that does not decode is left out with its line number and the fix
(printed, and listed in ``results.json`` under ``prompt_set.left_out``); every other line is generated and scored.
Rewards that compare an edit with its source (``uses_source``: editreward, rationalrewards-edit,
BrightnessDeltaReward) get each sample's source; the others score the edit as an image. Every edit has one size
(``--height`` / ``--width``; the pipelines instead size each output from its source's aspect ratio).

Scoring: every ``--reward NAME[=WEIGHT]`` (anything ``mmreward.load_reward`` takes; the weights give a weighted
total), and for prompt sets with test points (UniGenBench) a checklist ``--judge`` that answers every test point
of every image: UniGenBench scores per primary and sub-dimension (passed / total test points, pooled) and Overall
(the mean of the primary dimensions). GenEval 2 (``--prompts geneval2``, fetched at a pinned commit: CC BY-NC 4.0)
is scored by ``--reward geneval2`` (Soft-TIFA GM); its headline number is 100 x that reward's mean (one image per
prompt in the authors' script: ``--images-per-prompt 1``). Within-prompt diversity is the mean pairwise feature
distance between a prompt's samples (``--diversity-features pixels`` or a CLIP-family reward).

Many processes: ``torchrun --nproc_per_node N eval/gen_bench.py ...`` (or ``accelerate launch``) draws every N-th batch
of the missing samples on each process (one GPU each), each batch as one process would draw it; rank 0 then scores
and reports alone.

Resuming: samples and scores stay in OUT; rerunning the same command generates and scores only what is missing
(a finished rerun loads no model at all). Outputs: ``report.md``, ``results.json`` (every per-sample value),
``samples_grid.png`` and plots; with ``--compare-to`` or ``compare`` also the side-by-side ``comparison.md``,
``comparison.json``, ``side_by_side.png`` and plots. Exit status: 0 on success, 1 when ``--on-error fail`` and
items failed or editing lines were left out (the report is still written), 2 on bad arguments, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mmreward import __version__
from mmreward.devices import resolve_device_and_dtype
from mmreward.errors import ConfigError, MMRewardError
from mmreward.evaluation import gen_results, generation
from mmreward.evaluation.diversity import ImageEmbeddingFeatures, per_group_diversity, pixel_features
from mmreward.evaluation.generation import EVAL_DEFAULTS, TINY_SIZES, GenerationSettings, LoraInfo, Sample
from mmreward.evaluation.prompt_sets import PROMPT_SETS, PromptSet, load_edit_prompt_set, load_prompt_set
from mmreward.evaluation.report import plot_grouped_bars, plot_image_grid, write_json, write_text
from mmreward.evaluation.score_cache import (
    ChecklistItem,
    MediaItem,
    ScoreCache,
    check_into_cache,
    checklist_key,
    finished_cache,
    mark_finished,
    media_key,
    request_digest,
    reward_fingerprint,
    score_into_cache,
)
from mmreward.family_names import EDITING_FAMILIES
from mmreward.rewards.mix import parse_reward_spec
from mmreward.rewards.registry import resolve_reward
from mmreward.score_shards import Processes, barrier, batch_share, end_group, launched_processes, start_group

FAMILIES = tuple(EVAL_DEFAULTS)  # as mmreward.flow.models.FAMILIES (which imports diffusers: only when generating)
RUN_FILE = "run.json"
SAMPLES_DIR = "samples"
GRID_COLUMNS = 4  # samples per prompt shown in grids


# --------------------------------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gen_bench.py",
        description="Generate with a base model (and LoRA) on a benchmark's prompts, score the samples with "
        "rewards and a checklist judge, and write a Markdown/JSON report with sample grids. "
        "`gen_bench.py compare RUN_A RUN_B --out DIR` compares two finished runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="diffusers pipeline: hub id, local directory, or 'tiny' (tiny random, CPU)")
    model.add_argument("--family", choices=FAMILIES, help="model family")
    model.add_argument("--lora", type=Path, help="LoRA directory in the diffusers format (align/flow_dpo.py's lora/)")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    model.add_argument("--dtype", default="auto", help="generator weights: float32, bfloat16, float16, auto")
    prompts = parser.add_argument_group("prompts and sampling")
    prompts.add_argument("--prompts", help=f"prompt set ({', '.join(PROMPT_SETS)}) or a .txt/.csv/.jsonl file")
    prompts.add_argument("--prompt-field", help="column/key holding the prompt in a .csv/.jsonl (default: prompt)")
    prompts.add_argument(
        "--image-field", help="editing families: column/key holding the source image path (default: image)"
    )
    prompts.add_argument("--limit", type=int, help="only the first N prompts (quick runs)")
    prompts.add_argument("--images-per-prompt", type=int, default=4, help="samples per prompt (UniGenBench: 4)")
    prompts.add_argument("--steps", type=int, help="ODE steps (default: the family's evaluation setting, --list)")
    prompts.add_argument("--guidance-scale", type=float, help="CFG scale (FLUX.1-dev: embedded guidance)")
    prompts.add_argument("--height", type=int, help="pixels (default: the family's evaluation setting)")
    prompts.add_argument("--width", type=int, help="pixels (default: the family's evaluation setting)")
    prompts.add_argument("--num-frames", type=int, help="video frames, 4k + 1 (wan)")
    prompts.add_argument("--negative-prompt", default="", help="negative prompt for CFG")
    prompts.add_argument("--seed", type=int, default=0, help="noise seed (the same for runs you compare)")
    prompts.add_argument("--batch-size", type=int, default=4, help="samples per transformer call")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument("--reward", action="append", default=[], metavar="NAME[=WEIGHT]", help="repeatable")
    scoring.add_argument("--judge", help="checklist judge for test points (e.g. unigenbench-eval-remote)")
    scoring.add_argument("--judge-mode", choices=("logits", "generate"), help="override the judge preset's mode")
    scoring.add_argument("--reward-dtype", default="auto", help="dtype of rewards and judge (auto: bf16 on cuda)")
    scoring.add_argument(
        "--diversity-features", default="pixels", help="'pixels' (offline), a CLIP-family reward, or 'none'"
    )
    scoring.add_argument("--retry-failed", action="store_true", help="score again items that failed before")
    scoring.add_argument("--on-error", choices=("skip", "fail"), default="skip", help="fail: exit 1 on failures")
    report = parser.add_argument_group("report")
    report.add_argument("--out", type=Path, help="output directory (samples, caches, report)")
    report.add_argument("--compare-to", type=Path, help="a finished run directory to compare against (the base)")
    report.add_argument("--names", nargs=2, default=("base", "aligned"), help="names of the two compared runs")
    report.add_argument("--grid-prompts", type=int, default=8, help="prompts shown in sample grids")
    report.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for 95%% intervals")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="list prompt sets, sampling defaults and judges; exit")
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gen_bench.py compare", description="Side-by-side report of two finished gen_bench runs (no model)."
    )
    parser.add_argument("base", type=Path, help="run directory of the reference (e.g. the base model)")
    parser.add_argument("other", type=Path, help="run directory to compare with it (e.g. the aligned model)")
    parser.add_argument("--out", type=Path, required=True, help="where the comparison is written")
    parser.add_argument("--names", nargs=2, default=("base", "aligned"), help="names of the two runs")
    parser.add_argument("--grid-prompts", type=int, default=8, help="prompts shown in the side-by-side grid")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for 95%% intervals")
    return parser


def _list() -> str:
    lines = ["prompt sets (--prompts NAME; or a .txt/.csv/.jsonl file):"]
    lines += [f"  {name:14s} {e.media_kind:5s}  {e.summary}" for name, e in PROMPT_SETS.items()]
    lines += ["", "sampling defaults per family (override with --steps, --guidance-scale, --height, --width):"]
    lines += [f"  {family:5s} {d.source}" for family, d in EVAL_DEFAULTS.items()]
    lines += [
        "  --model tiny uses the same steps and guidance at "
        + ", ".join(f"{f} {h}x{w}" + (f"x{n}" if n else "") for f, (h, w, n) in TINY_SIZES.items())
    ]
    lines += ["", "checklist judges (--judge): unigenbench-eval (local, Qwen3-VL-32B), unigenbench-eval-qwen72b,"]
    lines += ["  unigenbench-eval-remote (a vLLM server), or any preset of type checklist-judge"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- validation


def _checked_setup(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Everything that can be checked without loading a model; returns the run's plan."""
    if not (args.model and args.family and args.prompts and args.out):
        parser.error("--model, --family, --prompts and --out are required (or --list, or the compare command)")
    for flag, value, minimum in (
        ("--limit", args.limit, 1),
        ("--images-per-prompt", args.images_per_prompt, 1),
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--bootstrap", args.bootstrap, 0),
        ("--grid-prompts", args.grid_prompts, 0),
    ):
        if value is not None and value < minimum:
            raise ConfigError(f"{flag} must be >= {minimum}, got {value}")
    if args.guidance_scale is not None and args.guidance_scale < 0:
        raise ConfigError(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    editing = args.family in EDITING_FAMILIES
    left_out: list[str] = []
    if editing:
        prompt_set, left_out = load_edit_prompt_set(
            args.prompts, args.prompt_field, args.image_field or "image", args.limit
        )
    elif args.image_field is not None:
        raise ConfigError(
            f"--image-field is for editing families ({', '.join(EDITING_FAMILIES)}); {args.family} generates from "
            "text alone: remove it"
        )
    else:
        prompt_set = load_prompt_set(args.prompts, args.prompt_field).limited(args.limit)
    media_kind = "video" if args.family in generation.VIDEO_FAMILIES else "image"
    if prompt_set.media_kind is not None and prompt_set.media_kind != media_kind:
        raise ConfigError(
            f"--prompts {args.prompts} is a {prompt_set.media_kind} prompt set, but --family {args.family} generates "
            f"{media_kind}s; use a {media_kind} set or pass the prompts as a file"
        )
    defaults = EVAL_DEFAULTS[args.family]
    height, width, frames = (
        TINY_SIZES[args.family] if args.model == "tiny" else (defaults.height, defaults.width, defaults.num_frames)
    )
    height, width = args.height or height, args.width or width
    video = args.family in generation.VIDEO_FAMILIES
    frames = args.num_frames if args.num_frames is not None else (frames if video else None)
    generation.check_size(args.family, args.model, height, width, frames)
    lora: LoraInfo | None = None
    if args.lora is not None:
        lora = generation.inspect_lora(args.lora)
        generation.check_lora_family(lora, args.family)
    rewards = [parse_reward_spec(spec) for spec in args.reward]
    names = [name for name, _ in rewards]
    if len(set(names)) != len(names):
        raise ConfigError(f"each --reward may be given once, got {names}")
    for name in names:
        cls = resolve_reward(name)[0]  # unknown names raise here, before any weights load
        if cls.kind == "pairwise":
            raise ConfigError(
                f"--reward {name}: a pairwise judge has no per-sample score; use pointwise rewards here (compare two "
                "runs with `gen_bench.py compare`)"
            )
        if media_kind not in cls.media_kinds:
            raise ConfigError(f"--reward {name} scores {sorted(cls.media_kinds)}, not {media_kind}s")
        if cls.uses_source and not editing:
            raise ConfigError(
                f"--reward {name} compares an edit with its source image; {args.family} generates from text: use it "
                f"with an editing family ({', '.join(EDITING_FAMILIES)}) and an editing prompt file"
            )
    judge_remote = False
    if args.judge is not None:
        from mmreward.rewards.vlm.checklist import ChecklistJudge

        cls, judge_options, _ = resolve_reward(args.judge)
        if not issubclass(cls, ChecklistJudge):
            raise ConfigError(
                f"--judge {args.judge} is a {cls.__name__}, not a checklist judge; use unigenbench-eval, "
                "unigenbench-eval-remote or a preset of type checklist-judge"
            )
        if not prompt_set.has_checklists:
            raise ConfigError(
                f"--judge needs test points per prompt; --prompts {args.prompts} has none (use unigenbench, or a CSV "
                "in UniGenBench's layout)"
            )
        judge_remote = judge_options.get("backend") == "chat"
        if args.judge_mode == "logits" and judge_remote:
            raise ConfigError("--judge-mode logits needs a local judge (remote judges write their verdicts)")
    elif args.judge_mode is not None:
        raise ConfigError("--judge-mode without --judge")
    if args.diversity_features not in ("pixels", "none"):
        resolve_reward(args.diversity_features)  # a CLIP-family reward; its image encoder is checked once loaded
    if args.compare_to is not None and not (args.compare_to / "results.json").is_file():
        raise ConfigError(f"--compare-to {str(args.compare_to)!r} holds no results.json (run gen_bench there first)")
    device, dtype = resolve_device_and_dtype(args.device, args.dtype)
    local = Path(args.model).expanduser()
    settings = GenerationSettings(
        family=args.family,
        model=str(local.resolve()) if local.is_dir() else args.model,  # one spelling per local directory
        lora=str(lora.directory.resolve()) if lora else None,
        lora_digest=lora.digest if lora else None,
        num_steps=args.steps or defaults.num_steps,
        guidance_scale=args.guidance_scale if args.guidance_scale is not None else defaults.guidance_scale,
        height=height,
        width=width,
        num_frames=frames,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        dtype=dtype,
    )
    _check_run_file(args.out, settings)
    return {
        "prompts": prompt_set,
        "left_out": left_out,
        "settings": settings,
        "lora": lora,
        "rewards": rewards,
        "device": device,
        "judge_remote": judge_remote,
    }


def _check_run_file(out: Path, settings: GenerationSettings) -> None:
    """A run directory belongs to one set of generation settings: samples made otherwise are never mixed in."""
    run_file = out / RUN_FILE
    if run_file.is_file():
        try:
            stored = json.loads(run_file.read_text(encoding="utf-8"))["settings"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"cannot read {str(run_file)!r} ({err!r}); use another --out or remove it") from err
        changed = settings.differences(stored)
        if changed:
            raise ConfigError(
                f"{str(out)!r} holds samples generated with other settings ({'; '.join(changed)}); use another --out "
                "or remove that directory"
            )


# ------------------------------------------------------------------------------------------------- generation


def _generate(plan: dict[str, Any], samples: list[Sample], args: argparse.Namespace, processes: Processes) -> int:
    """Draw the samples whose files are missing (this process's batches of them, :func:`batch_share`); the
    generator is loaded only when there are some. Returns how many were missing."""
    missing = [s for s in samples if not s.path.is_file()]
    barrier(processes)  # every process has listed the same missing samples before any writes one
    share = [missing[i] for i in batch_share(len(missing), args.batch_size, processes)]
    if not share:
        return len(missing)
    from mmreward.flow.models import load_flow_model
    from mmreward.train.lora import load_lora

    settings: GenerationSettings = plan["settings"]
    device = plan["device"]
    if processes.world > 1 and device == "cuda":  # one GPU per process of the machine
        device = f"cuda:{processes.local_rank}"
    model = load_flow_model(settings.family, settings.model, device=device, dtype=settings.dtype)
    model.check_size(settings.height, settings.width, settings.num_frames)
    lora: LoraInfo | None = plan["lora"]
    if lora is not None:
        from mmreward.train.lora import load_lora

        # Wan2.2's experts have the same layers: the first expert's shapes check either expert's file
        generation.check_lora_shapes(model.pipeline.transformer, lora.weight_file)
        with _quiet_diffusers():  # it warns that the LoRA has no text-encoder layers, which is expected
            load_lora(model.pipeline, lora.directory, weight_name=lora.weight_file.name)
    generation.generate_samples(
        model,
        share,
        settings,
        batch_size=args.batch_size,
        progress=not args.no_progress and processes.is_main,
        manifest=generation.rank_manifest(processes.rank) if processes.world > 1 else generation.MANIFEST,
    )
    del model
    _free_memory()
    return len(missing)


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------- scoring


def _overrides(plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = resolve_device_and_dtype(plan["device"], args.reward_dtype)
    return {"device": device, "dtype": dtype}


def _score_reward(
    spec: str, samples: list[Sample], out: Path, overrides: dict[str, Any], args: argparse.Namespace
) -> tuple[ScoreCache, dict[str, Any], str]:
    """Score every sample with one reward (resuming from its cache; no model at all when it is complete)."""
    from mmreward import load_reward
    from mmreward.evaluation.score_cache import ScoringStats

    items = [MediaItem(s.prompt, s.path, _key(s, out), s.source) for s in samples]
    request = request_digest(spec, overrides, [i.key for i in items])
    cache = finished_cache(out / "cache", request)
    if cache is not None and not (args.retry_failed and any(r["error"] for r in cache.records.values())):
        stats = ScoringStats(total=len(items), cached=len(items))
        stats.failed = sum(cache.get(i.key)["error"] is not None for i in items)
        stats.errors = [f"{i.path}: {cache.get(i.key)['error']}" for i in items if cache.get(i.key)["error"]][:5]
        return cache, stats.to_dict(), cache.fingerprint.get("kind", "pointwise")
    reward = load_reward(spec, **overrides)
    cache = ScoreCache(out / "cache", reward.name, reward_fingerprint(reward, spec))
    stats = score_into_cache(reward, items, cache, retry_failed=args.retry_failed, progress=not args.no_progress)
    mark_finished(out / "cache", request, cache)
    kind = reward.kind
    del reward
    _free_memory()
    return cache, stats.to_dict(), kind


def _key(sample: Sample, out: Path) -> str:
    """A sample's score-cache key: its file and prompt, and for an edit its source file."""
    return media_key(sample.prompt, sample.path, out, sample.source)


def _run_judge(
    plan: dict[str, Any], samples: list[Sample], out: Path, overrides: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    from mmreward import load_reward
    from mmreward.evaluation.score_cache import ScoringStats

    checklists = {item.id: tuple((p.name, p.description) for p in item.checklist) for item in plan["prompts"].items}
    items = [
        ChecklistItem(
            s.prompt, s.path, checklists[s.prompt_id], checklist_key(s.prompt, checklists[s.prompt_id], s.path, out)
        )
        for s in samples
    ]
    judge_overrides = dict(overrides)
    if args.judge_mode is not None and not plan["judge_remote"]:  # remote judges always write ("generate")
        judge_overrides["mode"] = args.judge_mode
    request = request_digest(args.judge, judge_overrides, [i.key for i in items])
    cache = finished_cache(out / "cache", request)
    if cache is not None and not (args.retry_failed and any(r["error"] for r in cache.records.values())):
        stats = ScoringStats(total=len(items), cached=len(items))
        mode, template = cache.fingerprint["checklist_mode"], cache.fingerprint["template"]
    else:
        judge = load_reward(args.judge, **judge_overrides)
        fingerprint = {
            **reward_fingerprint(judge, args.judge),
            "checklist_mode": judge.mode,
            "template": judge.template.name,
            "template_file": str(judge.template.source),
        }
        cache = ScoreCache(out / "cache", judge.name, fingerprint)
        stats = check_into_cache(judge, items, cache, retry_failed=args.retry_failed, progress=not args.no_progress)
        mark_finished(out / "cache", request, cache)
        mode, template = judge.mode, judge.template.name
        del judge
        _free_memory()
    verdicts, errors = {}, []
    for s, item in zip(samples, items, strict=True):
        record = cache.get(item.key)
        verdicts[s.id] = {k: record[k] for k in ("points", "passed", "p_yes", "error")}
        if record["error"] and len(errors) < 5:
            errors.append(f"{s.path.name}: {record['error']}")
    stats = stats.to_dict() | {"failed": sum(v["error"] is not None for v in verdicts.values()), "errors": errors}
    return {"spec": args.judge, "mode": mode, "template": template, "scoring": stats, "verdicts": verdicts}


def _diversity(
    samples: list[Sample], out: Path, overrides: dict[str, Any], args: argparse.Namespace, per_prompt: int
) -> dict[str, Any] | None:
    """Per-prompt diversity (cached per prompt under the feature extractor's fingerprint)."""
    spec = args.diversity_features
    if spec == "none" or per_prompt < 2:
        return None
    by_prompt: dict[str, list[Sample]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt_id, []).append(s)
    # A prompt's key names its samples (paths and sizes), so a prompt with a regenerated sample is measured again.
    keys = {
        pid: hashlib.sha1("/".join(media_key(s.prompt, s.path, out) for s in group).encode()).hexdigest()
        for pid, group in by_prompt.items()
    }
    request = request_digest(f"diversity:{spec}", overrides if spec != "pixels" else {}, keys.values())
    cache = finished_cache(out / "cache", request)
    if cache is None:
        if spec == "pixels":
            features, fingerprint = pixel_features, {"diversity": "pixels", "size": 32, "frames": 4}
            reward = None
        else:
            from mmreward import load_reward

            reward = load_reward(spec, **overrides)
            features = ImageEmbeddingFeatures(reward)
            fingerprint = {"diversity": reward_fingerprint(reward, spec)}
        cache = ScoreCache(out / "cache", f"diversity-{spec}", fingerprint)
        todo = [pid for pid in by_prompt if keys[pid] not in cache]
        from tqdm.auto import tqdm

        for pid in tqdm(todo, desc="diversity", unit="prompt", disable=args.no_progress or not todo):
            group = by_prompt[pid]
            value = per_group_diversity(features(generation.load_samples(group)), [pid] * len(group))[pid]
            cache.add([{"key": keys[pid], "prompt_id": pid, "value": value if math.isfinite(value) else None}])
        mark_finished(out / "cache", request, cache)
        del reward
        _free_memory()
    values = {pid: cache.get(keys[pid])["value"] for pid in by_prompt}
    as_own = {pid: pid for pid in values}
    return {
        "features": spec,
        "mean": gen_results.mean_estimate(values, as_own, n_boot=args.bootstrap),
        "per_prompt": values,
    }


# ----------------------------------------------------------------------------------------------- report files


def _grid_rows(run: dict[str, Any], root: Path, prompts: list[str]) -> list[list[torch.Tensor | None]]:
    by_id = {(s["prompt_id"], s["index"]): s for s in run["samples"]}
    rows = []
    for pid in prompts:
        row = []
        for k in range(min(GRID_COLUMNS, run["prompt_set"]["images_per_prompt"])):
            entry = by_id.get((pid, k))
            if entry is None:
                row.append(None)
                continue
            sample = Sample(pid, k, entry["prompt"], root / entry["path"])
            media = generation.load_samples([sample], num_frames=3)[0]
            row.append(media[1] if media.ndim == 4 else media)  # videos: the middle of three frames
        rows.append(row)
    return rows


def _prompt_text(run: dict[str, Any]) -> dict[str, str]:
    return {s["prompt_id"]: s["prompt"] for s in run["samples"]}


def write_run_files(run: dict[str, Any], out: Path, grid_prompts: int) -> None:
    grids, plots = [], []
    prompts = list(dict.fromkeys(s["prompt_id"] for s in run["samples"]))[:grid_prompts]
    if prompts:
        columns = min(GRID_COLUMNS, run["prompt_set"]["images_per_prompt"])
        plot_image_grid(
            out / "samples_grid.png",
            _grid_rows(run, out, prompts),
            row_labels=[_prompt_text(run)[p] for p in prompts],
            column_labels=[f"#{k}" for k in range(columns)],
            title=f"{run['settings']['model']} samples",
        )
        grids.append("samples_grid.png")
    if run.get("judge") and run["judge"]["unigenbench"]["primary"]:
        u = run["judge"]["unigenbench"]
        series = {"score": [{"value": e["accuracy"]} for e in u["primary"].values()]}
        plot_grouped_bars(
            out / "unigenbench.png",
            list(u["primary"]),
            series,
            ylabel="score (%)",
            title=f"UniGenBench primary dimensions (Overall {100 * u['overall']['value']:.2f})",
        )
        plots.append("unigenbench.png")
    run["grids"], run["plots"] = grids, plots


def write_comparison(
    base: dict[str, Any], other: dict[str, Any], roots: tuple[Path, Path], out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """comparison.json, comparison.md, the side-by-side grid and plots of two runs (``roots``: their directories)."""
    names = tuple(args.names)
    comparison = gen_results.compare_runs(base, other, n_boot=args.bootstrap)
    if comparison["shared_samples"] == 0:
        raise ConfigError("the two runs share no samples (prompt ids and sample indices); compare runs of one set")
    base_root, other_root = roots
    shared = {s["prompt_id"] for s in base["samples"]} & {s["prompt_id"] for s in other["samples"]}
    prompts = [p for p in dict.fromkeys(s["prompt_id"] for s in other["samples"]) if p in shared][: args.grid_prompts]
    files = []
    if prompts:
        left, right = _grid_rows(base, base_root, prompts), _grid_rows(other, other_root, prompts)
        columns = min(GRID_COLUMNS, base["prompt_set"]["images_per_prompt"], other["prompt_set"]["images_per_prompt"])
        plot_image_grid(
            out / "side_by_side.png",
            [a[:columns] + b[:columns] for a, b in zip(left, right, strict=True)],
            row_labels=[_prompt_text(other)[p] for p in prompts],
            column_labels=[f"{names[0]} #{k}" for k in range(columns)] + [f"{names[1]} #{k}" for k in range(columns)],
            title=f"{names[0]} (left) vs {names[1]} (right): same prompts, same noise",
            gap_after=columns,
        )
        files.append("side_by_side.png")
    judge = comparison.get("judge")
    dims = [d for d in judge["base"]["primary"] if d in judge["other"]["primary"]] if judge else []
    if dims:
        series = {
            name: [{"value": scores["primary"][d]["accuracy"]} for d in dims]
            for name, scores in zip(names, (judge["base"], judge["other"]), strict=True)
        }
        plot_grouped_bars(out / "unigenbench_comparison.png", dims, series, title="UniGenBench", ylabel="score (%)")
        files.append("unigenbench_comparison.png")
    wins = {n: r["paired"]["beats_base"] for n, r in comparison["rewards"].items() if r["paired"]}
    if wins:
        plot_grouped_bars(
            out / "reward_wins.png",
            list(wins),
            {f"{names[1]} beats {names[0]}": list(wins.values())},
            title=f"Samples where {names[1]} beats {names[0]} (same prompt and noise)",
            ylabel="share (%)",
            reference=0.5,
        )
        files.append("reward_wins.png")
    comparison["files"] = files
    comparison["runs"] = {names[0]: str(base_root), names[1]: str(other_root)}
    write_json(out / "comparison.json", comparison)
    write_text(out / "comparison.md", gen_results.render_comparison_markdown(base, other, comparison, names))
    return comparison


# --------------------------------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    plan = _checked_setup(args, parser)
    out: Path = args.out
    prompt_set: PromptSet = plan["prompts"]
    settings: GenerationSettings = plan["settings"]
    media_kind = "video" if settings.family in generation.VIDEO_FAMILIES else "image"
    if plan["left_out"]:
        shown = "".join(f"\n  {line}" for line in plan["left_out"][:10])
        more = f"\n  ... and {len(plan['left_out']) - 10} more" if len(plan["left_out"]) > 10 else ""
        print(f"left out {len(plan['left_out'])} line(s) of {args.prompts}:{shown}{more}", file=sys.stderr)
    samples = generation.plan_samples(prompt_set, args.images_per_prompt, out / SAMPLES_DIR, media_kind)
    generation.check_existing_samples(samples)
    # Launched on several processes (torchrun, accelerate launch), each draws its share of the missing samples;
    # rank 0 merges the processes' manifests and goes on alone with scoring and the report.
    processes = launched_processes()
    start_group(processes)
    try:
        if processes.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / RUN_FILE, {"settings": settings.to_dict(), "mmreward_version": __version__})
        generated = _generate(plan, samples, args, processes)
        barrier(processes)
    finally:
        end_group(processes)
    if not processes.is_main:
        return 0
    generation.merge_manifests({s.path.parent for s in samples})

    overrides = _overrides(plan, args)
    result: dict[str, Any] = {
        "mmreward_version": __version__,
        "command": f"python eval/gen_bench.py {shlex.join(argv)}",
        "output_dir": str(out.resolve()),
        "settings": settings.to_dict() | {"device": plan["device"]},
        "eval_defaults": EVAL_DEFAULTS[settings.family].source,
        "prompt_set": {
            "name": prompt_set.name,
            "source": str(prompt_set.source),
            "media_kind": media_kind,
            "prompts": len(prompt_set),
            "images_per_prompt": args.images_per_prompt,
            "limit": args.limit,
            "left_out": plan["left_out"],
        },
        "bootstrap": {"replicates": args.bootstrap, "seed": 0, "confidence": 0.95},
        "generation": {"total": len(samples), "generated": generated},
        "samples": [
            {
                "id": s.id,
                "prompt_id": s.prompt_id,
                "index": s.index,
                "prompt": s.prompt,
                "path": s.path.relative_to(out).as_posix(),
                **({"source": str(s.source)} if s.source is not None else {}),
            }
            for s in samples
        ],
        "rewards": {},
    }
    prompt_of = {s.id: s.prompt_id for s in samples}
    labels = _labels([spec for spec, _ in plan["rewards"]])
    for (spec, weight), label in zip(plan["rewards"], labels, strict=True):
        cache, stats, kind = _score_reward(spec, samples, out, overrides, args)
        scores = {s.id: cache.get(_key(s, out))["score"] for s in samples}
        result["rewards"][label] = {
            "spec": spec,
            "weight": weight,
            "kind": kind,
            "cache": cache.path.name,
            "scoring": stats,
            "mean": gen_results.mean_estimate(scores, prompt_of, n_boot=args.bootstrap),
            "scores": scores,
        }
    if len(plan["rewards"]) > 1:
        weights = {name: r["weight"] for name, r in result["rewards"].items()}
        total = {
            s.id: (
                sum(w * result["rewards"][n]["scores"][s.id] for n, w in weights.items())
                if all(result["rewards"][n]["scores"][s.id] is not None for n in weights)
                else None
            )
            for s in samples
        }
        result["total"] = {
            "weights": weights,
            "scores": total,
            "failed": sum(v is None for v in total.values()),
            "mean": gen_results.mean_estimate(total, prompt_of, n_boot=args.bootstrap),
        }
    if args.judge is not None:
        result["judge"] = _run_judge(plan, samples, out, overrides, args)
        result["judge"]["unigenbench"] = gen_results.summarize_judge(result, n_boot=args.bootstrap)
    result["diversity"] = _diversity(samples, out, overrides, args, args.images_per_prompt)

    write_run_files(result, out, args.grid_prompts)
    write_json(out / "results.json", result)
    write_text(out / "report.md", gen_results.render_run_markdown(result))
    _print_summary(result, out)
    if args.compare_to is not None:
        base = json.loads((args.compare_to / "results.json").read_text(encoding="utf-8"))
        comparison = write_comparison(base, result, (args.compare_to, out), out, args)
        _print_comparison(comparison, tuple(args.names), out)
    failed = sum(r["scoring"]["failed"] for r in result["rewards"].values())
    failed += result["judge"]["scoring"]["failed"] if result.get("judge") else 0
    if (failed or plan["left_out"]) and args.on_error == "fail":
        reasons = [f"{failed} item(s) failed to score"] if failed else []
        reasons += [f"{len(plan['left_out'])} prompt line(s) were left out"] if plan["left_out"] else []
        print(f"error: {' and '.join(reasons)} (--on-error fail); see {out / 'report.md'}", file=sys.stderr)
        return 1
    return 0


def _labels(specs: list[str]) -> list[str]:
    """Short names for tables: a preset file's or directory's stem, a class name; numbered when they repeat."""
    labels = []
    for spec in specs:
        path = Path(spec)
        if ":" in spec and not path.exists():
            labels.append(spec.rpartition(":")[2])
        else:
            labels.append((path.stem if path.suffix else path.name) or spec)
    return [f"{label} ({i + 1})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def _print_summary(result: dict[str, Any], out: Path) -> None:
    g = result["generation"]
    print(f"{g['total']} samples ({g['generated']} generated now); report: {out / 'report.md'}")
    for name, r in result["rewards"].items():
        mean = r["mean"]["value"] if r["mean"] else math.nan
        s = r["scoring"]
        print(f"  {name}: mean {mean:.4f} (newly scored {s['newly_scored']}, failed {s['failed']})")
    if result.get("judge"):
        u, s = result["judge"]["unigenbench"], result["judge"]["scoring"]
        print(
            f"  UniGenBench Overall {100 * u['overall']['value']:.2f} ({u['overall']['dimensions']} dimensions; newly "
            f"checked {s['newly_scored']}, failed {s['failed']})"
        )
    if result.get("diversity") and result["diversity"]["mean"]:
        print(f"  diversity ({result['diversity']['features']}): {result['diversity']['mean']['value']:.4f}")


def _print_comparison(comparison: dict[str, Any], names: tuple[str, str], out: Path) -> None:
    print(f"{names[1]} vs {names[0]} on {comparison['shared_samples']} shared samples: {out / 'comparison.md'}")
    for name, r in comparison["rewards"].items():
        if r["paired"]:
            gain, wins = r["paired"]["gain"], r["paired"]["beats_base"]
            print(f"  {name}: gain {gain['value']:+.4f}, {names[1]} beats {names[0]} on {100 * wins['value']:.1f}%")
    if comparison.get("judge"):
        gain = comparison["judge"]["overall_gain"]
        print(f"  UniGenBench Overall gain {100 * gain['value']:+.2f} points")


def compare(argv: list[str]) -> int:
    args = build_compare_parser().parse_args(argv)
    runs = []
    for directory in (args.base, args.other):
        results = directory / "results.json"
        if not results.is_file():
            raise ConfigError(f"{str(directory)!r} holds no results.json (run gen_bench there first)")
        runs.append(json.loads(results.read_text(encoding="utf-8")))
    args.out.mkdir(parents=True, exist_ok=True)
    comparison = write_comparison(runs[0], runs[1], (args.base, args.other), args.out, args)
    _print_comparison(comparison, tuple(args.names), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["compare"]:
            return compare(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.list:
            print(_list())
            return 0
        return run(args, parser, argv)
    except MMRewardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; samples and scores so far are kept: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
