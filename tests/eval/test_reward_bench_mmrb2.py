"""MMRB2 in eval/reward_bench.py: the loader on a tiny stand-in in the released layout (real sample photos), the
Hub-parquet conversion, and end-to-end runs with a tiny pointwise reward and a position-biased pairwise judge whose
reported MMRB2 accuracies are recomputed here by hand from the score caches."""

import json
import shutil
from pathlib import Path

import pytest

from mmreward.evaluation.benchmarks import BenchmarkDataError, load_benchmark, mmrb2
from mmreward.testing import sample_images, tiny_reward_preset
from tests.eval.test_reward_bench import read_cache, run_program
from tests.eval_fixtures import write_parquet

PHOTOS = {p.name.split(".")[0]: p for p in sample_images()}


def _image(data: Path, folder: str, name: str, photo: str) -> str:
    target = data / folder / f"{name}{PHOTOS[photo].suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PHOTOS[photo], target)
    return f"{folder}/{target.name}"


def _pair(data, pair_id, chosen, a, b, prompt="a photo", prompt_image=None, bare=False):
    ref_a, ref_b = (_image(data, "images", f"{pair_id}_{side}", photo) for side, photo in (("a", a), ("b", b)))
    if bare:  # run_release.sh keeps bare file names for response images
        ref_a, ref_b = Path(ref_a).name, Path(ref_b).name
    content = [["text", prompt]]
    if prompt_image:
        content.append(["image", _image(data, "input_images", f"{pair_id}_prompt_0", prompt_image)])
    return {
        "id": pair_id,
        "prompt_content": content,
        "prompt_source": "stand-in",
        "response_a": {"model_name": "m1", "response_content": [["image", ref_a]]},
        "response_b": {"model_name": "m2", "response_content": [["image", ref_b]]},
        "chosen": chosen,
    }


def write_mmrb2_standin(data: Path) -> Path:
    """Four task files: single-image pairs, a pair with identical responses, malformed pairs, an interleaved pair
    with text and two images, and a reasoning task with text answers only."""
    t2i = [
        _pair(data, "t0", "A", "astronaut", "moon", "an astronaut"),  # similar brightness: the judge flips
        _pair(data, "t1", "B", "hubble_deep_field", "camera", "a camera"),
        _pair(data, "t2", "B", "page", "rocket", "a rocket", bare=True),
        _pair(data, "t3", "A", "coins", "coins", "coins"),  # same photo twice: a pointwise tie, wrong both times
        {**_pair(data, "t4", "C", "grass", "brick"), "chosen": "C"},
        {k: v for k, v in _pair(data, "t5", "A", "grass", "brick").items() if k != "response_b"},
    ]
    edit = [
        _pair(data, "e0", "A", "chelsea", "coffee", "make the cat orange", prompt_image="chelsea"),
        _pair(data, "e1", "A", "gravel", "cell", "sharpen it", prompt_image="gravel"),
    ]
    two_images = _pair(data, "i0", "A", "brick", "grass", "draw a wall, then grass")
    two_images["response_a"]["response_content"] = [
        ["text", "first a wall"],
        ["image", _image(data, "images", "i0_a_0", "brick")],
        ["image", _image(data, "images", "i0_a_1", "grass")],
    ]
    interleaved = [two_images, _pair(data, "i1", "B", "brick", "grass", "grass")]
    reasoning = [
        {
            "id": "r0",
            "prompt_content": [["text", "which is brighter?"], ["image", _image(data, "input_images", "r0", "moon")]],
            "response_a": {"model_name": "m1", "response_content": [["text", "the left one"]]},
            "response_b": {"model_name": "m2", "response_content": [["text", "the right one"]]},
            "chosen": "B",
        }
    ]
    for task, pairs in (("t2i", t2i), ("edit", edit), ("interleaved", interleaved), ("reasoning", reasoning)):
        (data / f"{task}.json").write_text(json.dumps({"pairs": pairs}))
    return data


def test_loader_reads_the_released_layout_and_fails_bad_pairs_alone(tmp_path):
    data = write_mmrb2_standin(tmp_path / "data")
    bench = load_benchmark("mmrb2", data)
    assert [p.id for p in bench.pairs] == [
        "t2i/t0",
        "t2i/t1",
        "t2i/t2",
        "t2i/t3",
        "edit/e0",
        "edit/e1",
        "interleaved/i1",
    ]
    assert bench.dims == ("t2i", "edit", "interleaved")  # reasoning has no single-image pair
    assert bench.subset_sizes == {"t2i": 6, "edit": 2, "interleaved": 2, "reasoning": 1}
    t0, t2, e0 = bench.pairs[0], bench.pairs[2], bench.pairs[4]
    assert t0.labels == {"t2i": 1} and t2.labels == {"t2i": -1} and t0.prompt == "an astronaut"
    assert t2.media_a == data / "images" / "t2_a.png"  # a bare name found in DIR/images
    assert e0.meta["prompt_images"] == [str(data / "input_images" / "e0_prompt_0.png")]
    assert e0.prompt == "make the cat orange" and e0.meta["chosen"] == "A"
    notes = " ".join(bench.notes)
    assert "t2i (text-to-image): 4 of 6 pairs scored; 2 malformed pairs are missing" in notes
    assert "t2i.json pair 4 (t4): chosen is 'C', not 'A' or 'B'" in notes
    assert "t2i.json pair 5 (t5): lacks field(s) ['response_b']" in notes
    assert "interleaved (interleaved text and image): 1 of 2 pairs scored; 1 with text or several" in notes

    edit_only = load_benchmark("mmrb2", data, tasks="edit")
    assert [p.id for p in edit_only.pairs] == ["edit/e0", "edit/e1"] and edit_only.subset_sizes == {"edit": 2}
    with pytest.raises(BenchmarkDataError, match=r"no MMRB2 pair of \['reasoning'\].*one image per response"):
        load_benchmark("mmrb2", data, tasks=["reasoning"])
    with pytest.raises(BenchmarkDataError, match="distinct names among"):
        mmrb2.parse_tasks("t2i,video")
    (data / "edit.json").unlink()
    with pytest.raises(BenchmarkDataError, match="edit.json' not found.*rl-research/multimodal-rewardbench-2"):
        load_benchmark("mmrb2", data)
    (data / "images" / "t0_a.png").unlink()
    with pytest.raises(BenchmarkDataError, match="1 media file"):
        load_benchmark("mmrb2", data, tasks="t2i")


def test_download_writes_the_released_layout_from_hub_parquet(tmp_path, monkeypatch):
    data = tmp_path / "data"
    image = {"bytes": PHOTOS["camera"].read_bytes(), "path": "camera.png"}
    other = {"bytes": PHOTOS["coins"].read_bytes(), "path": "coins.png"}

    def row(pair_id, text_b, chosen):
        return {
            "pair_id": pair_id,
            "prompt_text": "edit <image_1> to look like this",
            "prompt_images": [image],
            "response_a_text": "",
            "response_a_images": [image],
            "response_b_text": text_b,
            "response_b_images": [other],
            "chosen": chosen,
            "prompt_source": "stand-in",
            "response_a_model": "m1",
            "response_b_model": "m2",
        }

    write_parquet(
        data / "edit" / "test-00000-of-00001.parquet",
        [row("p0", "", "b"), row("p1", "here: <image_1> and the rest", "A")],
    )
    fetched = []
    monkeypatch.setattr(mmrb2, "hub_download", lambda source, folder, patterns: fetched.append(patterns))
    bench = load_benchmark("mmrb2", data, tasks="edit", download=True)
    assert fetched == [["edit/test-*.parquet"]]
    p0, p1 = json.loads((data / "edit.json").read_text())["pairs"]
    assert p0["prompt_content"] == [
        ["text", "edit"],
        ["image", "input_images/p0_prompt_0.png"],
        ["text", "to look like this"],
    ]
    assert p0["response_a"]["response_content"] == [["image", "images/p0_a_0.png"]]
    assert p0["response_b"]["response_content"] == [["image", "images/p0_b_0.png"]]  # no placeholder: appended
    assert p1["response_b"]["response_content"] == [
        ["text", "here:"],
        ["image", "images/p1_b_0.png"],
        ["text", "and the rest"],
    ]
    assert (p0["chosen"], p1["chosen"]) == ("B", "A")
    assert (data / "images" / "p0_a_0.png").read_bytes() == image["bytes"]
    # p1's response B has text: only p0 is scored.
    assert [p.id for p in bench.pairs] == ["edit/p0"] and bench.pairs[0].labels == {"edit": -1}
    load_benchmark("mmrb2", data, tasks="edit", download=True)  # the JSON exists: nothing is fetched again
    assert len(fetched) == 1


def _expected(bench, forward_reverse):
    """MMRB2's per-task (correct, counted) by hand: verdict A/B/tie by the sign of each presentation's margin."""

    def verdict(m):
        return "A" if m > 0 else "B" if m < 0 else "tie"

    counts = {}
    for pair in bench.pairs:
        fwd, rev = forward_reverse(pair)
        back = {"A": "B", "B": "A"}.get(verdict(rev), verdict(rev))
        chosen = pair.meta["chosen"]
        c, n = counts.get(pair.meta["task"], (0, 0))
        counts[pair.meta["task"]] = (c + (verdict(fwd) == chosen) + (back == chosen), n + 2)
    return counts


def test_reward_bench_mmrb2_end_to_end_with_a_reward_and_a_judge(tmp_path, tiny_root):
    data = write_mmrb2_standin(tmp_path / "data")
    clip = tiny_reward_preset("clip-score", tiny_root)
    out = tmp_path / "out"
    done = run_program(
        *"--benchmark mmrb2 --data-dir".split(),
        str(data),
        "--reward",
        str(clip),
        *"--reward tests.eval_fixtures:BrightnessJudge --output-dir".split(),
        str(out),
        *"--tasks t2i,edit,interleaved,reasoning --batch-size 1 --bootstrap 200 --device cpu --no-progress".split(),
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    bench = load_benchmark("mmrb2", data)
    clip_result, judge_result = results["rewards"]["clip-score"], results["rewards"]["BrightnessJudge"]

    # The reward scores each distinct (prompt, image) once; the judge sees each pair in both orders.
    assert clip_result["scoring"]["newly_scored"] == 14 and clip_result["scoring"]["failed"] == 0
    assert judge_result["scoring"]["newly_scored"] == 14 and judge_result["kind"] == "pairwise"

    score = {(r["prompt"], r["path"]): r["score"] for r in read_cache(Path(clip_result["cache"]))}

    def clip_margins(pair):
        gap = score[(pair.prompt, str(pair.media_a))] - score[(pair.prompt, str(pair.media_b))]
        return gap, -gap

    verdicts = {(r["a"], r["b"]): r["prob_a"] for r in read_cache(Path(judge_result["cache"]))}

    def judge_margins(pair):
        a, b = str(pair.media_a), str(pair.media_b)
        return verdicts[(a, b)] - 0.5, verdicts[(b, a)] - 0.5

    sizes = {"t2i": 6, "edit": 2, "interleaved": 2, "reasoning": 1}
    scored = {"t2i": 4, "edit": 2, "interleaved": 1, "reasoning": 0}
    for result, margins in ((clip_result, clip_margins), (judge_result, judge_margins)):
        expected = _expected(bench, margins)
        tasks = result["metrics"]["mmrb2_tasks"]
        assert list(tasks) == list(sizes)
        for task, size in sizes.items():
            c, n = expected.get(task, (0, 0))
            assert tasks[task]["total_pairs"] == size and tasks[task]["missing_pairs"] == size - scored[task]
            assert (tasks[task]["total_correct"], tasks[task]["total_evaluated"]) == (c, n)
            assert tasks[task]["accuracy"] == (c / n if n else 0.0)
        pooled = sum(c for c, _ in expected.values()) / sum(n for _, n in expected.values())
        assert result["metrics"]["mmrb2_accuracy"]["value"] == pytest.approx(pooled, abs=1e-12)
        assert result["metrics"]["mmrb2_accuracy"]["n"] == 7

    # Identical responses (t3) tie for the reward: both its trials are wrong, whatever the label.
    t3 = next(p for p in bench.pairs if p.id == "t2i/t3")
    assert clip_margins(t3) == (0.0, -0.0)
    # The judge's position bias flips the close pairs (t0: astronaut vs moon; t3): exactly 1 of 2 trials each.
    flips = [p.id for p in bench.pairs if (judge_margins(p)[0] > 0) == (judge_margins(p)[1] > 0)]
    assert "t2i/t0" in flips and "t2i/t3" in flips
    assert judge_result["judge"]["order_consistency"] == pytest.approx(1 - len(flips) / len(bench.pairs))

    report = (out / "report.md").read_text()
    assert "## MMRB2 accuracy (both presentation orders, ties wrong, tasks pooled)" in report
    assert "| BrightnessJudge | reasoning | 1 | 1 | 0 | n/a |" in report
    summary = done.stdout
    assert "MMRB2 (t2i, edit, interleaved, reasoning) - mmrb2_accuracy" in summary


def test_tasks_flag_is_checked_before_any_model_loads(tmp_path):
    data = write_mmrb2_standin(tmp_path / "data")
    wrong = run_program("--benchmark", "mmrb2", "--data-dir", str(data), "--reward", "brightness", "--tasks", "video")
    assert wrong.returncode == 2 and "distinct names among" in wrong.stderr
    other = run_program(
        "--benchmark", "pickapic-v2", "--data-dir", str(data), "--reward", "brightness", "--tasks", "t2i"
    )
    assert other.returncode == 2 and "--tasks selects MMRB2 tasks" in other.stderr
    listing = run_program("--list")
    assert (
        "mmrb2: MMRB2: 1,000 pairs per task" in listing.stdout
        and "rl-research/multimodal-rewardbench-2" in listing.stdout
    )
