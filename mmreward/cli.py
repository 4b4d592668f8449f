"""The ``mmreward`` command: ``score`` media with rewards, ``list`` the registry, ``serve`` a reward over HTTP.

    mmreward score photos/ --prompt "a cat" --reward pickscore --reward jpeg-compressibility=0.1 --output s.jsonl
    mmreward list
    mmreward serve --reward pickscore --port 8000

Exit codes (shared by the eval programs): 0 success; 1 ``--on-error fail`` and some input failed (the first bad
input is named; inputs that decoded were still scored and written); 2 the run could not start (bad arguments,
unknown reward, missing weights, prompt count mismatch), as argparse does for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from mmreward.errors import MMRewardError
from mmreward.score_inputs import InputError

OUTPUT_FORMATS = (".jsonl", ".csv", ".parquet")


def _parse_reward_spec(spec: str) -> tuple[str, float]:
    """``NAME[=WEIGHT]``; NAME may be a path, so only a trailing ``=number`` is a weight."""
    name, sep, weight = spec.rpartition("=")
    if sep:
        try:
            return name, float(weight)
        except ValueError:
            pass
    return spec, 1.0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmreward", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser(
        "score",
        help="score images and videos with one or more rewards",
        description="Score media files with rewards. Inputs are files, directories, glob patterns, or "
        "manifests (.csv / .jsonl with a 'path' and an optional 'prompt' column).",
    )
    score.add_argument("inputs", nargs="+", help="files, directories, globs or manifests")
    prompts = score.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="one prompt for every item")
    prompts.add_argument("--prompts", metavar="FILE", help="prompts, one per line, in input order")
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
    return parser


def _device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


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
    from mmreward.rewards.registry import load_reward, resolve_reward
    from mmreward.score_inputs import assign_prompts, expand_inputs, read_prompts_file
    from mmreward.scoring import score_items

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.output and Path(args.output).suffix not in OUTPUT_FORMATS:
        raise InputError(f"--output must end in one of {', '.join(OUTPUT_FORMATS)}, got {args.output!r}")
    if args.output and args.output.endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise InputError("--output .parquet needs pyarrow: pip install 'mmreward[output]'") from err
    specs = [_parse_reward_spec(s) for s in (args.reward or ["clip-score"])]
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise InputError(f"a reward was given twice: {names}")

    # Everything that can be checked without weights is checked before any model loads.
    items = expand_inputs(args.inputs)
    prompts = read_prompts_file(args.prompts) if args.prompts else None
    assign_prompts(items, args.prompt, prompts)
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

    device, dtype = _device_and_dtype(args.device, args.dtype)
    overrides: dict[str, Any] = {"device": device, "dtype": dtype, "batch_size": args.batch_size}
    if args.fps is not None:
        overrides.update(video_fps=args.fps, video_num_frames=None)
    if args.num_frames is not None:
        overrides.update(video_num_frames=args.num_frames, video_fps=None)
    rewards = {}
    weights = {}
    for name, weight in specs:
        reward = load_reward(name, **overrides)
        rewards[reward.name] = reward
        weights[reward.name] = weight

    from tqdm import tqdm

    valid = sum(item.error is None for item in items)
    with tqdm(total=valid, unit="item", disable=args.no_progress, file=sys.stderr, desc="scoring") as bar:
        rows = [
            row.as_dict()
            for row in score_items(items, rewards, weights, batch_size=args.batch_size, num_workers=args.workers,
                                   progress=bar.update)
        ]  # fmt: skip
    _write_rows(rows, args.output)
    score_columns = ["score", *rewards] if len(rewards) > 1 else list(rewards)
    dim_columns = list(dict.fromkeys(k for row in rows for k in row if "." in k and k.split(".")[0] in rewards))
    _summary(rows, score_columns + dim_columns)
    failed = [row for row in rows if row["failed"]]
    if failed:
        print(f"mmreward: {len(failed)} of {len(rows)} items failed; first: {failed[0]['path']}: "
              f"{failed[0]['error']}", file=sys.stderr)  # fmt: skip
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
    for header in ("name", "kind", "dims", "weights", "differentiable", "raw range"):
        table.add_column(header)
    for e in entries:
        raw = "-" if e["raw_range"] is None else f"{e['raw_range'][0]:g} .. {e['raw_range'][1]:g}"
        dims = ", ".join(e["dims"]) or "-"
        table.add_row(
            e["name"], e["kind"], dims, str(e["weights"] or "-"), "yes" if e["differentiable"] else "no", raw
        )
    Console(width=200).print(table)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from mmreward.rewards.registry import load_reward
    from mmreward.serve import serve

    for flag in ("max_batch", "max_queue", "max_items"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"mmreward: warning: serving on {args.host}, reachable beyond this machine; the server has no "
              "authentication", file=sys.stderr)  # fmt: skip
    device, dtype = _device_and_dtype(args.device, args.dtype)
    reward = load_reward(args.reward, device=device, dtype=dtype, batch_size=args.max_batch)
    serve(reward, host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
          max_queue=args.max_queue, max_items=args.max_items)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    commands = {"score": _score, "list": _list, "serve": _serve}
    try:
        return commands[args.command](args)
    except MMRewardError as err:
        print(f"mmreward: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
