"""Generator-benchmark results: per-run summaries, base-versus-aligned comparisons, and their Markdown reports.

A run (``eval/gen_bench.py``) stores per-sample values in ``results.json``: each reward's score per sample id
(``"{prompt id}_{k}"``), the checklist judge's per-test-point verdicts, and per-prompt diversity. Everything here
works on those dictionaries, so a comparison needs only two ``results.json`` files, no model.

Intervals are 95% percentile bootstraps over *prompts* (a prompt's samples are drawn together; they share the prompt's
difficulty). Comparisons are paired: the same prompt and seed in both runs, so differences come from the weights.

- reward mean: mean over samples; its interval resamples prompts.
- paired reward gain: ``mean(s_aligned - s_base)`` over samples scored in both runs; ``beats base``: the share of
  those samples where ``s_aligned > s_base`` (ties count half).
- UniGenBench: :mod:`mmreward.evaluation.unigenbench`.
- diversity: :mod:`mmreward.evaluation.diversity`, mean over prompts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmreward.evaluation import metrics
from mmreward.evaluation.report import markdown_table
from mmreward.evaluation.unigenbench import ImageVerdicts, paired_overall_difference, unigenbench_scores

Values = Mapping[str, float | None]  # sample id -> value (None: failed)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _estimate(value: float, interval: tuple[float, float], n: int) -> dict[str, Any]:
    return {"value": value, "low": interval[0], "high": interval[1], "n": n}


def _by_prompt(ids: Sequence[str], prompt_of: Mapping[str, str]) -> tuple[np.ndarray, int]:
    """Prompt index of each sample id, and the number of prompts."""
    prompts = {p: k for k, p in enumerate(dict.fromkeys(prompt_of[i] for i in ids))}
    return np.array([prompts[prompt_of[i]] for i in ids], dtype=np.int64), len(prompts)


def _prompt_bootstrap_mean(
    values: np.ndarray, owner: np.ndarray, prompts: int, *, n_boot: int, seed: int
) -> tuple[float, float]:
    """Interval of the sample mean when prompts (with all their samples) are resampled."""
    sums = np.bincount(owner, weights=values, minlength=prompts)
    counts = np.bincount(owner, minlength=prompts).astype(float)

    def statistic(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ sums) / (w @ counts)

    return metrics.bootstrap_interval(statistic, prompts, n_boot=n_boot, seed=seed)


def mean_estimate(
    values: Values, prompt_of: Mapping[str, str], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any] | None:
    """Mean over the finite values with a prompt-bootstrap interval; None when there are none."""
    ids = [i for i, v in values.items() if _finite(v)]
    if not ids:
        return None
    array = np.array([values[i] for i in ids], dtype=np.float64)
    owner, prompts = _by_prompt(ids, prompt_of)
    return _estimate(
        float(array.mean()), _prompt_bootstrap_mean(array, owner, prompts, n_boot=n_boot, seed=seed), len(ids)
    )


def paired_gain(
    base: Values, other: Values, prompt_of: Mapping[str, str], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any] | None:
    """Paired comparison on the samples both runs scored: mean gain ``other - base`` and the share where other wins."""
    ids = [i for i in other if i in base and _finite(base[i]) and _finite(other[i])]
    if not ids:
        return None
    diff = np.array([other[i] - base[i] for i in ids], dtype=np.float64)
    wins = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    owner, prompts = _by_prompt(ids, prompt_of)
    boot = {"n_boot": n_boot, "seed": seed}
    return {
        "gain": _estimate(float(diff.mean()), _prompt_bootstrap_mean(diff, owner, prompts, **boot), len(ids)),
        "beats_base": _estimate(float(wins.mean()), _prompt_bootstrap_mean(wins, owner, prompts, **boot), len(ids)),
    }


def image_verdicts(run: Mapping[str, Any]) -> list[ImageVerdicts]:
    """The judge's verdicts of a run as :class:`ImageVerdicts`, one per sample (failed samples with None)."""
    judge = run.get("judge") or {}
    samples = {s["id"]: s for s in run["samples"]}
    out = []
    for sample_id, entry in judge.get("verdicts", {}).items():
        passed = entry["passed"]
        out.append(
            ImageVerdicts(
                samples[sample_id]["prompt_id"], tuple(entry["points"]), None if passed is None else tuple(passed)
            )
        )
    return out


def summarize_judge(run: Mapping[str, Any], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """UniGenBench scores of a run's verdicts (see :func:`mmreward.evaluation.unigenbench.unigenbench_scores`)."""
    return unigenbench_scores(image_verdicts(run), n_boot=n_boot, seed=seed)


def compare_runs(
    base: Mapping[str, Any], other: Mapping[str, Any], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Side-by-side numbers of two runs (``other`` against ``base``) on the samples they share."""
    prompt_of = {s["id"]: s["prompt_id"] for s in (*base["samples"], *other["samples"])}
    shared = sorted(set(s["id"] for s in base["samples"]) & set(s["id"] for s in other["samples"]))
    settings_a, settings_b = base["settings"], other["settings"]
    differing = {
        k: [settings_a.get(k), settings_b.get(k)] for k in settings_b if settings_a.get(k) != settings_b.get(k)
    }
    out: dict[str, Any] = {
        "shared_samples": len(shared),
        "settings_that_differ": differing,
        "same_prompt_set": base["prompt_set"]["source"] == other["prompt_set"]["source"],
        "rewards": {},
    }
    for name, reward in other["rewards"].items():
        if name in base["rewards"]:
            gain = paired_gain(base["rewards"][name]["scores"], reward["scores"], prompt_of, n_boot=n_boot, seed=seed)
            out["rewards"][name] = {"base": base["rewards"][name]["mean"], "other": reward["mean"], "paired": gain}
    if base.get("total") and other.get("total") and base["total"]["weights"] == other["total"]["weights"]:
        out["total"] = {
            "base": base["total"]["mean"],
            "other": other["total"]["mean"],
            "paired": paired_gain(
                base["total"]["scores"], other["total"]["scores"], prompt_of, n_boot=n_boot, seed=seed
            ),
        }
    if base.get("judge") and other.get("judge"):
        out["judge"] = {
            "base": base["judge"]["unigenbench"],
            "other": other["judge"]["unigenbench"],
            "overall_gain": paired_overall_difference(
                image_verdicts(base), image_verdicts(other), n_boot=n_boot, seed=seed
            ),
        }
    if (
        base.get("diversity")
        and other.get("diversity")
        and base["diversity"]["features"] == other["diversity"]["features"]
    ):
        per_a, per_b = base["diversity"]["per_prompt"], other["diversity"]["per_prompt"]
        as_samples = {p: p for p in (*per_a, *per_b)}  # one value per prompt: prompts are their own units
        out["diversity"] = {
            "features": other["diversity"]["features"],
            "base": base["diversity"]["mean"],
            "other": other["diversity"]["mean"],
            "paired": paired_gain(per_a, per_b, as_samples, n_boot=n_boot, seed=seed),
        }
    return out


# ---------------------------------------------------------------------------------------------- Markdown


def _number(estimate: Mapping[str, Any] | None, digits: int = 4, scale: float = 1.0) -> str:
    if not estimate or not _finite(estimate.get("value")):
        return "n/a"
    text = f"{scale * estimate['value']:.{digits}f}"
    low, high = estimate.get("low"), estimate.get("high")
    if _finite(low) and _finite(high):
        text += f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
    return text


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _percent(estimate: Mapping[str, Any] | None) -> str:
    return _number(estimate, digits=2, scale=100.0)


def _settings_lines(run: Mapping[str, Any]) -> list[str]:
    s, ps = run["settings"], run["prompt_set"]
    lora = f"`{s['lora']}` (sha256 {s['lora_digest'][:12]})" if s.get("lora") else "none"
    frames = f" x {s['num_frames']} frames" if s.get("num_frames") else ""
    left_out = ps.get("left_out") or []  # editing prompt files: lines without a usable source
    left = "".join(f"\n  - {line}" for line in left_out)
    return [
        f"- model `{s['model']}` ({s['family']}), LoRA {lora}, {s['dtype']}",
        f"- prompts `{ps['name']}` ({ps['prompts']} prompts x {ps['images_per_prompt']} samples; {ps['source']})",
        *([f"- left out {len(left_out)} prompt line(s):{left}"] if left_out else []),
        f"- sampling: {s['num_steps']} ODE steps, guidance {s['guidance_scale']}, {s['height']} x {s['width']}"
        f"{frames}, seed {s['seed']} (sample k of prompt p starts from the noise of seeded(seed, p, k))",
        f"- command: `{run['command']}`",
    ]


def _unigenbench_tables(
    scores: Mapping[str, Any], other: Mapping[str, Any] | None = None, names=("", "")
) -> list[str]:
    """Markdown tables of primary and sub-dimension scores (one run, or two side by side with the change)."""
    lines = []
    for level, title in (("primary", "Primary dimensions"), ("sub", "Sub-dimensions")):
        if other is None:
            headers = ["dimension", "passed / total", "score (%)"]
        else:
            headers = ["dimension", f"{names[0]} passed", f"{names[0]} (%)", f"{names[1]} passed", f"{names[1]} (%)"]
            headers.append("change (points)")
        rows = []
        for name in dict.fromkeys([*scores[level], *(other[level] if other is not None else {})]):
            cells: list[Any] = [name]
            for run in (scores, other) if other is not None else (scores,):
                entry = run[level].get(name)
                cells += (
                    [f"{entry['passed']}/{entry['total']}", f"{100 * entry['accuracy']:.2f}"] if entry else ["-", "-"]
                )
            if other is not None:
                mine, theirs = scores[level].get(name), other[level].get(name)
                cells.append(f"{100 * (theirs['accuracy'] - mine['accuracy']):+.2f}" if mine and theirs else "n/a")
            rows.append(cells)
        lines += ["", f"### {title}", "", markdown_table(headers, rows)]
    return lines


_INTERVALS = "Intervals: 95% percentile bootstrap over prompts ({n} replicates, seed {seed})."


def render_run_markdown(run: Mapping[str, Any]) -> str:
    """The report of one run (the dictionary written to its results.json)."""
    lines = ["# Generator benchmark", "", *_settings_lines(run)]
    lines += ["", _INTERVALS.format(n=run["bootstrap"]["replicates"], seed=run["bootstrap"]["seed"])]
    if run["rewards"]:
        rows = [
            [name, f"`{r['spec']}`", r["weight"], _number(r["mean"]), r["scoring"]["failed"]]
            for name, r in run["rewards"].items()
        ]
        if run.get("total"):
            rows.append(["weighted total", "", "", _number(run["total"]["mean"]), run["total"]["failed"]])
        lines += ["", "## Rewards", "", markdown_table(["reward", "loaded from", "weight", "mean", "failed"], rows)]
    judge = run.get("judge")
    if judge:
        u = judge["unigenbench"]
        lines += [
            "",
            f"## UniGenBench (judge `{judge['spec']}`, {judge['mode']} mode)",
            "",
            f"**Overall {_percent(u['overall'])}** (mean of {u['overall']['dimensions']} primary dimensions; "
            f"{u['images']['failed']} of {u['images']['total']} images failed and were left out "
            f"({u['testpoints']['excluded']} test points))",
            *_unigenbench_tables(u),
        ]
        if judge["scoring"]["errors"]:
            lines += ["", "First judge failures:", ""] + [f"- {e}" for e in judge["scoring"]["errors"]]
    div = run.get("diversity")
    if div:
        lines += [
            "",
            "## Within-prompt diversity",
            "",
            f"{_number(div['mean'])}: mean pairwise {div['features']} feature distance between the samples of a "
            "prompt, averaged over prompts (0 = identical samples).",
        ]
    lines += _scoring_lines(run)
    lines += _pictures(run)
    return "\n".join(lines) + "\n"


def _scoring_lines(run: Mapping[str, Any]) -> list[str]:
    rows = []
    for name, r in run["rewards"].items():
        s = r["scoring"]
        rows.append([name, s["total"], s["from_cache"], s["newly_scored"], s["failed"]])
    if run.get("judge"):
        s = run["judge"]["scoring"]
        rows.append([f"judge {run['judge']['spec']}", s["total"], s["from_cache"], s["newly_scored"], s["failed"]])
    g = run["generation"]
    lines = [
        "",
        "## Work done by this invocation",
        "",
        f"Samples: {g['total']} in all, {g['generated']} generated now.",
    ]
    if rows:
        lines += ["", markdown_table(["scorer", "items", "from cache", "newly scored", "failed"], rows)]
    errors = [(n, e) for n, r in run["rewards"].items() for e in r["scoring"]["errors"]]
    if errors:
        lines += ["", "First reward failures:", ""] + [f"- {n}: {e}" for n, e in errors]
    return lines


def _pictures(run: Mapping[str, Any]) -> list[str]:
    files = [*run.get("grids", []), *run.get("plots", [])]
    return ["", "## Samples and plots", ""] + [f"![{Path(f).stem}]({f})" for f in files] if files else []


def render_comparison_markdown(
    base: Mapping[str, Any], other: Mapping[str, Any], comparison: Mapping[str, Any], names: tuple[str, str]
) -> str:
    """The side-by-side report of two runs (``names``: how to call them, e.g. ``("base", "aligned")``)."""
    a, b = names
    lines = [f"# Generator benchmark: {b} vs {a}", "", f"### {a}", "", *_settings_lines(base)]
    lines += ["", f"### {b}", "", *_settings_lines(other), ""]
    lines.append(
        f"Compared on the {comparison['shared_samples']} samples both runs have (same prompt and seed). "
        + _INTERVALS.format(n=other["bootstrap"]["replicates"], seed=other["bootstrap"]["seed"])
    )
    if comparison["settings_that_differ"]:
        shown = "; ".join(
            f"{k}: {_short(v[0])} / {_short(v[1])}" for k, v in comparison["settings_that_differ"].items()
        )
        lines += ["", f"Settings that differ ({a} / {b}): {shown}"]
    if not comparison["same_prompt_set"]:
        lines += ["", "**Warning: the runs used different prompt files; only shared sample ids are compared.**"]
    rewards = comparison["rewards"]
    if rewards:
        rows = [
            [
                name,
                _number(r["base"]),
                _number(r["other"]),
                _number((r["paired"] or {}).get("gain")),
                _percent((r["paired"] or {}).get("beats_base")),
            ]
            for name, r in rewards.items()
        ]
        if comparison.get("total"):
            t = comparison["total"]
            paired = t["paired"] or {}
            rows.append(
                [
                    "weighted total",
                    _number(t["base"]),
                    _number(t["other"]),
                    _number(paired.get("gain")),
                    _percent(paired.get("beats_base")),
                ]
            )
        headers = ["reward", f"{a} mean", f"{b} mean", f"gain ({b} - {a}, paired)", f"{b} beats {a} (%)"]
        lines += ["", "## Rewards", "", markdown_table(headers, rows)]
    judge = comparison.get("judge")
    if judge:
        lines += [
            "",
            "## UniGenBench",
            "",
            f"Overall: {a} {_percent(judge['base']['overall'])}, {b} {_percent(judge['other']['overall'])}; "
            f"paired gain **{_number(judge['overall_gain'], digits=2, scale=100.0)}** points",
            *_unigenbench_tables(judge["base"], judge["other"], names),
        ]
    div = comparison.get("diversity")
    if div:
        lines += [
            "",
            "## Within-prompt diversity",
            "",
            f"{div['features']} features: {a} {_number(div['base'])}, {b} {_number(div['other'])}; paired change "
            f"{_number((div['paired'] or {}).get('gain'))} (a fall towards 0 is mode collapse)",
        ]
    files = list(comparison.get("files", []))
    if files:
        lines += ["", "## Samples and plots", ""] + [f"![{Path(f).stem}]({f})" for f in files]
    return "\n".join(lines) + "\n"
