"""The ``mmreward`` command: ``score`` media with rewards, ``list`` the registry, ``serve`` a reward over HTTP,
``generate`` with reward guidance.

    mmreward score photos/ --prompt "a cat" --reward pickscore --reward jpeg-compressibility=0.1 --output s.jsonl
    mmreward list
    mmreward serve --reward pickscore --port 8000
    mmreward generate --model stabilityai/stable-diffusion-3.5-medium --family sd3 --prompt "a cat" \
        --guide pickscore --method best-of-n --budget 112 --out samples/
    mmreward generate --model Qwen/Qwen-Image-Edit-2509 --family qwenimage-edit --prompt "make it snow" \
        --image street.png --guide editreward --method best-of-n --out edits/

Exit codes (shared by the eval programs): 0 success; 1 ``--on-error fail`` and some input failed (the first bad
input is named; inputs that decoded were still scored and written); 2 the run could not start (bad arguments,
unknown reward, missing weights, prompt count mismatch), as argparse does for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmreward.devices import resolve_device_and_dtype
from mmreward.errors import MMRewardError
from mmreward.family_names import EDITING_FAMILIES, FAMILIES, OPTIONAL_IMAGE_FAMILIES
from mmreward.score_inputs import InputError

OUTPUT_FORMATS = (".jsonl", ".csv", ".parquet")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmreward", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser(
        "score",
        help="score images and videos with one or more rewards",
        description="Score media files with rewards. Inputs are files, directories, glob patterns, or "
        "manifests (.csv / .jsonl with a 'path' and optional 'prompt' and 'source' columns). Editing rewards "
        "(editreward, rationalrewards-edit, ...) compare each edit with its source image: a manifest's 'source' "
        "column or --source.",
    )
    score.add_argument("inputs", nargs="+", help="files, directories, globs or manifests")
    prompts = score.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="one prompt for every item")
    prompts.add_argument("--prompts", metavar="FILE", help="prompts, one per line, in input order")
    score.add_argument(
        "--source",
        metavar="FILE",
        help="the image every input was edited from, for editing rewards (a manifest's 'source' column wins)",
    )
    score.add_argument(
        "--reward",
        action="append",
        metavar="NAME[=WEIGHT]",
        help="reward preset, preset YAML, saved directory or module:Class, with an optional weight in the total "
        "(repeatable; default: clip-score)",
    )
    score.add_argument("--batch-size", type=int, default=32, help="items per model call (default 32)")
    score.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    score.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 (default: bf16 on cuda)")
    frames = score.add_mutually_exclusive_group()
    frames.add_argument("--fps", type=float, help="sample videos at this frame rate")
    frames.add_argument("--num-frames", type=int, help="sample this many frames per video")
    score.add_argument("--output", "-o", help="output file: .jsonl, .csv or .parquet (default: JSONL on stdout)")
    score.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="skip: record failed items and go on; fail: exit 1 naming the first bad input (default skip)",
    )
    score.add_argument("--workers", type=int, default=None, help="loader worker processes (default: cores - 1)")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")

    serve = sub.add_parser(
        "serve",
        help="serve a reward over HTTP/JSON with micro-batching",
        description="Serve one reward over HTTP/JSON (see mmreward.serve for the protocol); clients use "
        "mmreward.load_reward('http://HOST:PORT'). Binds to loopback unless --host says otherwise.",
    )
    serve.add_argument("--reward", required=True, help="reward preset, preset YAML, saved directory or module:Class")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    serve.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 (default: bf16 on cuda)")
    serve.add_argument("--max-batch", type=int, default=32, help="items per model call across requests (default 32)")
    serve.add_argument("--max-wait-ms", type=float, default=10.0, help="wait for a batch to fill (default 10 ms)")
    serve.add_argument("--max-queue", type=int, default=256, help="pending requests before answering 503")
    serve.add_argument("--max-items", type=int, default=256, help="items per request before answering 413")

    listing = sub.add_parser("list", help="list the registered rewards")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    _add_generate_parser(sub)
    return parser


def _add_generate_parser(sub: Any) -> None:
    gen = sub.add_parser(
        "generate",
        help="generate images or videos steered by rewards (no training)",
        description="Sample a rectified-flow generator (SD3, FLUX, Wan, Qwen-Image, Z-Image, FLUX.2, ...) or "
        "edit images (Qwen-Image-Edit, FLUX.1 Kontext) with reward guidance: "
        "Flow-NRG with a latent reward (align/train_latent_reward.py), pixel-space gradient guidance with a "
        "differentiable reward, best-of-N over seeds, or search that prunes candidates at intermediate steps. "
        "--budget counts velocity evaluations (transformer forward passes, one per sample per step) per output. "
        "Editing families take their source images from --image (one image for every prompt) or from an editing "
        "prompt file (--prompts with 'prompt' and 'image' columns); rewards that compare an edit with its source "
        "(editreward, rationalrewards-edit) are given it, and rewards.jsonl names each output's source.",
    )
    gen.add_argument("--model", required=True, help="hub id, local pipeline directory, or 'tiny' (tiny random)")
    gen.add_argument(
        "--family",
        choices=FAMILIES,
        help="generator family (default: from the directory's model_index.json; sd3 for tiny)",
    )
    prompts = gen.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    prompts.add_argument(
        "--prompts",
        metavar="FILE",
        help="prompts: a .txt file, one per line, or a .csv/.tsv/.jsonl/.json/.parquet table with a 'prompt' column; "
        "editing families without --image: a .jsonl/.csv/.tsv with 'prompt' and 'image' (the source image's path, "
        "relative to the file), one edit per line (a bad line is left out with its line number)",
    )
    gen.add_argument(
        "--image",
        metavar="FILE",
        help=f"editing families ({', '.join(EDITING_FAMILIES)}): the source image every prompt edits (image-to-video: "
        f"starts from); {', '.join(OPTIONAL_IMAGE_FAMILIES)}: the first frame of every video (optional)",
    )
    gen.add_argument(
        "--guide",
        action="append",
        required=True,
        metavar="REWARD[=WEIGHT]",
        help="reward to steer with: a latent reward directory (nrg), a reward name, preset YAML or "
        "module:Class (repeatable; weights multiply each reward in the total)",
    )
    gen.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=WEIGHT",
        help="weight of a latent reward's dimension (e.g. --dim TA=0.8); others keep 1",
    )
    gen.add_argument("--method", choices=("nrg", "pixel", "best-of-n", "search"), default="best-of-n")
    gen.add_argument(
        "--budget",
        type=int,
        help="velocity evaluations per output (default: steps for nrg/pixel, 4 x steps for best-of-n/search)",
    )
    gen.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's; 8 for tiny)")
    gen.add_argument("--scale", type=float, default=0.5, help="guidance scale lambda (nrg, pixel; default 0.5)")
    gen.add_argument(
        "--schedule",
        choices=("constant", "sigma", "one_minus_sigma", "classifier"),
        default="constant",
        help="g(t) of the velocity shift (default constant)",
    )
    gen.add_argument("--no-normalize", action="store_true", help="use the raw reward gradient (default: unit RMS)")
    gen.add_argument(
        "--through-model",
        action="store_true",
        help="pixel: backpropagate through the transformer too (one backward per step)",
    )
    gen.add_argument("--prune-at", default="0.25,0.5", help="search: fractions of the steps where it prunes")
    gen.add_argument("--keep", type=float, default=0.5, help="search: fraction kept at each pruning (default 0.5)")
    gen.add_argument("--num-outputs", type=int, default=1, help="outputs per prompt (seeds seed, seed+1, ...)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--height", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--num-frames", type=int, help="video models: frames (4k + 1)")
    gen.add_argument("--fps", type=float, default=16.0, help="frame rate of written videos (default 16, Wan's)")
    gen.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the pipeline's)")
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--batch-size", type=int, default=8, help="candidates per transformer call (default 8)")
    gen.add_argument("--out", required=True, help="output directory: media files and rewards.jsonl")
    gen.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available)")
    gen.add_argument("--dtype", default="auto", help="transformer and reward dtype (default: bf16 on cuda)")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")


def _write_rows(rows: list[dict[str, Any]], output: str | None) -> None:
    """Write rows to ``output`` atomically (temporary file, then rename), or JSONL to stdout."""
    if output is None:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    path = Path(output)
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


def _summary(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} items", title_justify="left")
    for header in ("reward", "mean", "std", "min", "max", "scored", "failed"):
        table.add_column(header, justify="left" if header == "reward" else "right")
    for column in columns:
        values = [row[column] for row in rows if row.get(column) is not None]
        if values:
            std = statistics.pstdev(values) if len(values) > 1 else 0.0
            stats = [f"{statistics.fmean(values):.4g}", f"{std:.3g}", f"{min(values):.4g}", f"{max(values):.4g}"]
        else:
            stats = ["-"] * 4
        table.add_row(column, *stats, str(len(values)), str(len(rows) - len(values)))
    Console(stderr=True).print(table)


def _score(args: argparse.Namespace) -> int:
    from mmreward.evaluation.score_cache import reward_fingerprint
    from mmreward.rewards.mix import parse_reward_spec
    from mmreward.rewards.registry import load_reward, resolve_reward
    from mmreward.score_inputs import Item, assign_prompts, assign_source, expand_inputs, read_prompts_file
    from mmreward.score_shards import (
        PartWriter,
        barrier,
        end_group,
        launched_processes,
        merged_rows,
        my_share,
        parts_dir,
        read_parts,
        remove_parts,
        row_key,
        start_group,
    )
    from mmreward.scoring import score_items

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_frames is not None and args.num_frames < 1:
        raise InputError(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        raise InputError(f"--fps must be a positive number of frames per second, got {args.fps}")
    if args.output and Path(args.output).suffix not in OUTPUT_FORMATS:
        raise InputError(f"--output must end in one of {', '.join(OUTPUT_FORMATS)}, got {args.output!r}")
    if args.output and args.output.endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise InputError("--output .parquet needs pyarrow: pip install 'mmreward[output]'") from err
    specs = [parse_reward_spec(s) for s in (args.reward or ["clip-score"])]
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise InputError(f"a reward was given twice: {names}")

    # Everything that can be checked without weights is checked before any model loads.
    expansion = expand_inputs(args.inputs)
    items = expansion.items
    prompts = read_prompts_file(args.prompts) if args.prompts else None
    assign_prompts(items, args.prompt, prompts)
    if args.source is not None:
        assign_source(items, args.source)
    bad = next((item for item in items if item.error), None)
    if bad is not None and args.on_error == "fail":
        print(f"mmreward: error: {bad.path}: {bad.error}", file=sys.stderr)
        return 1
    for name in names:
        cls = resolve_reward(name)[0]
        if cls.kind == "pairwise":
            raise InputError(
                f"reward {name!r} is a pairwise judge: it compares media and has no per-item score; use "
                "judge.compare(...) or mmreward.win_rate(...) from Python, or a pointwise reward here"
            )
        if cls.uses_prompt and any(item.prompt is None and item.error is None for item in items):
            raise InputError(
                f"reward {name!r} scores media against a prompt; give --prompt, --prompts, or a manifest with a "
                "'prompt' column"
            )
        sourceless = [item for item in items if item.source is None and item.error is None]
        if cls.uses_source and sourceless:
            raise InputError(
                f"reward {name!r} compares each edit with its source image, but {len(sourceless)} of {len(items)} "
                f"items have none (first: {sourceless[0].path!r}); give --source FILE (one image for every input) "
                "or a manifest with a 'source' column"
            )

    processes = launched_processes()
    if processes.world > 1 and not args.output:
        raise InputError(
            f"scoring on {processes.world} processes needs --output: rank 0 merges the processes' rows into it"
        )
    device, dtype = resolve_device_and_dtype(args.device, args.dtype)
    if processes.world > 1 and device == "cuda":  # one GPU per process of the machine
        device = f"cuda:{processes.local_rank}"
    overrides: dict[str, Any] = {"device": device, "dtype": dtype, "batch_size": args.batch_size}
    if args.fps is not None:
        overrides.update(video_fps=args.fps, video_num_frames=None)
    if args.num_frames is not None:
        overrides.update(video_num_frames=args.num_frames, video_fps=None)
    rewards = {}
    weights = {}
    fingerprint = {}
    for name, weight in specs:
        reward = load_reward(name, **overrides)
        rewards[reward.name] = reward
        weights[reward.name] = weight
        fingerprint[reward.name] = {**reward_fingerprint(reward, name), "weight": weight}

    from tqdm import tqdm

    def scored(share: list[Item], show: bool) -> Iterator[dict[str, Any]]:
        valid = sum(item.error is None for item in share)
        with tqdm(total=valid, unit="item", disable=not show, file=sys.stderr, desc="scoring") as bar:
            for row in score_items(
                share, rewards, weights, batch_size=args.batch_size, num_workers=args.workers, progress=bar.update
            ):
                yield row.as_dict()

    if args.output is None:
        rows = list(scored(items, not args.no_progress))
    else:
        # Rows are recorded as scored (per process), so an interrupted run resumes; rank 0 merges them in order.
        directory = parts_dir(args.output)
        keys = [row_key(position, item) for position, item in enumerate(items)]
        start_group(processes)
        try:
            done = read_parts(directory, fingerprint)
            resumed = sum(key in done for key in keys)
            if resumed and processes.is_main:
                print(
                    f"mmreward: resuming: {resumed} of {len(keys)} items already scored in {directory}",
                    file=sys.stderr,
                )
            barrier(processes)  # every process has read the same rows before any writes new ones
            mine = my_share(keys, done, processes)
            writer = PartWriter(directory, processes, fingerprint)
            show = not args.no_progress and processes.is_main
            for position, row in zip(mine, scored([items[i] for i in mine], show), strict=True):
                writer.write(keys[position], row)
            writer.close()
            barrier(processes)
            if not processes.is_main:
                return 0
            rows = list(merged_rows(keys, directory, fingerprint))
            _write_rows(rows, args.output)
            remove_parts(directory)
        finally:
            end_group(processes)
    score_columns = ["score", *rewards] if len(rewards) > 1 else list(rewards)
    dim_columns = list(dict.fromkeys(k for row in rows for k in row if "." in k and k.split(".")[0] in rewards))
    _summary(rows, score_columns + dim_columns)
    for note in expansion.skipped:
        print(f"mmreward: {note}", file=sys.stderr)
    failed = [row for row in rows if row["failed"]]
    if failed:
        print(
            f"mmreward: {len(failed)} of {len(rows)} items failed; first: {failed[0]['path']}: {failed[0]['error']}",
            file=sys.stderr,
        )
        if args.on_error == "fail":
            return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    from mmreward.rewards.registry import find_preset, list_rewards

    entries = [find_preset(name).describe() for name in list_rewards()]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for header in ("name", "kind", "dims", "weights", "differentiable", "raw range", "template"):
        table.add_column(header)
    for e in entries:
        raw = "-" if e["raw_range"] is None else f"{e['raw_range'][0]:g} .. {e['raw_range'][1]:g}"
        dims = ", ".join(e["dims"]) or "-"
        differentiable = "yes" if e["differentiable"] else "no"
        table.add_row(e["name"], e["kind"], dims, str(e["weights"] or "-"), differentiable, raw, e["template"] or "-")
    Console(width=200).print(table)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mmreward.rewards.registry import load_reward
    from mmreward.serve import serve

    for flag in ("max_batch", "max_queue", "max_items"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"mmreward: warning: serving on {args.host}, reachable beyond this machine; the server has no "
            "authentication",
            file=sys.stderr,
        )
    device, dtype = resolve_device_and_dtype(args.device, args.dtype)
    reward = load_reward(args.reward, device=device, dtype=dtype, batch_size=args.max_batch)
    serve(
        reward,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_items=args.max_items,
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from mmreward.evaluation.generation import VIDEO_FAMILIES
    from mmreward.guidance.generate import FAMILY_DEFAULTS, TINY_DEFAULTS, infer_family, plan_guides
    from mmreward.rewards.mix import parse_reward_spec

    # Everything that can be checked without weights is checked before any model loads.
    family = infer_family(args.model, args.family)
    defaults = {**FAMILY_DEFAULTS[family], **(TINY_DEFAULTS if args.model == "tiny" else {})}
    if args.model == "tiny" and family in VIDEO_FAMILIES:
        defaults["num_frames"] = 5
    steps = args.steps or defaults["steps"]
    budget = args.budget or (steps if args.method in ("nrg", "pixel") else 4 * steps)
    dim_weights = dict(_parse_dim(d) for d in args.dim)
    with_sources = family in EDITING_FAMILIES or args.image is not None
    guides = [parse_reward_spec(g) for g in args.guide]
    specs = plan_guides(guides, args.method, family, dim_weights, with_sources=with_sources)
    prompts, sources, left_out = _generation_prompts(args, family)
    for name, value in [
        ("--steps", steps),
        ("--budget", budget),
        ("--num-outputs", args.num_outputs),
        ("--batch-size", args.batch_size),
    ]:
        if value < 1:
            raise MMRewardError(f"{name} must be >= 1, got {value}")
    if budget < steps:
        raise MMRewardError(f"--budget {budget} is below one trajectory: {steps} steps cost {steps} evaluations")
    num_frames = args.num_frames or defaults["num_frames"]
    if family not in VIDEO_FAMILIES and args.num_frames:
        raise MMRewardError(f"--num-frames is for video models; {family} generates images")

    from tqdm import tqdm

    from mmreward.flow.models import load_flow_model
    from mmreward.guidance.generate import build_objective, run
    from mmreward.guidance.sampling import GuidanceSettings, SamplingSettings, SearchSettings

    device, dtype = resolve_device_and_dtype(args.device, args.dtype)
    guidance = GuidanceSettings(
        scale=args.scale, schedule=args.schedule, normalize=not args.no_normalize, through_model=args.through_model
    )
    search = SearchSettings(prune_at=tuple(_parse_fractions(args.prune_at)), keep=args.keep)
    model = load_flow_model(family, args.model, device=device, dtype=dtype)
    sampling = SamplingSettings(
        num_steps=steps,
        height=args.height or defaults["height"],
        width=args.width or defaults["width"],
        num_frames=num_frames,
        guidance_scale=defaults["cfg"] if args.cfg is None else args.cfg,
        negative_prompt=args.negative_prompt,
        batch_size=args.batch_size,
    )
    model.check_size(sampling.height, sampling.width, sampling.num_frames)
    objective = build_objective(specs, dim_weights, device=device, dtype=dtype)
    # Latent shape and text encoder of latent rewards against this generator, before the first step.
    objective.check(model, model.latent_shape(1, sampling.height, sampling.width, sampling.num_frames)[1:])
    total = budget * len(prompts) * args.num_outputs
    with tqdm(total=total, unit="eval", disable=args.no_progress, file=sys.stderr, desc=args.method) as bar:
        rows = run(
            model,
            objective,
            prompts,
            args.method,
            out_dir=args.out,
            budget=budget,
            seed=args.seed,
            num_outputs=args.num_outputs,
            sampling=sampling,
            guidance=guidance,
            search=search,
            fps=args.fps,
            progress=bar.update,
            sources=sources,
        )
    failed = [row for row in rows if row["failed"]]
    print(f"mmreward: wrote {len(rows)} outputs and rewards.jsonl to {args.out}", file=sys.stderr)
    if failed:
        print(
            f"mmreward: {len(failed)} outputs could not be scored; first: {failed[0]['file']}: {failed[0]['error']}",
            file=sys.stderr,
        )
    if left_out:
        print(f"mmreward: {len(left_out)} prompt line(s) were left out; first: {left_out[0]}", file=sys.stderr)
    return 1 if failed or left_out else 0


def _generation_prompts(args: argparse.Namespace, family: str) -> tuple[list[str], list[Path] | None, list[str]]:
    """``(prompts, their source image files or None, editing lines left out)``: text families read prompts alone
    (Wan2.2 TI2V-5B may start every video from ``--image``); editing and image-to-video families take ``--image``
    for every prompt, or read an editing prompt file whose lines each name a source (a malformed line or an
    undecodable image is left out with its line number, reported at once)."""
    from mmreward.data.prompts import load_sources, read_prompts
    from mmreward.evaluation.prompt_sets import load_edit_prompt_set

    if family not in EDITING_FAMILIES:
        if args.image is not None and family not in OPTIONAL_IMAGE_FAMILIES:
            raise MMRewardError(
                f"--image is for editing and image-to-video families "
                f"({', '.join(EDITING_FAMILIES + OPTIONAL_IMAGE_FAMILIES)}); {family} generates from text alone: "
                "remove it"
            )
        if args.image is None:
            return args.prompt or read_prompts(args.prompts), None, []
    if args.image is not None:
        image = Path(args.image).expanduser()
        if not image.is_file():
            raise MMRewardError(f"--image {args.image!r} does not exist; give the source image to edit")
        load_sources([image])  # decodes it now: a bad file is named before any model loads
        prompts = args.prompt or read_prompts(args.prompts)
        return prompts, [image] * len(prompts), []
    if args.prompt:
        raise MMRewardError(
            f"{family} edits a source image: give it with --image, or use --prompts with an editing prompt file "
            "(.jsonl/.csv/.tsv with 'prompt' and 'image' columns)"
        )
    prompt_set, left_out = load_edit_prompt_set(args.prompts)
    for line in left_out:
        print(f"mmreward: left out {line}", file=sys.stderr)
    return [item.prompt for item in prompt_set.items], [item.source for item in prompt_set.items], left_out


def _parse_dim(spec: str) -> tuple[str, float]:
    name, sep, weight = spec.partition("=")
    try:
        return name, float(weight)
    except ValueError:
        raise MMRewardError(f"--dim takes NAME=WEIGHT (e.g. TA=0.8), got {spec!r}") from None


def _parse_fractions(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MMRewardError(f"--prune-at takes comma-separated fractions (e.g. 0.25,0.5), got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    commands = {"score": _score, "list": _list, "serve": _serve, "generate": _generate}
    try:
        return commands[args.command](args)
    except MMRewardError as err:
        print(f"mmreward: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
