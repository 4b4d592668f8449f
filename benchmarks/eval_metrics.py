"""Speed of the benchmark metrics, and the scoring work that de-duplicating media saves.

    PYTHONPATH=. python benchmarks/eval_metrics.py [--pairs 26500] [--replicates 200]
    PYTHONPATH=. python benchmarks/eval_metrics.py --smoke   # 200 pairs, 2 replicates: checks it runs

Prints, each against a baseline run in the same process on the same data:

1. tie calibration (accuracy with ties) on a VideoGen-RewardBench-sized set: mmreward's vectorised sweep against
   a pair-by-pair Python sweep over the sorted pairs (the way VideoAlign's calc_accuracy_with_ties walks them);
2. its bootstrap interval: mmreward's weighted sweep against resampling the pairs and re-running tie calibration
   per replicate;
3. media scored for ImageReward test (shipped labels): distinct images against scoring both sides of every pair.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from mmreward.evaluation import metrics
from mmreward.evaluation.benchmarks.base import SHIPPED_LABELS


def python_sweep(human: np.ndarray, margin: np.ndarray) -> tuple[float, float]:
    """Baseline: walk pairs sorted by |m|, moving one pair at a time from 'decided' to 'tie', scoring at group ends."""
    order = sorted(range(len(human)), key=lambda i: abs(margin[i]))
    decided_right = sum(1 for h, m in zip(human, margin, strict=True) if h != 0 and h * m > 0)
    tie_right, best, best_eps = 0, decided_right / len(human), 0.0
    for position, i in enumerate(order):
        decided_right -= 1 if human[i] != 0 and human[i] * margin[i] > 0 else 0
        tie_right += 1 if human[i] == 0 else 0
        last_of_group = position + 1 == len(order) or abs(margin[order[position + 1]]) != abs(margin[i])
        if last_of_group and (tie_right + decided_right) / len(human) > best:
            best, best_eps = (tie_right + decided_right) / len(human), abs(margin[i])
    return best, best_eps


def timed(function, *args, repeat: int = 3):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, value


# ``--smoke``: every comparison above on a set small enough that the pair-by-pair baseline takes milliseconds.
SMOKE = {"pairs": 200, "replicates": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=26_500, help="pairs (VideoGen-RewardBench has 26.5k)")
    parser.add_argument("--replicates", type=int, default=200, help="bootstrap replicates for the interval timing")
    parser.add_argument("--smoke", action="store_true", help="smallest sizes (the test suite's run)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)

    rng = np.random.default_rng(0)
    human = rng.choice([-1, 0, 1], size=args.pairs, p=[0.4, 0.2, 0.4])
    margin = np.round(rng.normal(size=args.pairs) + 0.6 * human, 3)  # rounded: groups of equal |m|, as in real data

    print(f"1. tie calibration, {args.pairs} pairs (best of 3)")
    base_time, base_value = timed(python_sweep, human.tolist(), margin.tolist())
    ours_time, ours_value = timed(metrics.accuracy_with_ties, human, margin)
    assert np.isclose(base_value[0], ours_value[0]) and np.isclose(base_value[1], ours_value[1])
    for label, seconds, (accuracy, eps) in (
        ("python pair-by-pair sweep", base_time, base_value),
        ("mmreward vectorised sweep", ours_time, ours_value),
    ):
        print(f"   {label} : {seconds * 1e3:9.1f} ms   accuracy {accuracy:.4f} eps {eps}")
    print(f"   speed-up                  : {base_time / ours_time:9.1f}x")

    print(f"2. bootstrap interval of accuracy with ties, {args.replicates} replicates (best of 1)")

    def resample_and_refit() -> tuple[float, float]:
        generator = np.random.default_rng(0)
        values = []
        for _ in range(args.replicates):
            index = generator.integers(0, args.pairs, size=args.pairs)
            values.append(metrics.accuracy_with_ties(human[index], margin[index])[0])
        low, high = np.quantile(values, [0.025, 0.975])
        return float(low), float(high)

    base_time, (base_low, base_high) = timed(resample_and_refit, repeat=1)
    ours_time, estimate = timed(
        lambda: metrics.accuracy_with_ties_ci(human, margin, n_boot=args.replicates, seed=0), repeat=1
    )
    print(f"   resample + refit          : {base_time:9.2f} s    [{base_low:.4f}, {base_high:.4f}]")
    print(f"   weighted sweep            : {ours_time:9.2f} s    [{estimate.low:.4f}, {estimate.high:.4f}]")
    print(f"   speed-up                  : {base_time / ours_time:9.1f}x")

    print("3. media to score, ImageReward test (shipped labels)")
    records = json.loads(Path(SHIPPED_LABELS / "imagereward_test.json").read_text())
    pair_sides = sum(
        2
        for r in records
        for i, j in itertools.combinations(range(len(r["ranking"])), 2)
        if r["ranking"][i] != r["ranking"][j]
    )
    distinct = len({(r["prompt"], g) for r in records for g in r["generations"]})
    print(f"   both sides of each untied pair : {pair_sides}")
    print(f"   distinct (prompt, image)       : {distinct}")
    print(f"   fewer forward passes           : {pair_sides / distinct:.1f}x")


if __name__ == "__main__":
    main()
