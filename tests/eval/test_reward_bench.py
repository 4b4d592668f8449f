"""eval/reward_bench.py end to end (tiny rewards, CPU, real sample media; its main in this process, once as
``python -m``), the score cache and the metrics plumbing. Numbers in results.json are recomputed here from the
cached scores with the metric functions, so a sign or pairing mistake between scores and pairs cannot hide."""

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from eval import reward_bench
from mmreward import load_reward
from mmreward.errors import ConfigError
from mmreward.evaluation import metrics
from mmreward.evaluation.benchmarks import load_benchmark
from mmreward.evaluation.benchmarks.base import Benchmark, DatasetSource, PreferencePair
from mmreward.evaluation.results import (
    dimension_sources,
    evaluate_pairs,
    judge_margin_fn,
    pointwise_margin_fn,
    probability_gap_for_scores,
)
from mmreward.evaluation.score_cache import MediaItem, ScoreCache, media_key, reward_fingerprint, score_into_cache
from mmreward.testing import sample_images, tiny_reward_preset
from tests.cli_runs import run_main
from tests.eval_fixtures import pickapic_rows, write_imagereward_fixture, write_parquet, write_videogen_fixture

REPO = Path(__file__).resolve().parents[2]


def run_program(*args: str, module: bool = False) -> subprocess.CompletedProcess | SimpleNamespace:
    """The program on ``args``: in this process (tests/cli_runs.py), or as ``python -m eval.reward_bench``."""
    if not module:
        return run_main(reward_bench.main, *args)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "eval.reward_bench", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def read_cache(path: Path) -> list[dict]:
    """The records of a score cache file (after its header line), skipping a line cut short by an interruption."""
    records = []
    for line in path.read_text().splitlines()[1:]:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


# ---------------------------------------------------------------------------------------- end to end: pairwise


def test_videogen_end_to_end_with_judge_and_resume(tmp_path, tiny_root):
    data = write_videogen_fixture(tmp_path / "data")
    clip = tiny_reward_preset("clip-score", tiny_root)
    out = tmp_path / "out"
    args = [
        *"--benchmark videogen-rewardbench --data-dir".split(),
        str(data),
        "--reward",
        str(clip),
        *"--reward tests.eval_fixtures:BrightnessJudge --output-dir".split(),
        str(out),
        "--video-num-frames",
        "2",
        # One item per forward pass: rescored items then get bit-identical scores, whatever else is in the batch.
        "--batch-size",
        "1",
        "--bootstrap",
        "200",
        "--device",
        "cpu",
        "--no-progress",
    ]
    first = run_program(*args)
    assert first.returncode == 0, first.stderr
    results = json.loads((out / "results.json").read_text())
    clip_result, judge_result = results["rewards"]["clip-score"], results["rewards"]["BrightnessJudge"]
    # 12 pairs share 8 distinct (prompt, video) items: each is scored once; the judge sees each pair once.
    assert clip_result["scoring"] == {"total": 8, "from_cache": 0, "newly_scored": 8, "failed": 0, "errors": []}
    assert judge_result["scoring"]["newly_scored"] == 12 and judge_result["kind"] == "pairwise"

    # Recompute the metrics from the cached scores: margin = s(A) - s(B) per pair.
    bench = load_benchmark("videogen-rewardbench", data)
    clip_cache = read_cache(Path(clip_result["cache"]))
    score = {(r["prompt"], r["path"]): r["score"] for r in clip_cache}
    margins = np.array([score[(p.prompt, str(p.media_a))] - score[(p.prompt, str(p.media_b))] for p in bench.pairs])
    for dim in bench.dims:
        labels = [p.labels[dim] for p in bench.pairs]
        reported = clip_result["metrics"]["dims"][dim]
        assert reported["accuracy_without_ties"]["value"] == metrics.accuracy_without_ties(labels, margins)
        accuracy, threshold = metrics.accuracy_with_ties(labels, margins)
        assert (reported["accuracy_with_ties"]["value"], reported["accuracy_with_ties"]["threshold"]) == (
            accuracy,
            threshold,
        )
    judge_cache = read_cache(Path(judge_result["cache"]))
    verdict = {(r["a"], r["b"]): r for r in judge_cache}
    judge_margins = [2 * verdict[(str(p.media_a), str(p.media_b))]["prob_a"] - 1 for p in bench.pairs]
    overall = [p.labels["Overall"] for p in bench.pairs]
    reported = judge_result["metrics"]["dims"]["Overall"]["accuracy_without_ties"]["value"]
    assert reported == metrics.accuracy_without_ties(overall, judge_margins)
    consistency = np.mean([r["consistent"] for r in judge_cache])
    assert judge_result["judge"] == {"verdicts": 12, "order_consistency": consistency, "parse_failure_rate": 0.0}
    assert 0.0 < consistency < 1.0  # the judge's position bias flips some close pairs

    for name in ("accuracy_without_ties.png", "accuracy_with_ties.png", "tie_threshold.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "| clip-score | Overall | 12 (" in report and "## Pairwise judges" in report
    assert "![tie_threshold](tie_threshold.png)" in report

    # Interrupt: drop 3 scores and 4 verdicts from the caches and leave a half-written line behind.
    clip_path, judge_path = Path(clip_result["cache"]), Path(judge_result["cache"])
    clip_path.write_text("\n".join(clip_path.read_text().splitlines()[:-3]) + '\n{"key": "trunc')
    judge_path.write_text("\n".join(judge_path.read_text().splitlines()[:-4]) + "\n")
    second = run_program(*args)
    assert second.returncode == 0, second.stderr
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["rewards"]["clip-score"]["scoring"]["newly_scored"] == 3
    assert resumed["rewards"]["clip-score"]["scoring"]["from_cache"] == 5
    assert resumed["rewards"]["BrightnessJudge"]["scoring"]["newly_scored"] == 4
    for name in ("clip-score", "BrightnessJudge"):
        assert resumed["rewards"][name]["metrics"] == results["rewards"][name]["metrics"]
    # Header, 5 kept records, the partial line (left as it was, ignored), 3 new records.
    assert len(clip_path.read_text().splitlines()) == 10 and len(read_cache(clip_path)) == 8
    assert "newly scored 3" in second.stdout


# ------------------------------------------------------------------------------------------ end to end: ranking


def test_imagereward_end_to_end_with_a_broken_image(tmp_path, tiny_root):
    data = write_imagereward_fixture(tmp_path / "data", broken=True)
    pickscore = tiny_reward_preset("pickscore", tiny_root)
    out = tmp_path / "out"
    done = run_program(
        *"--benchmark imagereward-test --data-dir".split(),
        str(data),
        "--reward",
        str(pickscore),
        "--output-dir",
        str(out),
        *"--bootstrap 100 --device cpu --on-error fail".split(),
    )
    assert done.returncode == 1 and "1 item(s) failed to score (--on-error fail)" in done.stderr
    result = json.loads((out / "results.json").read_text())["rewards"]["pickscore"]
    assert result["scoring"]["failed"] == 1 and "not an image PIL can read" in result["scoring"]["errors"][0]
    assert result["metrics"]["groups"] == {"total": 3, "dropped": 0, "failed_items": 1}
    records = {r["path"]: r for r in read_cache(Path(result["cache"]))}
    bench = load_benchmark("imagereward-test", data)
    ranks, scores = [], []
    for group in bench.groups:
        kept = [(rank, records[str(p)]["score"]) for p, rank in zip(group.media, group.ranks, strict=True)]
        kept = [(rank, s) for rank, s in kept if s is not None]
        ranks.append([r for r, _ in kept])
        scores.append([s for _, s in kept])
    expected = metrics.ranking_pair_accuracy(ranks, scores)
    assert result["metrics"]["ranking_accuracy_micro"]["value"] == expected["micro"]
    assert result["metrics"]["inversion_accuracy"]["value"] == metrics.inversion_accuracy(ranks, scores)
    report = (out / "report.md").read_text()
    assert "## Ranking accuracy" in report and "1 item(s); 0 of 3 prompts" in report
    assert (out / "ranking_accuracy.png").stat().st_size > 10_000


def _pickscore_credit_by_hand(human: list[int], prob_margin: list[float], threshold: float) -> float:
    """PickScore's tie-aware accuracy, spelled out: predict a tie iff |P(A) - P(B)| <= threshold, else the side
    with the larger probability; 1 when prediction and label agree, 0.5 when exactly one of them is a tie."""
    credit = 0.0
    for h, m in zip(human, prob_margin, strict=True):
        predicted = 0 if abs(m) <= threshold else (1 if m > 0 else -1)
        credit += 1.0 if predicted == h else 0.5 if 0 in (predicted, h) else 0.0
    return credit / len(human)


def test_pickapic_end_to_end_with_a_weight_free_reward(tmp_path):
    """The tie-aware accuracy and the accuracy without ties in results.json equal the ones computed here from the
    photos' JPEG sizes (threshold chosen on validation_unique, first maximum), so a flipped side, a mixed-up split
    or a threshold chosen on the test set fails."""
    test_labels, validation_labels = [1, 0, 0.5, 1, 0, 0], [1, 0.5, 0, 1]
    test_rows, validation_rows = pickapic_rows(test_labels, 0), pickapic_rows(validation_labels, 10)
    data = tmp_path / "data"
    write_parquet(data / "data" / "test_unique-00000-of-00001-x.parquet", test_rows)
    write_parquet(data / "data" / "validation_unique-00000-of-00001-y.parquet", validation_rows)
    out = tmp_path / "out"
    done = run_program(
        *"--benchmark pickapic-v2 --data-dir".split(),
        str(data),
        *"--reward jpeg-compressibility --output-dir".split(),
        str(out),
        *"--bootstrap 50 --device cpu --no-progress".split(),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "results.json").read_text())["rewards"]["jpeg-compressibility"]["metrics"]

    reward = load_reward("jpeg-compressibility")

    def margins(rows: list[dict]) -> list[float]:
        """P(image 0) - P(image 1) per row: the reward's Bradley-Terry gap on the decoded JPEG bytes."""
        images = [Image.open(io.BytesIO(row[f"jpg_{k}"])) for row in rows for k in (0, 1)]
        scores = reward.score(["p"] * len(images), images).scores.double()
        return [
            math.tanh(reward.pairwise_scale * float(a - b) / 2) for a, b in zip(scores[::2], scores[1::2], strict=True)
        ]

    def human(labels: list[float]) -> list[int]:
        return [{1: 1, 0: -1, 0.5: 0}[label] for label in labels]

    test_margin, validation_margin = margins(test_rows), margins(validation_rows)
    validation_credit = [
        _pickscore_credit_by_hand(human(validation_labels), validation_margin, t) for t in metrics.PICKSCORE_THRESHOLDS
    ]
    threshold = metrics.PICKSCORE_THRESHOLDS[validation_credit.index(max(validation_credit))]
    expected = _pickscore_credit_by_hand(human(test_labels), test_margin, threshold)
    assert result["pickscore_accuracy"]["threshold"] == threshold
    assert result["pickscore_accuracy"]["value"] == pytest.approx(expected, abs=1e-9)
    assert result["pickscore_accuracy"]["n"] == len(test_labels)
    decided = [(h, m) for h, m in zip(human(test_labels), test_margin, strict=True) if h != 0]
    without_ties = result["dims"]["Overall"]["accuracy_without_ties"]
    assert without_ties["n"] == len(decided)
    assert without_ties["value"] == pytest.approx(sum(h * m > 0 for h, m in decided) / len(decided), abs=1e-9)
    assert result["validation_pairs"] == {"total": len(validation_labels), "failed": 0}
    assert (
        f"{100 * expected:.2f}" in done.stdout and "## PickScore tie-aware accuracy" in (out / "report.md").read_text()
    )


# -------------------------------------------------------------------------------------------- errors, no model


def test_errors_come_before_any_model_loads(tmp_path):
    missing = run_program(*"--benchmark hpdv2-test --data-dir".split(), str(tmp_path), "--reward", "pickscore")
    assert missing.returncode == 2 and "test.json' not found" in missing.stderr and "ymhao/HPDv2" in missing.stderr
    offline = run_program(
        *"--benchmark mjbench-video --data-dir".split(),
        str(tmp_path / "new"),
        *"--reward pickscore --download".split(),
    )
    assert offline.returncode == 2 and "cannot download" in offline.stderr
    assert "HF_HUB_OFFLINE is set" in offline.stderr
    vg = str(write_videogen_fixture(tmp_path / "vg"))
    typo = run_program(*"--benchmark videogen-rewardbench --data-dir".split(), vg, "--reward", "pikscore")
    assert typo.returncode == 2 and "unknown reward 'pikscore'" in typo.stderr
    listing = run_program("--list", module=True)
    assert listing.returncode == 0 and "KlingTeam/VideoGen-RewardBench" in listing.stdout


# ------------------------------------------------------------------------------------------------ score cache


def test_score_cache_scores_distinct_items_once_and_resumes(tmp_path):
    reward = load_reward("jpeg-compressibility", batch_size=2)
    photos = sample_images()[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    items = [MediaItem("p", path, media_key("p", path, tmp_path)) for path in [*photos, photos[0], broken]]
    fingerprint = reward_fingerprint(reward, "jpeg-compressibility")
    cache = ScoreCache(tmp_path / "cache", reward.name, fingerprint)
    stats = score_into_cache(reward, items, cache, progress=False)
    assert (stats.total, stats.scored, stats.failed) == (4, 4, 1)  # the repeated photo is scored once
    again = score_into_cache(reward, items, ScoreCache(tmp_path / "cache", reward.name, fingerprint), progress=False)
    assert (again.cached, again.scored, again.failed) == (4, 0, 1)
    retried = score_into_cache(
        reward, items, ScoreCache(tmp_path / "cache", reward.name, fingerprint), retry_failed=True, progress=False
    )
    assert (retried.cached, retried.scored) == (3, 1)
    direct = reward.score(["p"], [str(photos[1])]).scores[0].item()
    assert cache.get(items[1].key)["score"] == pytest.approx(direct)
    # Another configuration gets another file; a file tampered with is refused.
    other = reward_fingerprint(load_reward("jpeg-compressibility", video_num_frames=4), "jpeg-compressibility")
    assert ScoreCache(tmp_path / "cache", reward.name, other).path != cache.path
    # A registry name stands for its shipped preset's text; a judge's frame rule is part of its configuration.
    assert fingerprint["spec_file"] and "spec_file" not in reward_fingerprint(reward, "no-such-reward")
    judge = load_reward("unifiedreward-think-remote", template="ours")  # offline: our wording, no download
    floor = reward_fingerprint(judge, "unifiedreward-think-remote")
    judge.frame_rule = "round"
    assert reward_fingerprint(judge, "unifiedreward-think-remote") != floor and floor["frame_rule"] == "floor"
    lines = cache.path.read_text().splitlines()
    cache.path.write_text("\n".join([json.dumps({"fingerprint": {"spec": "x"}}), *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match="written for another reward configuration"):
        ScoreCache(tmp_path / "cache", reward.name, fingerprint)


# -------------------------------------------------------------------------------------------- margin plumbing


def _tiny_benchmark(protocol: str = "pairwise") -> Benchmark:
    a, b, c = (Path(f"/m/{n}.png") for n in "abc")
    source = DatasetSource("org/x", ("f",), "DIR", "MIT", "paper")
    pairs = [
        PreferencePair("0", "p", a, b, {"Overall": 1, "VQ": -1}),
        PreferencePair("1", "p", b, c, {"Overall": 0, "VQ": 1}),
        PreferencePair("2", "p", a, c, {"Overall": -1}),
    ]
    validation = [PreferencePair("v0", "p", a, b, {"Overall": 1}), PreferencePair("v1", "p", b, c, {"Overall": 0})]
    return Benchmark(
        "tiny",
        "tiny",
        "image",
        protocol,
        ("VQ", "Overall"),
        source,
        "accuracy_without_ties",
        pairs,
        validation if protocol == "pickscore" else [],
    )


def test_pointwise_margins_use_matching_dimensions():
    # Scores: a = 3, b = 1, c = 2 overall; the reward's "vq" dimension: a = 0, b = 5, c = 5.
    records = {
        "a": {"score": 3.0, "dims": {"vq": 0.0}, "error": None},
        "b": {"score": 1.0, "dims": {"vq": 5.0}, "error": None},
        "c": {"score": 2.0, "dims": {"vq": 5.0}, "error": None},
    }
    sources = dimension_sources(("VQ", "Overall"), ("vq",))
    assert sources == {"VQ": "vq", "Overall": None}
    margin_of = pointwise_margin_fn(lambda prompt, path: records[path.stem], sources)
    bench = _tiny_benchmark()
    result = evaluate_pairs(bench, margin_of, probability_gap=lambda m: m, n_boot=20, seed=0)
    # Overall margins 2, -1, 1 vs labels 1, 0, -1 -> without ties: pair 0 right, pair 2 wrong -> 1/2.
    assert result["dims"]["Overall"]["accuracy_without_ties"]["value"] == 0.5
    # VQ margins -5, 0 (pair 2 has no VQ label) vs labels -1, 1 -> right, model tie (wrong) -> 1/2.
    assert result["dims"]["VQ"]["accuracy_without_ties"]["value"] == 0.5
    assert result["dims"]["VQ"]["pairs"] == 2
    records["c"]["error"] = "unreadable"
    failed = evaluate_pairs(bench, margin_of, probability_gap=lambda m: m, n_boot=20, seed=0)
    assert failed["pairs"] == {"total": 3, "failed": 2} and failed["dims"]["Overall"]["pairs"] == 1


def test_pickscore_protocol_uses_the_softmax_gap():
    scores = {"a": 2.0, "b": 0.0, "c": 0.1}
    records = {k: {"score": v, "dims": {}, "error": None} for k, v in scores.items()}
    margin_of = pointwise_margin_fn(lambda prompt, path: records[path.stem], {"VQ": None, "Overall": None})
    result = evaluate_pairs(
        _tiny_benchmark("pickscore"), margin_of, probability_gap=probability_gap_for_scores(1.0), n_boot=20, seed=0
    )
    # P(A) - P(B) of a 2-way softmax = tanh(gap / 2); validation gaps 2.0 (label A), -0.1 (tie), test 2, -0.1, 1.9.
    expected = metrics.pickscore_tie_accuracy(
        [1, 0], np.tanh(np.array([2.0, -0.1]) / 2), [1, 0, -1], np.tanh(np.array([2.0, -0.1, 1.9]) / 2)
    )
    reported = result["pickscore_accuracy"]
    assert (reported["value"], reported["threshold"]) == expected
    softmax = torch.softmax(torch.tensor([2.0, 0.0]), dim=0)
    assert probability_gap_for_scores(1.0)(np.array([2.0]))[0] == pytest.approx(float(softmax[0] - softmax[1]))


def test_judge_margins_are_two_p_minus_one():
    verdicts = {"0": 0.9, "1": 0.5, "2": 0.2}
    margin_of = judge_margin_fn(lambda pair: {"prob_a": verdicts[pair.id], "error": None}, ("VQ", "Overall"))
    bench = _tiny_benchmark()
    assert [margin_of(p) for p in bench.pairs] == [
        {"VQ": pytest.approx(0.8), "Overall": pytest.approx(0.8)},
        {"VQ": 0.0, "Overall": 0.0},
        {"VQ": pytest.approx(-0.6), "Overall": pytest.approx(-0.6)},
    ]
