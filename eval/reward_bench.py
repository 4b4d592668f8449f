"""Compare reward models on a reward-model benchmark, with the metrics the benchmark's papers report.

    python eval/reward_bench.py --benchmark videogen-rewardbench --data-dir /data/VideoGen-RewardBench \\
        --reward pickscore --reward hpsv2.1 --device cuda --dtype bfloat16
    python eval/reward_bench.py --list          # benchmarks, where their data live, expected layouts

Rewards are anything ``mmreward.load_reward`` takes: preset names, preset YAML files, saved reward directories,
``package.module:Class``. Pointwise rewards score every distinct (prompt, media file) once and margins are score
gaps; pairwise judges (``kind == "pairwise"``) are asked once per pair in both presentation orders, their margin is
``2 * P(A better) - 1``, and their order consistency and failure rate are reported. On MMRB2 (``--tasks`` picks
its tasks) each pair is presented in both orders as two separate verdicts and scored with MMRB2's own accuracy
(:mod:`mmreward.evaluation.mmrb2_metric`): a pointwise reward's verdict is the sign of its score gap, a judge's is
which side it gives ``P > 1/2``. On TIGER-Lab's EditReward-Bench (``tigerlab-editreward-bench``) each candidate edit
is scored against its instruction, rewards that use a source image (``uses_source``) also get the group's source,
and the metrics are the authors' (:mod:`mmreward.evaluation.editreward_metric`): strict ranking accuracy per group
size K = 2, 3, 4 and pooled, and their pairwise accuracies.

Scores go to ``OUTPUT_DIR/cache/`` after every batch; rerunning the same command resumes where it stopped and
does not score cached items again. Outputs: ``report.md``, ``results.json`` (every number, intervals, counts,
tie-calibration curves) and PNG plots. Exit status: 0 on success, 1 when ``--on-error fail`` and some items
failed (the report is still written), 2 on bad arguments or data.
"""

from __future__ import annotations

import argparse
import gc
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmreward import __version__, load_reward
from mmreward.errors import ConfigError, MMRewardError, UnknownRewardError
from mmreward.evaluation import metrics, mmrb2_metric
from mmreward.evaluation import results as res
from mmreward.evaluation.benchmarks import (
    BENCHMARKS,
    Benchmark,
    PreferencePair,
    RankedGroup,
    list_benchmarks,
    load_benchmark,
    mmrb2,
)
from mmreward.evaluation.report import plot_curves, plot_grouped_bars, write_json, write_text
from mmreward.evaluation.score_cache import (
    MediaItem,
    PairItem,
    ScoreCache,
    judge_pairs_into_cache,
    media_key,
    pair_key,
    reward_fingerprint,
    score_into_cache,
)
from mmreward.rewards.registry import find_preset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reward_bench.py",
        description="Evaluate reward models on a reward-model benchmark (accuracy with/without ties, PickScore "
        "accuracy, ranking accuracy) and write a Markdown report, JSON and plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--benchmark", choices=list_benchmarks(), help="benchmark to run (see --list)")
    parser.add_argument("--data-dir", type=Path, help="folder holding the benchmark's files (see --list)")
    parser.add_argument(
        "--reward", action="append", default=[], help="reward to evaluate; repeat to compare several in one table"
    )
    parser.add_argument("--output-dir", type=Path, help="default: outputs/reward_bench/<benchmark>")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="items per forward pass (default: preset's)")
    parser.add_argument("--video-num-frames", type=int, default=None, help="frames sampled per video (preset's)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for 95%% intervals")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs/groups (quick checks)")
    parser.add_argument(
        "--tasks", default=None, help="MMRB2 only: comma-separated tasks among t2i,edit,interleaved,reasoning (all)"
    )
    parser.add_argument("--download", action="store_true", help="fetch missing benchmark files from the HF Hub")
    parser.add_argument("--retry-failed", action="store_true", help="score again items that failed in the cache")
    parser.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="skip: pairs with failed items are left out and counted; fail: also exit with status 1",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="list benchmarks and where their data live, then exit")
    return parser


def _list_benchmarks() -> str:
    lines = []
    for name in list_benchmarks():
        entry = BENCHMARKS[name]
        lines += [
            f"{name}: {entry.summary}",
            f"    data: Hugging Face dataset {entry.source.hub_id} ({', '.join(entry.source.files)}); "
            f"licence {entry.source.license}",
            f"    --data-dir layout: {entry.source.layout}",
            f"    paper: {entry.source.paper}",
        ]
    return "\n".join(lines)


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.benchmark is None or args.data_dir is None or not args.reward:
        parser.error("--benchmark, --data-dir and at least one --reward are required (or --list)")
    if args.tasks is not None:
        if args.benchmark != "mmrb2":
            parser.error(f"--tasks selects MMRB2 tasks; benchmark {args.benchmark!r} has none")
        mmrb2.parse_tasks(args.tasks)  # a typo fails before any model loads
    for flag, value, minimum in (
        ("--bootstrap", args.bootstrap, 0),
        ("--batch-size", args.batch_size, 1),
        ("--limit", args.limit, 1),
        ("--video-num-frames", args.video_num_frames, 1),
    ):
        if value is not None and value < minimum:
            parser.error(f"{flag} must be >= {minimum}, got {value}")
    for spec in args.reward:
        # Resolve names before any weights load, so a typo in the second reward does not cost the first's run.
        if find_preset(spec) is None and ":" not in spec:
            raise UnknownRewardError(
                f"unknown reward {spec!r}: not a preset name, preset YAML file or saved reward directory "
                "(see `mmreward list`), nor 'package.module:Class'"
            )
    if len(set(args.reward)) != len(args.reward):
        parser.error(f"each --reward may be given once, got {args.reward}")


def _reward_overrides(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides: dict[str, Any] = {"device": device}
    for key, value in (
        ("dtype", args.dtype),
        ("batch_size", args.batch_size),
        ("video_num_frames", args.video_num_frames),
    ):
        if value is not None:
            overrides[key] = value
    if args.video_num_frames is not None:
        overrides["video_fps"] = None  # the two ways of sampling frames are exclusive
    return overrides


def _benchmark_summary(benchmark: Benchmark) -> dict[str, Any]:
    if benchmark.protocol in ("ranking", "editreward"):
        size = f"{len(benchmark.groups)} ranked prompts, {sum(len(g.media) for g in benchmark.groups)} media"
    else:
        size = f"{len(benchmark.pairs)} pairs"
        if benchmark.validation_pairs:
            size += f" (+ {len(benchmark.validation_pairs)} validation pairs for the tie threshold)"
    return {
        "name": benchmark.name,
        "title": benchmark.title,
        "protocol": benchmark.protocol,
        "media_kind": benchmark.media_kind,
        "dims": list(benchmark.dims),
        "headline": benchmark.headline,
        "size": size,
        "source": benchmark.source.__dict__ | {"files": list(benchmark.source.files)},
        "references": [r.__dict__ for r in benchmark.references],
        "notes": list(benchmark.notes),
    }


def evaluate_reward(
    spec: str, benchmark: Benchmark, root: Path, cache_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Load one reward, score the benchmark (resuming from its cache), compute its metrics."""
    reward = load_reward(spec, **_reward_overrides(args))
    if benchmark.media_kind not in reward.media_kinds:
        raise ConfigError(
            f"reward {spec!r} accepts {sorted(reward.media_kinds)}, but {benchmark.name} has {benchmark.media_kind}s"
        )
    if reward.kind == "pairwise" and benchmark.protocol in ("ranking", "editreward"):
        raise ConfigError(
            f"{spec!r} is a pairwise judge; ranking benchmarks ({benchmark.name}) need a pointwise reward"
        )
    cache = ScoreCache(cache_dir, reward.name, reward_fingerprint(reward, spec))
    keys: dict[tuple[str, Path, Path | None], str] = {}

    def key_of(prompt: str, path: Path, source: Path | None = None) -> str:
        if (prompt, path, source) not in keys:
            keys[(prompt, path, source)] = media_key(prompt, path, root, source)
        return keys[(prompt, path, source)]

    result: dict[str, Any] = {"spec": spec, "kind": reward.kind, "cache": str(cache.path)}
    options = {"retry_failed": args.retry_failed, "progress": not args.no_progress}
    boot = {"n_boot": args.bootstrap, "seed": args.seed}
    if benchmark.protocol == "mmrb2" and reward.kind == "pairwise":
        # MMRB2 asks the judge once per presentation order: (A, B) and (B, A), each verdict its own trial.
        forward, reverse = [], []
        for p in benchmark.pairs:
            key_a, key_b = key_of(p.prompt, p.media_a), key_of(p.prompt, p.media_b)
            forward.append(PairItem(p.prompt, p.media_a, p.media_b, pair_key(p.prompt, key_a, key_b, "ab")))
            reverse.append(PairItem(p.prompt, p.media_b, p.media_a, pair_key(p.prompt, key_b, key_a, "ab")))
        stats = judge_pairs_into_cache(reward, forward + reverse, cache, orders="ab", **options)

        def first_shown_margin(item: PairItem) -> float | None:
            record = cache.get(item.key)
            return None if record is None or record["error"] is not None else float(record["prob_a"]) - 0.5

        shown = {
            id(p): (first_shown_margin(f), first_shown_margin(r))
            for p, f, r in zip(benchmark.pairs, forward, reverse, strict=True)
        }
        result["dimension_sources"] = dict.fromkeys(benchmark.dims)
        result["metrics"] = res.evaluate_pairs(
            benchmark,
            # 2 * P(A better) - 1 with P averaged over the two orders: P_AB(A) - P_BA(B).
            lambda p: (
                None if None in shown[id(p)] else dict.fromkeys(benchmark.dims, shown[id(p)][0] - shown[id(p)][1])
            ),
            probability_gap=lambda margins: margins,
            **boot,
        )
        result["metrics"].update(_mmrb2_metrics(benchmark, lambda p: shown[id(p)], **boot))
        result["judge"] = _order_diagnostics(list(shown.values()))
    elif reward.kind == "pairwise":
        pairs = [*benchmark.pairs, *benchmark.validation_pairs]
        items = [
            PairItem(
                p.prompt,
                p.media_a,
                p.media_b,
                pair_key(p.prompt, key_of(p.prompt, p.media_a), key_of(p.prompt, p.media_b), "both"),
            )
            for p in pairs
        ]
        stats = judge_pairs_into_cache(reward, items, cache, orders="both", **options)
        by_pair = {id(p): item.key for p, item in zip(pairs, items, strict=True)}
        result["dimension_sources"] = dict.fromkeys(benchmark.dims)
        result["metrics"] = res.evaluate_pairs(
            benchmark,
            res.judge_margin_fn(lambda pair: cache.get(by_pair[id(pair)]), benchmark.dims),
            probability_gap=lambda margins: margins,
            **boot,
        )
        result["judge"] = res.judge_diagnostics([cache.get(item.key) for item in items])
    elif benchmark.protocol == "editreward":
        # Each candidate is scored against its group's instruction and source image (given to rewards that use it).
        def edit_item(group: RankedGroup, path: Path) -> MediaItem:
            source = Path(group.meta["source_image"])
            return MediaItem(group.prompt, path, key_of(group.prompt, path, source), source)

        items = [edit_item(g, p) for g in benchmark.groups for p in g.media]
        stats = score_into_cache(reward, items, cache, **options)
        result["dimension_sources"] = {"Overall": None}
        result["metrics"] = res.evaluate_editreward(
            benchmark, lambda group, path: cache.get(edit_item(group, path).key), **boot
        )
    else:
        paths = [(g.prompt, p) for g in benchmark.groups for p in g.media]
        paths += [
            (p.prompt, m) for p in (*benchmark.pairs, *benchmark.validation_pairs) for m in (p.media_a, p.media_b)
        ]
        stats = score_into_cache(reward, [MediaItem(pr, pa, key_of(pr, pa)) for pr, pa in paths], cache, **options)

        def score_of(prompt: str, path: Path):
            return cache.get(key_of(prompt, path))

        if benchmark.protocol == "mmrb2":
            sources = res.dimension_sources(benchmark.dims, reward.dims)
            gap = res.pointwise_margin_fn(score_of, dict.fromkeys(benchmark.dims))

            def presented(pair: PreferencePair) -> tuple[float | None, float | None]:
                # Scores do not depend on the order: (B, A) shown is the same gap, negated.
                margins = gap(pair)
                margin = None if not margins else next(iter(margins.values()))
                return (margin, None if margin is None else -margin)

            result["dimension_sources"] = sources
            result["metrics"] = res.evaluate_pairs(
                benchmark,
                res.pointwise_margin_fn(score_of, sources),
                probability_gap=res.probability_gap_for_scores(reward.pairwise_scale),
                **boot,
            )
            result["metrics"].update(_mmrb2_metrics(benchmark, presented, **boot))
        elif benchmark.protocol == "ranking":
            result["dimension_sources"] = {"Overall": None}
            result["metrics"] = res.evaluate_groups(benchmark, score_of, **boot)
        else:
            sources = res.dimension_sources(benchmark.dims, reward.dims)
            result["dimension_sources"] = sources
            result["metrics"] = res.evaluate_pairs(
                benchmark,
                res.pointwise_margin_fn(score_of, sources),
                probability_gap=res.probability_gap_for_scores(reward.pairwise_scale),
                **boot,
            )
    result["scoring"] = stats.to_dict()
    del reward
    gc.collect()  # free the model before the next reward loads
    return result


def _mmrb2_metrics(
    benchmark: Benchmark,
    presented: Callable[[PreferencePair], tuple[float | None, float | None]],
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """MMRB2's accuracy per task and pooled, from ``presented(pair)`` = the margins (first shown minus second, None
    where failed) of the forward (A, B) and reverse (B, A) presentations. Pairs the loader left out (not single-image,
    malformed) and pairs beyond --limit are the reference's missing pairs."""
    tasks: dict[str, Any] = {}
    correct, counted = [], []
    for task, size in benchmark.subset_sizes.items():
        pairs = [p for p in benchmark.pairs if p.meta["task"] == task]
        verdicts = {}
        for p in pairs:
            forward, reverse = presented(p)
            verdicts[p.meta["pair_id"]] = (
                mmrb2_metric.verdict_from_margin(forward),
                mmrb2_metric.verdict_from_margin(reverse),
            )
            c, n = mmrb2_metric.pair_trials(p.meta["chosen"], *verdicts[p.meta["pair_id"]])
            correct.append(c)
            counted.append(n)
        found = mmrb2_metric.task_accuracy(task, [(p.meta["pair_id"], p.meta["chosen"]) for p in pairs], verdicts)
        absent = size - len(pairs)
        tasks[task] = found.to_dict() | {"total_pairs": size, "missing_pairs": found.missing_pairs + absent}
    estimate = mmrb2_metric.accuracy_ci(correct, counted, n_boot=n_boot, seed=seed)
    return {"mmrb2_accuracy": None if estimate is None else estimate.to_dict(), "mmrb2_tasks": tasks}


def _order_diagnostics(presented: list[tuple[float | None, float | None]]) -> dict[str, Any]:
    """Order consistency (the two presentations pick the same response) and failure rate of a judge's verdicts."""
    if not presented:
        return {"verdicts": 0, "order_consistency": None, "parse_failure_rate": None}
    failed = [None in margins for margins in presented]
    agree = [
        not f and mmrb2_metric.verdict_from_margin(fwd) == mmrb2_metric.flip(mmrb2_metric.verdict_from_margin(rev))
        for f, (fwd, rev) in zip(failed, presented, strict=True)
    ]
    consistency = metrics.order_consistency(agree, failed=failed)
    return {
        "verdicts": len(presented),
        "order_consistency": None if math.isnan(consistency) else consistency,  # NaN: no pair had both verdicts
        "parse_failure_rate": metrics.parse_failure_rate(failed),
    }


def write_plots(run: dict[str, Any], output_dir: Path) -> list[str]:
    """accuracy plots with intervals and, for pairwise benchmarks, accuracy against the tie threshold."""
    bench, rewards = run["benchmark"], run["rewards"]
    written = []
    if bench["protocol"] == "editreward":
        groups = list(dict.fromkeys(g for r in rewards.values() for g in r["metrics"]["editreward_subsets"]))

        def strict(metrics_: dict[str, Any], group: str) -> dict[str, Any] | None:
            if group == "overall":
                return metrics_["editreward_strict_accuracy"]
            subset = metrics_["editreward_subsets"].get(group)
            return None if subset is None else {"value": subset["strict_ranking_accuracy"]}

        series = {name: [strict(r["metrics"], g) for g in groups] for name, r in rewards.items()}
        path = output_dir / "strict_ranking_accuracy.png"
        plot_grouped_bars(
            path, groups, series, title=f"{bench['title']}: strict ranking accuracy", ylabel="accuracy (%)"
        )
        return [str(path)]
    if bench["protocol"] == "ranking":
        groups = ["pair acc. micro", "pair acc. macro", "inversion acc."]
        keys = ["ranking_accuracy_micro", "ranking_accuracy_macro", "inversion_accuracy"]
        series = {name: [r["metrics"][k] for k in keys] for name, r in rewards.items()}
        path = output_dir / "ranking_accuracy.png"
        plot_grouped_bars(path, groups, series, title=bench["title"], ylabel="accuracy (%)", reference=0.5)
        return [str(path)]
    dims = bench["dims"]
    for metric, label in (("accuracy_without_ties", "w/o ties"), ("accuracy_with_ties", "w/ ties, tie-calibrated")):
        series = {name: [r["metrics"]["dims"][d][metric] for d in dims] for name, r in rewards.items()}
        if bench["protocol"] == "pickscore" and metric == "accuracy_without_ties":
            series = {name: [*v, rewards[name]["metrics"]["pickscore_accuracy"]] for name, v in series.items()}
        groups = (
            [*dims, "PickScore acc."] if len(series) and len(next(iter(series.values()))) > len(dims) else list(dims)
        )
        path = output_dir / f"{metric}.png"
        plot_grouped_bars(
            path,
            groups,
            series,
            title=f"{bench['title']}: accuracy {label}",
            ylabel="accuracy (%)",
            reference=0.5 if metric == "accuracy_without_ties" else None,
        )
        written.append(str(path))
    panels: dict[str, dict[str, Any]] = {}
    for dim in dims:
        curves = {}
        for name, reward in rewards.items():
            curve = reward["metrics"]["dims"][dim]["tie_curve"]
            if curve:
                curves[name] = {
                    "x": curve["tie_fraction"],
                    "y": curve["accuracy"],
                    "best_x": curve["best_tie_fraction"],
                    "best_y": curve["best_accuracy"],
                    "label": f"{name} (best eps {curve['best_threshold']:.3g})",
                }
        if curves:
            panels[dim] = curves
    if panels:
        path = output_dir / "tie_threshold.png"
        plot_curves(
            path,
            panels,
            title=f"{bench['title']}: accuracy against the tie threshold",
            xlabel="share of pairs predicted as ties (|margin| <= eps)",
            ylabel="3-class accuracy (%)",
        )
        written.append(str(path))
    return written


def _print_summary(run: dict[str, Any], output_dir: Path) -> None:
    bench = run["benchmark"]
    print(f"{bench['title']} - {bench['headline']} (95% interval), details in {output_dir / 'report.md'}")
    for name, reward in run["rewards"].items():
        estimate = res.headline(reward, bench)
        text = (
            "n/a"
            if not estimate
            else f"{100 * estimate['value']:.2f} [{100 * estimate['low']:.2f}, {100 * estimate['high']:.2f}]"
        )
        scoring = reward["scoring"]
        print(
            f"  {name}: {text}  (items {scoring['total']}, newly scored {scoring['newly_scored']}, "
            f"failed {scoring['failed']})"
        )


def _labels(specs: list[str]) -> list[str]:
    """Short names for tables and plots: a preset file's or saved directory's stem, a class name; made unique."""
    labels = []
    for spec in specs:
        path = Path(spec)
        label = (
            spec.rpartition(":")[2] if ":" in spec and not path.exists() else (path.stem if path.suffix else path.name)
        )
        labels.append(label or spec)
    return [f"{label} ({i + 1})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def run(args: argparse.Namespace) -> int:
    options = {} if args.tasks is None else {"tasks": args.tasks}
    benchmark = load_benchmark(args.benchmark, args.data_dir, download=args.download, **options).limited(args.limit)
    output_dir = args.output_dir or Path("outputs") / "reward_bench" / benchmark.name
    output_dir.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_dir).expanduser().resolve()
    summary: dict[str, Any] = {
        "mmreward_version": __version__,
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "data_dir": str(root),
        "benchmark": _benchmark_summary(benchmark),
        "bootstrap": {"replicates": args.bootstrap, "seed": args.seed, "confidence": 0.95},
        "rewards": {},
    }
    for spec, label in zip(args.reward, _labels(args.reward), strict=True):
        summary["rewards"][label] = evaluate_reward(spec, benchmark, root, output_dir / "cache", args)
    summary["plots"] = [Path(p).name for p in write_plots(summary, output_dir)]
    write_json(output_dir / "results.json", summary)
    write_text(output_dir / "report.md", res.render_markdown(summary))
    _print_summary(summary, output_dir)
    failed = sum(r["scoring"]["failed"] for r in summary["rewards"].values())
    if failed and args.on_error == "fail":
        print(
            f"error: {failed} item(s) failed to score (--on-error fail); see {output_dir / 'report.md'}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(_list_benchmarks())
        return 0
    try:
        _check_args(args, parser)
        return run(args)
    except MMRewardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; scores so far are cached: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
