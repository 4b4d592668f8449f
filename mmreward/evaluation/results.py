"""From a reward's per-item scores (or a judge's verdicts) to a benchmark's metrics, and from a run to a report.

Margins: a pointwise reward's margin on a pair is ``s(A) - s(B)`` on the dimension that matches the benchmark's
(a reward dimension with the same name, else the overall score); a pairwise judge's is ``2 * P(A better) - 1``
with P averaged over both presentation orders. Pairs whose scores failed are left out and counted. For PickScore's
metric the margin is turned into a probability gap the way PickScore's script does it, a softmax over the two
scores: ``P(A) - P(B) = tanh(scale * (s(A) - s(B)) / 2)``, with the reward's Bradley-Terry ``pairwise_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmreward.evaluation import editreward_metric, metrics
from mmreward.evaluation.benchmarks.base import Benchmark, PreferencePair, RankedGroup
from mmreward.evaluation.report import format_estimate, markdown_table, percent

TIE_CURVE_POINTS = 300  # points kept of a tie-calibration curve for plots and JSON (the maximum is exact)

# A record of the score cache (see mmreward.evaluation.score_cache), or None when the item has none.
Record = Mapping[str, Any]


def dimension_sources(benchmark_dims: Sequence[str], reward_dims: Sequence[str]) -> dict[str, str | None]:
    """Benchmark dimension -> the reward dimension scored for it (same name, any case), or None = overall score."""
    by_lower = {d.lower(): d for d in reward_dims}
    return {dim: by_lower.get(dim.lower()) for dim in benchmark_dims}


def primary_dimension(dims: Sequence[str]) -> str:
    """The dimension papers report first: "Overall" where the benchmark has it."""
    return "Overall" if "Overall" in dims else dims[0]


# -------------------------------------------------------------------------------------------- pair metrics


def _tie_curve(labels: np.ndarray, margins: np.ndarray) -> dict[str, Any]:
    thresholds, accuracies = metrics.tie_calibration_curve(labels, margins)
    # Share of pairs predicted as ties at each threshold: comparable across rewards whose margins differ in scale.
    tie_fraction = np.searchsorted(np.sort(np.abs(margins)), thresholds, side="right") / margins.size
    best = int(np.argmax(accuracies))
    keep = np.unique(np.concatenate([np.linspace(0, thresholds.size - 1, TIE_CURVE_POINTS).round(), [best]]))
    keep = keep.astype(int)
    return {
        "threshold": thresholds[keep].tolist(),
        "tie_fraction": tie_fraction[keep].tolist(),
        "accuracy": accuracies[keep].tolist(),
        "best_threshold": float(thresholds[best]),
        "best_tie_fraction": float(tie_fraction[best]),
        "best_accuracy": float(accuracies[best]),
    }


def pairwise_dim_metrics(labels: np.ndarray, margins: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy without ties, with ties (and its curve) and tie-credit accuracy of one dimension, with intervals."""
    labels, margins = np.asarray(labels), np.asarray(margins, dtype=np.float64)
    result: dict[str, Any] = {"pairs": int(labels.size), "human_ties": int(np.count_nonzero(labels == 0))}
    empty = dict.fromkeys(("accuracy_without_ties", "tie_credit_accuracy", "accuracy_with_ties", "tie_curve"))
    if labels.size == 0:
        return {**result, **empty}
    decided = bool(np.any(labels != 0))
    options = {"n_boot": n_boot, "seed": seed}
    result["accuracy_without_ties"] = (
        metrics.accuracy_without_ties_ci(labels, margins, **options).to_dict() if decided else None
    )
    result["tie_credit_accuracy"] = (
        metrics.tie_credit_accuracy_ci(labels, margins, **options).to_dict() if decided else None
    )
    result["accuracy_with_ties"] = metrics.accuracy_with_ties_ci(labels, margins, **options).to_dict()
    result["tie_curve"] = _tie_curve(labels, margins)
    return result


def collect_margins(
    pairs: Sequence[PreferencePair],
    dims: Sequence[str],
    margin_of: Callable[[PreferencePair], dict[str, float] | None],
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Per dimension ``(labels, margins)`` of the pairs that have a label and a margin; and the failed pair count.

    ``margin_of(pair)`` returns ``{dim: margin}`` or None when the pair's scores failed; a dimension missing from
    it (a non-finite dimension score) leaves the pair out of that dimension only.
    """
    labels: dict[str, list[int]] = {d: [] for d in dims}
    margins: dict[str, list[float]] = {d: [] for d in dims}
    failed = 0
    for pair in pairs:
        values = margin_of(pair)
        if values is None:
            failed += 1
            continue
        for dim in dims:
            if dim in pair.labels and dim in values:
                labels[dim].append(pair.labels[dim])
                margins[dim].append(values[dim])
    return {d: (np.array(labels[d], dtype=np.int8), np.array(margins[d], dtype=np.float64)) for d in dims}, failed


def pointwise_margin_fn(
    score_of: Callable[[str, Path], Record | None], sources: Mapping[str, str | None]
) -> Callable[[PreferencePair], dict[str, float] | None]:
    """``margin_of`` for a pointwise reward: score gaps on each benchmark dimension's source score."""

    def value(record: Record, source: str | None) -> float | None:
        return record["score"] if source is None else record["dims"].get(source)

    def margin_of(pair: PreferencePair) -> dict[str, float] | None:
        a, b = score_of(pair.prompt, pair.media_a), score_of(pair.prompt, pair.media_b)
        if a is None or b is None or a["error"] is not None or b["error"] is not None:
            return None
        out = {}
        for dim, source in sources.items():
            va, vb = value(a, source), value(b, source)
            if va is not None and vb is not None:
                out[dim] = float(va) - float(vb)
        return out

    return margin_of


def judge_margin_fn(
    verdict_of: Callable[[PreferencePair], Record | None], dims: Sequence[str]
) -> Callable[[PreferencePair], dict[str, float] | None]:
    """``margin_of`` for a pairwise judge: ``2 * P(A better) - 1``, the same verdict for every dimension."""

    def margin_of(pair: PreferencePair) -> dict[str, float] | None:
        record = verdict_of(pair)
        if record is None or record["error"] is not None:
            return None
        return dict.fromkeys(dims, 2.0 * float(record["prob_a"]) - 1.0)

    return margin_of


def evaluate_pairs(
    benchmark: Benchmark,
    margin_of: Callable[[PreferencePair], dict[str, float] | None],
    *,
    probability_gap: Callable[[np.ndarray], np.ndarray],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Metrics of a pairwise or pickscore benchmark for one reward.

    ``probability_gap`` maps margins to ``P(A) - P(B)`` (PickScore's metric); identity for judges.
    """
    per_dim, failed = collect_margins(benchmark.pairs, benchmark.dims, margin_of)
    result: dict[str, Any] = {
        "pairs": {"total": len(benchmark.pairs), "failed": failed},
        "dims": {dim: pairwise_dim_metrics(*per_dim[dim], n_boot=n_boot, seed=seed) for dim in benchmark.dims},
    }
    if benchmark.protocol == "pickscore":
        validation, val_failed = collect_margins(benchmark.validation_pairs, benchmark.dims, margin_of)
        dim = primary_dimension(benchmark.dims)
        (val_labels, val_margins), (test_labels, test_margins) = validation[dim], per_dim[dim]
        result["validation_pairs"] = {"total": len(benchmark.validation_pairs), "failed": val_failed}
        result["pickscore_accuracy"] = (
            metrics.pickscore_tie_accuracy_ci(
                val_labels,
                probability_gap(val_margins),
                test_labels,
                probability_gap(test_margins),
                n_boot=n_boot,
                seed=seed,
            ).to_dict()
            if val_labels.size and test_labels.size
            else None
        )
    return result


def evaluate_groups(
    benchmark: Benchmark, score_of: Callable[[str, Path], Record | None], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Ranking metrics for one pointwise reward. Failed items leave their group; groups left with < 2 items drop."""
    ranks, scores = [], []
    failed_items, dropped = 0, 0
    for group in benchmark.groups:
        kept = []
        for path, rank in zip(group.media, group.ranks, strict=True):
            record = score_of(group.prompt, path)
            if record is None or record["error"] is not None:
                failed_items += 1
            else:
                kept.append((rank, float(record["score"])))
        if len(kept) < 2:
            dropped += 1
            continue
        ranks.append([r for r, _ in kept])
        scores.append([s for _, s in kept])
    result: dict[str, Any] = {
        "groups": {"total": len(benchmark.groups), "dropped": dropped, "failed_items": failed_items},
        "ranking_accuracy_micro": None,
        "ranking_accuracy_macro": None,
        "inversion_accuracy": None,
        "correlations": None,
    }
    if not ranks:
        return result
    has_untied = any(len(set(r)) > 1 for r in ranks)
    if has_untied:
        pair_accuracy = metrics.ranking_pair_accuracy_ci(ranks, scores, n_boot=n_boot, seed=seed)
        result["ranking_accuracy_micro"] = pair_accuracy["micro"].to_dict()
        result["ranking_accuracy_macro"] = pair_accuracy["macro"].to_dict()
    result["inversion_accuracy"] = metrics.inversion_accuracy_ci(ranks, scores, n_boot=n_boot, seed=seed).to_dict()
    result["correlations"] = metrics.rank_correlations(ranks, scores)
    return result


def evaluate_editreward(
    benchmark: Benchmark, score_of: Callable[[RankedGroup, Path], Record | None], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """EditReward-Bench's metrics for one pointwise reward (:mod:`mmreward.evaluation.editreward_metric`):
    ``score_of(group, candidate)`` is the cache record of a candidate scored against the group's instruction and
    source. A group with a failed candidate is left out and counted (the reference has no failures to handle)."""
    scored: list[editreward_metric.ScoredGroup] = []
    failed_items, dropped = 0, 0
    for group in benchmark.groups:
        records = [score_of(group, path) for path in group.media]
        bad = sum(r is None or r["error"] is not None for r in records)
        if bad:
            failed_items += bad
            dropped += 1
            continue
        ranking = group.meta["ranking"]
        scored.append(
            editreward_metric.ScoredGroup(
                subset=group.meta["subset"],
                ranking=tuple(ranking) if isinstance(ranking, list) else ranking,
                pair_labels=tuple(group.meta["pair_labels"]),
                scores=tuple(float(r["score"]) for r in records),
            )
        )
    result: dict[str, Any] = {
        "groups": {"total": len(benchmark.groups), "dropped": dropped, "failed_items": failed_items},
        "editreward_strict_accuracy": None,
        "editreward_subsets": {},
    }
    if scored:
        subsets, correct = editreward_metric.evaluate(scored)
        estimate = editreward_metric.strict_accuracy_ci(correct, n_boot=n_boot, seed=seed)
        result["editreward_strict_accuracy"] = None if estimate is None else estimate.to_dict()
        result["editreward_subsets"] = {name: r.to_dict() for name, r in subsets.items()}
    return result


def judge_diagnostics(records: Sequence[Record]) -> dict[str, Any]:
    """Order consistency (both presentation orders agree) and failure rate of a pairwise judge's verdicts."""
    if not records:
        return {"verdicts": 0, "order_consistency": None, "parse_failure_rate": None}
    failed = [r["error"] is not None for r in records]
    consistency = metrics.order_consistency([bool(r["consistent"]) for r in records], failed=failed)
    return {
        "verdicts": len(records),
        "order_consistency": None if math.isnan(consistency) else consistency,
        "parse_failure_rate": metrics.parse_failure_rate(failed),
    }


def probability_gap_for_scores(scale: float) -> Callable[[np.ndarray], np.ndarray]:
    """Score gap -> ``P(A) - P(B)`` of a two-way softmax with the reward's Bradley-Terry scale."""
    return lambda gaps: np.tanh(scale * np.asarray(gaps, dtype=np.float64) / 2.0)


# ---------------------------------------------------------------------------------------------- the report


def headline(result: Mapping[str, Any], benchmark: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The estimate a benchmark's papers report for one reward's metrics (first dimension for pairwise ones)."""
    name = benchmark["headline"]
    if benchmark["protocol"] in ("ranking", "mmrb2", "editreward") or name == "pickscore_accuracy":
        return result["metrics"].get(name)
    return result["metrics"]["dims"][primary_dimension(benchmark["dims"])].get(name)


def render_markdown(run: Mapping[str, Any]) -> str:
    """The Markdown report of a reward-bench run (the dictionary written to results.json)."""
    bench = run["benchmark"]
    lines = [
        f"# {bench['title']}: reward-model benchmark",
        "",
        f"- benchmark `{bench['name']}` ({bench['protocol']} protocol), data `{run['data_dir']}`",
        f"- {bench['size']}; media: {bench['media_kind']}",
        f"- source: {bench['source']['hub_id']} ({bench['source']['license']}); {bench['source']['paper']}",
        f"- command: `{run['command']}`",
        f"- intervals: {run['bootstrap']['confidence']:.0%} percentile bootstrap, {run['bootstrap']['replicates']} "
        f"replicates, seed {run['bootstrap']['seed']}; values in percent",
    ]
    lines += [f"- note: {note}" for note in bench["notes"]]
    rewards = run["rewards"]
    if bench["protocol"] == "ranking":
        lines += ["", "## Ranking accuracy", "", _ranking_table(rewards)]
    elif bench["protocol"] == "editreward":
        lines += ["", "## EditReward-Bench accuracy (the authors' evaluate_edit_reward_bench)", ""]
        lines += [_editreward_table(rewards), "", _EDITREWARD_NOTE]
    else:
        if bench["protocol"] == "pickscore":
            lines += ["", "## PickScore tie-aware accuracy (threshold chosen on validation_unique)", ""]
            rows = [
                [
                    name,
                    format_estimate(r["metrics"].get("pickscore_accuracy")),
                    _threshold(r["metrics"].get("pickscore_accuracy")),
                ]
                for name, r in rewards.items()
            ]
            lines.append(markdown_table(["reward", "accuracy", "threshold on P(A)-P(B)"], rows))
        if bench["protocol"] == "mmrb2":
            lines += [
                "",
                "## MMRB2 accuracy (both presentation orders, ties wrong, tasks pooled)",
                "",
                _mmrb2_table(rewards),
            ]
        lines += ["", "## Pairwise accuracy per dimension", "", _pairwise_table(rewards, bench["dims"])]
        lines += ["", _PAIRWISE_NOTE]
        judges = {n: r for n, r in rewards.items() if r["kind"] == "pairwise"}
        if judges:
            rows = [
                [
                    n,
                    r["judge"]["verdicts"],
                    percent(r["judge"]["order_consistency"]),
                    percent(r["judge"]["parse_failure_rate"]),
                ]
                for n, r in judges.items()
            ]
            lines += [
                "",
                "## Pairwise judges",
                "",
                markdown_table(["judge", "verdicts", "order consistency", "failures"], rows),
            ]
    lines += ["", "## Scoring", "", _scoring_table(rewards)]
    errors = [(n, e) for n, r in rewards.items() for e in r["scoring"]["errors"]]
    if errors:
        lines += ["", "First failures:", ""] + [f"- {n}: {e}" for n, e in errors]
    if bench["references"]:
        rows = [[r["model"], r["metric"], f"{r['value']:.2f}", r["source"]] for r in bench["references"]]
        lines += [
            "",
            "## Published numbers (for comparison; full benchmark, original checkpoints)",
            "",
            markdown_table(["model", "metric", "value", "source"], rows),
        ]
    plots = run.get("plots", [])
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


_PAIRWISE_NOTE = (
    "Accuracy with ties is tie-calibrated (Deutsch et al. 2023): a tie is predicted when |margin| <= eps, with eps "
    "fitted on this benchmark; eps is in each reward's margin units. Tie-credit accuracy gives a model tie half "
    "credit on decisive pairs (MJ-Bench-Video's tie-aware accuracy)."
)


def _mmrb2_table(rewards: Mapping[str, Any]) -> str:
    headers = ["reward", "task", "pairs", "missing", "trials", "accuracy"]
    rows = []
    for name, reward in rewards.items():
        for task, t in reward["metrics"]["mmrb2_tasks"].items():
            accuracy = percent(t["accuracy"], 2) if t["total_evaluated"] else "n/a"
            rows.append([name, task, t["total_pairs"], t["missing_pairs"], t["total_evaluated"], accuracy])
        rows.append([name, "overall (pooled)", "", "", "", format_estimate(reward["metrics"]["mmrb2_accuracy"], 2)])
    return markdown_table(headers, rows)


_EDITREWARD_NOTE = (
    "Strict: the model orders every candidate of a group as the humans did (a K=2 human tie: |s_A - s_B| <= the "
    "eps of the K=2 pairwise accuracy); overall pools the groups (the README's Overall column). Pairwise: with ties "
    "(eps fitted on the pairs, in score units) for K=2 and overall, without ties for K=3, 4. The interval is a "
    "bootstrap over groups with eps fixed."
)


def _editreward_table(rewards: Mapping[str, Any]) -> str:
    headers = ["reward", "subset", "groups", "strict ranking acc.", "pairs", "pairwise acc.", "eps"]
    rows = []
    for name, reward in rewards.items():
        m = reward["metrics"]
        for subset, r in m["editreward_subsets"].items():
            strict = (
                format_estimate(m["editreward_strict_accuracy"], 2)
                if subset == "overall"
                else percent(r["strict_ranking_accuracy"], 2)
            )
            kind = "w/ ties" if r["pairwise_ties"] else "w/o ties"
            rows.append(
                [
                    name,
                    subset,
                    f"{r['strict_correct_count']}/{r['strict_total_samples']}",
                    strict,
                    r["pair_count"],
                    f"{percent(r['pairwise_accuracy'], 2)} ({kind})",
                    "" if r["epsilon"] is None else f"{r['epsilon']:.3g}",
                ]
            )
    return markdown_table(headers, rows)


def _threshold(estimate: Mapping[str, Any] | None) -> str:
    return "n/a" if not estimate or estimate.get("threshold") is None else f"{estimate['threshold']:.3g}"


def _pairwise_table(rewards: Mapping[str, Any], dims: Sequence[str]) -> str:
    headers = ["reward", "dimension", "pairs (human ties)", "w/o ties", "w/ ties", "eps", "tie-credit"]
    rows = []
    for name, reward in rewards.items():
        for dim in dims:
            m = reward["metrics"]["dims"][dim]
            source = reward["dimension_sources"].get(dim)
            label = dim if source is None or reward["kind"] == "pairwise" else f"{dim} (reward dim {source})"
            rows.append(
                [
                    name,
                    label,
                    f"{m['pairs']} ({m['human_ties']})",
                    format_estimate(m["accuracy_without_ties"]),
                    format_estimate(m["accuracy_with_ties"]),
                    _threshold(m["accuracy_with_ties"]),
                    format_estimate(m["tie_credit_accuracy"]),
                ]
            )
    return markdown_table(headers, rows)


def _ranking_table(rewards: Mapping[str, Any]) -> str:
    headers = [
        "reward",
        "pair acc. micro (ImageReward)",
        "pair acc. macro",
        "inversion acc. (HPDv2)",
        "Spearman",
        "Kendall",
    ]
    rows = []
    for name, reward in rewards.items():
        m = reward["metrics"]
        corr = m.get("correlations") or {}
        rows.append(
            [
                name,
                format_estimate(m["ranking_accuracy_micro"]),
                format_estimate(m["ranking_accuracy_macro"]),
                format_estimate(m["inversion_accuracy"]),
                f"{corr['spearman']:.3f}" if corr.get("spearman") is not None else "n/a",
                f"{corr['kendall']:.3f}" if corr.get("kendall") is not None else "n/a",
            ]
        )
    return markdown_table(headers, rows)


def _left_out(metrics_: Mapping[str, Any]) -> str:
    """What a reward's failures removed from its metrics."""
    if "groups" in metrics_:
        g = metrics_["groups"]
        return f"{g['failed_items']} item(s); {g['dropped']} of {g['total']} prompts"
    text = f"{metrics_['pairs']['failed']} of {metrics_['pairs']['total']} pairs"
    if "validation_pairs" in metrics_:
        v = metrics_["validation_pairs"]
        text += f"; {v['failed']} of {v['total']} validation pairs"
    return text


def _scoring_table(rewards: Mapping[str, Any]) -> str:
    headers = ["reward", "loaded from", "kind", "items", "from cache", "newly scored", "failed", "left out"]
    rows = []
    for name, reward in rewards.items():
        s = reward["scoring"]
        rows.append(
            [
                name,
                f"`{reward['spec']}`",
                reward["kind"],
                s["total"],
                s["from_cache"],
                s["newly_scored"],
                s["failed"],
                _left_out(reward["metrics"]),
            ]
        )
    return markdown_table(headers, rows)
