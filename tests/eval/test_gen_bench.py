"""eval/gen_bench.py end to end (its main in this process): a tiny SD3 pipeline, a tiny CLIP reward, the
brightness reward and a tiny checklist judge on UniGenBench prompts; a run that is cut short and continued, a rerun
that does no work, a LoRA run compared with the base run, the compare command, judge answers that do not parse, a
remote judge, Wan videos, and errors before any model loads.

Numbers in results.json are recomputed here from the per-sample values (UniGenBench from the verdicts, diversity
from the sample files, paired gains from both runs' scores), so a pairing or pooling mistake cannot hide."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from eval import gen_bench
from mmreward import media, testing
from mmreward.evaluation import gen_results
from mmreward.evaluation.diversity import per_group_diversity, pixel_features
from mmreward.evaluation.generation import GenerationSettings, Sample, load_samples
from mmreward.evaluation.unigenbench import unigenbench_scores
from tests.cli_runs import run_main
from tests.fake_servers import fake_checklist_server

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "eval" / "gen_bench.py"


def run_program(*args: str) -> SimpleNamespace:
    """The program's main on ``args``, in this process (tests/cli_runs.py)."""
    return run_main(gen_bench.main, *args)


@pytest.fixture(scope="module")
def assets(tiny_root, tmp_path_factory):
    """Tiny reward presets and a LoRA saved the way align/flow_dpo.py saves one (run/lora + run/config.yaml)."""
    from mmreward.flow.models import DEFAULT_LORA_TARGETS, load_flow_model
    from mmreward.train.lora import add_lora, save_lora

    root = tmp_path_factory.mktemp("gen-bench-assets")
    model = load_flow_model("sd3", "tiny")
    add_lora(model.transformer, rank=4, alpha=8, target_modules=DEFAULT_LORA_TARGETS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if "lora_B" in name:  # B = 0 would leave the model unchanged
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    save_lora(model.pipeline_class, model.transformer, root / "dpo-run" / "lora")
    (root / "dpo-run" / "config.yaml").write_text("model:\n  family: sd3\n  path: tiny\n")
    return {
        "clip": str(testing.tiny_reward_preset("clip-score", tiny_root)),
        "judge": str(testing.tiny_vlm_preset("unigenbench-eval", tiny_root)),
        "lora": str(root / "dpo-run" / "lora"),
    }


def _args(assets, out: Path, *extra: str, limit: int = 2) -> list[str]:
    return [
        *"--model tiny --family sd3 --prompts unigenbench --limit".split(),
        str(limit),
        *"--images-per-prompt 2 --steps 3 --reward".split(),
        assets["clip"],
        *"--reward mmreward.rewards.brightness:BrightnessReward=0.5 --judge".split(),
        assets["judge"],
        *"--judge-mode logits --bootstrap 200 --out".split(),
        str(out),
        "--no-progress",
        *extra,
    ]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _check_numbers(run: dict, out: Path) -> None:
    """results.json against recomputations from its per-sample values and the sample files."""
    samples = run["samples"]
    judge = run["judge"]
    images = gen_results.image_verdicts(run)
    assert len(images) == len(samples) and all(v["error"] is None for v in judge["verdicts"].values())
    assert judge["unigenbench"]["overall"]["value"] == pytest.approx(
        unigenbench_scores(images, n_boot=0)["overall"]["value"]
    )
    for sample in samples:
        verdict = judge["verdicts"][sample["id"]]
        assert verdict["passed"] == [p > 0.5 for p in verdict["p_yes"]]
    brightness = run["rewards"]["BrightnessReward"]["scores"]
    pixels = load_samples([Sample(s["prompt_id"], s["index"], s["prompt"], out / s["path"]) for s in samples])
    torch.testing.assert_close(torch.tensor([brightness[s["id"]] for s in samples]), pixels.mean(dim=(1, 2, 3)))
    per_prompt = per_group_diversity(pixel_features(pixels), [s["prompt_id"] for s in samples])
    assert run["diversity"]["per_prompt"] == pytest.approx(per_prompt)
    clip = run["rewards"]["clip-score"]["scores"]
    total = {i: clip[i] + 0.5 * brightness[i] for i in clip}
    assert run["total"]["scores"] == pytest.approx(total)


def test_base_run_continues_after_an_interruption_and_a_rerun_does_nothing(assets, tmp_path, capsys, monkeypatch):
    base = tmp_path / "base"
    # A first invocation that stopped after one prompt (as if interrupted; in this process), then the full command.
    assert gen_bench.main(_args(assets, base, limit=1)) == 0
    first_files = {p.name: p.stat().st_mtime_ns for p in (base / "samples").glob("*.png")}
    assert sorted(first_files) == ["0_0.png", "0_1.png"]
    full = run_program(*_args(assets, base))
    assert full.returncode == 0, full.stderr
    run = _results(base)
    assert run["generation"] == {"total": 4, "generated": 2}  # only the second prompt's samples
    assert {p.name: p.stat().st_mtime_ns for p in (base / "samples").glob("0_*.png")} == first_files
    for name in ("clip-score", "BrightnessReward"):
        assert (
            run["rewards"][name]["scoring"]["from_cache"] == 2 and run["rewards"][name]["scoring"]["newly_scored"] == 2
        )
    assert run["judge"]["scoring"]["newly_scored"] == 2
    _check_numbers(run, base)
    manifest = json.loads((base / "samples" / "prompts.json").read_text())
    assert manifest == {s["id"]: s["prompt"] for s in run["samples"]}  # which prompt each sample file shows
    report = (base / "report.md").read_text()
    for section in (
        "## Rewards",
        "## UniGenBench",
        "### Primary dimensions",
        "### Sub-dimensions",
        "## Within-prompt",
    ):
        assert section in report
    assert (base / "samples_grid.png").stat().st_size > 1000 and (base / "unigenbench.png").is_file()

    # The same command again: nothing generated, nothing scored, no model loaded at all, same numbers.
    caches = {p.name: p.stat().st_mtime_ns for p in (base / "cache").glob("*.jsonl")}

    def no_model(*args, **kwargs):
        raise AssertionError(f"a finished run loaded a model: {args}")

    with monkeypatch.context() as patch:
        patch.setattr("mmreward.load_reward", no_model)
        patch.setattr("mmreward.flow.models.load_flow_model", no_model)
        assert gen_bench.main(_args(assets, base)) == 0
    rerun = _results(base)
    assert rerun["generation"]["generated"] == 0
    assert all(r["scoring"]["newly_scored"] == 0 for r in rerun["rewards"].values())
    assert rerun["judge"]["scoring"]["newly_scored"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (base / "cache").glob("*.jsonl")} == caches
    assert rerun["rewards"]["clip-score"]["scores"] == run["rewards"]["clip-score"]["scores"]
    assert rerun["judge"]["unigenbench"] == run["judge"]["unigenbench"]

    # The aligned run: same prompts and noise with a LoRA, compared with the base run.
    aligned = tmp_path / "aligned"
    result = run_program(*_args(assets, aligned, "--lora", assets["lora"], "--compare-to", str(base)))
    assert result.returncode == 0, result.stderr
    lora_run = _results(aligned)
    _check_numbers(lora_run, aligned)
    comparison = json.loads((aligned / "comparison.json").read_text())
    assert comparison["shared_samples"] == 4
    assert set(comparison["settings_that_differ"]) == {"lora", "lora_digest"}
    base_b, lora_b = run["rewards"]["BrightnessReward"]["scores"], lora_run["rewards"]["BrightnessReward"]["scores"]
    diffs = [lora_b[i] - base_b[i] for i in base_b]
    assert max(abs(d) for d in diffs) > 1e-3  # the LoRA changes the samples
    paired = comparison["rewards"]["BrightnessReward"]["paired"]
    assert paired["gain"]["value"] == pytest.approx(sum(diffs) / 4)
    assert paired["beats_base"]["value"] == pytest.approx(sum(d > 0 for d in diffs) / 4)
    overall = comparison["judge"]["overall_gain"]["value"]
    assert overall == pytest.approx(
        lora_run["judge"]["unigenbench"]["overall"]["value"] - run["judge"]["unigenbench"]["overall"]["value"]
    )
    markdown = (aligned / "comparison.md").read_text()
    assert "# Generator benchmark: aligned vs base" in markdown and "aligned beats base (%)" in markdown
    for name in ("side_by_side.png", "unigenbench_comparison.png", "reward_wins.png"):
        assert (aligned / name).stat().st_size > 1000

    # The compare command gives the same numbers from the two results.json files, without any model.
    out = tmp_path / "compare"
    assert gen_bench.main(["compare", str(base), str(aligned), "--out", str(out), "--bootstrap", "200"]) == 0
    again = json.loads((out / "comparison.json").read_text())
    assert again["rewards"] == comparison["rewards"] and again["judge"] == comparison["judge"]
    assert (out / "side_by_side.png").is_file()

    # The judge in its written mode on the base samples (nothing generated, rewards from their caches): the tiny
    # judge answers without a <score> list, so every image fails with the reason; UniGenBench is n/a, not 0, and
    # --on-error fail exits 1 with the report still written.
    args = _args(assets, base, "--on-error", "fail")
    args[args.index("--judge-mode") + 1] = "generate"
    assert gen_bench.main(args) == 1
    assert "4 item(s) failed to score (--on-error fail)" in capsys.readouterr().err
    written = _results(base)
    judge = written["judge"]
    assert written["generation"]["generated"] == 0 and judge["mode"] == "generate" and judge["scoring"]["failed"] == 4
    assert all(v["passed"] is None and "no <score>" in v["error"] for v in judge["verdicts"].values())
    u = judge["unigenbench"]
    assert u["images"] == {"total": 4, "failed": 4} and u["testpoints"] == {"scored": 0, "excluded": 14}
    assert u["overall"]["value"] is None  # NaN in results.json: nothing was scored, nothing is made up
    assert "**Overall n/a**" in (base / "report.md").read_text()
    assert written["rewards"]["clip-score"]["scores"] == run["rewards"]["clip-score"]["scores"]


def test_errors_come_before_any_model_loads(assets, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["--prompts", "drawbench"], "unknown prompt set 'drawbench'"),
        (["--prompts", "vbench"], "is a video prompt set, but --family sd3 generates images"),
        (["--height", "30"], "--height 30 does not fit sd3: use a positive multiple of 4 (32)"),
        ([*"--family wan --prompts".split(), str(tmp_path / "p.txt")], "the LoRA in"),
        (["--prompts", "pickscore"], "--judge needs test points per prompt"),
        (["--reward", "unifiedreward-pairwise"], "a pairwise judge has no per-sample score"),
        (["--reward", "no-such-reward"], "unknown reward 'no-such-reward'"),
        (["--judge", assets["clip"]], "is a ClipScore, not a checklist judge"),
        (["--compare-to", str(tmp_path)], "holds no results.json"),
        (["--images-per-prompt", "0"], "--images-per-prompt must be >= 1"),
    ]
    (tmp_path / "p.txt").write_text("a cat\n")
    for extra, message in cases:
        args = _args(assets, out)
        if extra[0] == "--family":
            args[args.index("--family") + 1] = "wan"
            args += ["--lora", assets["lora"], "--num-frames", "5"]
            extra = extra[2:]
        for flag, value in zip(extra[::2], extra[1::2], strict=True):
            if flag in args and flag not in ("--reward",):
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        assert gen_bench.main(args) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not out.exists()  # nothing was generated or scored
    # A run directory is tied to its generation settings.
    (out).mkdir()
    stored = GenerationSettings("sd3", "tiny", None, None, 40, 4.5, 32, 32, None, "", 0, "float32")
    (out / "run.json").write_text(json.dumps({"settings": stored.to_dict()}))
    assert gen_bench.main(_args(assets, out)) == 2
    assert "holds samples generated with other settings (num_steps: 40 -> 3);" in capsys.readouterr().err
    # ... and its samples to the prompts they were made from (another prompt file with the same ids is refused).
    (out / "run.json").unlink()
    (out / "samples").mkdir()
    (out / "samples" / "0_0.png").write_bytes(b"made for a pickscore prompt")
    (out / "samples" / "prompts.json").write_text(json.dumps({"0_0": "a cat"}))
    assert gen_bench.main(_args(assets, out)) == 2
    assert "1 existing sample(s) were generated from other prompts, e.g. 0_0.png (made for 'a cat'" in (
        capsys.readouterr().err
    )
    assert not (out / "run.json").exists()


def test_wan_videos_on_video_prompts(tmp_path):
    out = tmp_path / "wan"
    args = [
        *"--model tiny --family wan --prompts ta-hard --limit 1 --images-per-prompt 2".split(),
        *"--steps 2 --reward mmreward.rewards.brightness:BrightnessReward --out".split(),
        str(out),
        "--no-progress",
    ]
    assert gen_bench.main(args) == 0
    run = _results(out)
    assert run["settings"]["num_frames"] == 5 and run["prompt_set"]["media_kind"] == "video"
    paths = [out / s["path"] for s in run["samples"]]
    assert [p.name for p in paths] == ["0_0.mp4", "0_1.mp4"]
    frames, info = media.load_video(paths[0], num_frames=5)
    assert frames.shape == (5, 3, 32, 32) and info.source_fps == 16.0
    assert run["rewards"]["BrightnessReward"]["scores"]["0_0"] == pytest.approx(float(frames.mean()), abs=2e-3)
    assert run["diversity"]["per_prompt"]["0"] > 0 and (out / "samples_grid.png").is_file()


def test_remote_judge_through_a_preset_file(tmp_path):
    """A vLLM-served checklist judge named by a preset file (the way users point gen_bench at their server)."""
    preset = tmp_path / "my-judge.yaml"
    out = tmp_path / "out"
    args = [
        *"--model tiny --family sd3 --prompts unigenbench --limit 1 --images-per-prompt 2".split(),
        *"--steps 2 --judge".split(),
        str(preset),
        *"--judge-mode generate --out".split(),
        str(out),
        "--no-progress",
    ]
    with fake_checklist_server() as url:
        preset.write_text(
            f"type: checklist-judge\nbackend: chat\nendpoint: {url}\nmodel: UniGenBench-EvalModel\n"
            "template: unigenbench-checklist\n"
        )
        assert gen_bench.main(args) == 0
    judge = _results(out)["judge"]
    assert judge["mode"] == "generate" and judge["scoring"]["failed"] == 0
    brightness = load_samples([Sample("0", k, "", out / "samples" / f"0_{k}.png") for k in range(2)]).mean(
        dim=(1, 2, 3)
    )
    # The fake server passes every test point of an image whose mean pixel value is over 100 / 255.
    expected = [[bool(b * 255 > 100)] * 3 for b in brightness]
    assert [judge["verdicts"][f"0_{k}"]["passed"] for k in range(2)] == expected


def test_geneval2_prompts_scored_by_soft_tifa(tiny_root, tmp_path, monkeypatch):
    """``--prompts geneval2 --reward geneval2`` end to end: the set and the reward read one pinned file (a cached
    fixture of our wording under a pin of its own bytes), and every sample gets its Soft-TIFA."""
    import hashlib

    import yaml

    from mmreward import pinned_files
    from mmreward.evaluation.prompt_sets import PROMPT_SETS, NamedSet
    from mmreward.tiny_models import tiny_vlm_backbone

    lines = [
        {"prompt": "two red apples", "vqa_list": [["How many apples are in the image?", "two"]]},
        {"prompt": "a cat on a mat", "vqa_list": [["Is there a cat?", "Yes"], ["Is the cat on a mat?", "Yes"]]},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    pinned = pinned_files.PinnedFile(
        "facebookresearch/GenEval2", "b" * 40, "geneval2_data.jsonl", hashlib.sha256(data).hexdigest()
    )
    monkeypatch.setattr(pinned_files, "hf_cache_root", lambda kind: tmp_path / kind)
    cached = pinned_files.cache_path(pinned, tmp_path / "data")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    monkeypatch.setitem(PROMPT_SETS, "geneval2", NamedSet(pinned.spec(), "image", "fixture"))
    preset = tmp_path / "geneval2.yaml"
    weights = tiny_vlm_backbone(tiny_root / "qwen3_vl-soft-tifa", "qwen3_vl")
    preset.write_text(yaml.safe_dump({"type": "soft-tifa", "weights": str(weights), "data": pinned.spec()}))
    out = tmp_path / "run"
    args = [
        *"--model tiny --family sd3 --prompts geneval2 --images-per-prompt 2 --steps 2 --reward".split(),
        str(preset),
        *"--diversity-features none --no-progress --out".split(),
        str(out),
    ]
    assert gen_bench.main(args) == 0
    run = _results(out)
    assert [s["prompt"] for s in run["samples"]] == ["two red apples"] * 2 + ["a cat on a mat"] * 2
    (scores,) = [r["scores"] for r in run["rewards"].values()]
    values = [scores[s["id"]] for s in run["samples"]]
    assert len(values) == 4 and all(0 < v < 1 for v in values)
