"""eval/reward_bench.py on TIGER-Lab's EditReward-Bench: a source-aware reward and an image-only reward, end to end."""

import json
from pathlib import Path

import pytest

from eval import reward_bench
from mmreward.evaluation import editreward_metric
from mmreward.evaluation.benchmarks import load_benchmark
from tests.eval.test_reward_bench import read_cache
from tests.eval_fixtures import write_editreward_bench_standin

DELTA = "mmreward.rewards.brightness:BrightnessDeltaReward"
PLAIN = "mmreward.rewards.brightness:BrightnessReward"


def test_reward_bench_editreward_end_to_end(tmp_path, capsys):
    data = write_editreward_bench_standin(tmp_path / "data")
    out = tmp_path / "out"
    # In this process (the other reward-bench tests run the program as a subprocess): no second torch import.
    status = reward_bench.main(
        [
            *f"--benchmark tigerlab-editreward-bench --data-dir {data} --reward {DELTA} --reward {PLAIN}".split(),
            *f"--output-dir {out} --bootstrap 100 --device cpu --no-progress".split(),
        ]
    )
    assert status == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    bench = load_benchmark("tigerlab-editreward-bench", data)
    delta, plain = results["rewards"]["BrightnessDeltaReward"], results["rewards"]["BrightnessReward"]

    # The source-aware reward got each candidate with its group's source: score = brightness(edit - source).
    records = read_cache(Path(delta["cache"]))
    assert len(records) == 16 and delta["scoring"]["newly_scored"] == 16
    source_of = {str(p): g.meta["source_image"] for g in bench.groups for p in g.media}
    for record in records:
        assert record["source"] == source_of[record["path"]]
    by_path = {r["path"]: r["score"] for r in records}
    s1 = bench.groups[0]
    assert by_path[str(s1.media[0])] == pytest.approx((160 - 100) / 255, abs=1e-6)

    # The metrics are the authors' on these scores; the stand-in's levels make them known in advance.
    scored = [
        editreward_metric.ScoredGroup(
            g.meta["subset"],
            tuple(g.meta["ranking"]) if isinstance(g.meta["ranking"], list) else g.meta["ranking"],
            tuple(g.meta["pair_labels"]),
            tuple(by_path[str(p)] for p in g.media),
        )
        for g in bench.groups
    ]
    subsets, _ = editreward_metric.evaluate(scored)
    assert delta["metrics"]["editreward_subsets"] == {k: v.to_dict() for k, v in subsets.items()}
    strict = {k: v["strict_ranking_accuracy"] for k, v in delta["metrics"]["editreward_subsets"].items()}
    assert strict == pytest.approx({"K=2": 2 / 3, "K=3": 1 / 2, "K=4": 1.0, "overall": 4 / 6})
    assert delta["metrics"]["editreward_strict_accuracy"]["value"] == pytest.approx(4 / 6)
    assert delta["metrics"]["editreward_subsets"]["K=2"]["epsilon"] == 0.0  # the tied pair s2 scores equal

    # An image-only reward scores the edits alone (the source is not given to it) and ranks these groups alike.
    plain_scores = {r["path"]: r["score"] for r in read_cache(Path(plain["cache"]))}
    assert plain_scores[str(s1.media[0])] == pytest.approx(160 / 255, abs=1e-6)
    assert plain["metrics"]["editreward_strict_accuracy"]["value"] == pytest.approx(4 / 6)

    report = (out / "report.md").read_text()
    assert "## EditReward-Bench accuracy (the authors' evaluate_edit_reward_bench)" in report
    assert "| BrightnessDeltaReward | K=4 | 1/1 | 100.00 |" in report
    assert "EditReward-Bench (TIGER-Lab) - editreward_strict_accuracy" in capsys.readouterr().out
    assert (out / "strict_ranking_accuracy.png").is_file()


def test_a_pairwise_judge_is_refused_with_the_reason(tmp_path, capsys):
    data = write_editreward_bench_standin(tmp_path / "data")
    status = reward_bench.main(
        [
            *f"--benchmark tigerlab-editreward-bench --data-dir {data} --output-dir {tmp_path / 'out'}".split(),
            *"--reward tests.eval_fixtures:BrightnessJudge --device cpu --no-progress".split(),
        ]
    )
    assert status == 2 and "need a pointwise reward" in capsys.readouterr().err
