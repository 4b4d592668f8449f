"""eval/gen_bench.py on an editing prompt file (tiny Qwen-Image-Edit, in process): each line's source is edited with
the same seeded noise a direct ODE rollout gets, rewards that compare with the source get that line's source, a
malformed line and an undecodable source are left out with their line numbers while the rest is generated and
scored, and a changed source image is never mistaken for the one a sample was made from."""

import json
from pathlib import Path

import pytest
import torch

from eval import gen_bench
from mmreward import media
from mmreward.data.prompts import load_sources
from mmreward.flow.models import load_flow_model
from mmreward.flow.rollout import sample_ode, seeded
from mmreward.rewards.brightness import BrightnessDeltaReward, BrightnessReward

DELTA = "mmreward.rewards.brightness:BrightnessDeltaReward"
PLAIN = "mmreward.rewards.brightness:BrightnessReward"


def _edit_set(root: Path) -> Path:
    """Four lines: two good edits (line 1, line 4), a line that is not JSON (2), a PNG cut short after its header
    (3: PIL identifies it, its pixels do not decode)."""
    generator = torch.Generator().manual_seed(3)
    (root / "src").mkdir()
    for name, level in (("dark", 0.2), ("light", 0.7)):
        pixels = (level + 0.1 * torch.rand(3, 32, 32, generator=generator)).clamp(0, 1)
        media.save_media(pixels, root / "src" / f"{name}.png")
    data = (root / "src" / "light.png").read_bytes()
    (root / "src" / "cut.png").write_bytes(data[: len(data) // 2])
    lines = [
        json.dumps({"prompt": "make it brighter", "image": "src/dark.png"}),
        "{not json",
        json.dumps({"prompt": "make it red", "image": "src/cut.png"}),
        json.dumps({"prompt": "make it darker", "image": "src/light.png"}),
    ]
    path = root / "edits.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(prompts: Path, out: Path, *extra: str) -> list[str]:
    return [
        *f"--model tiny --family qwenimage-edit --prompts {prompts} --images-per-prompt 1 --steps 2".split(),
        *f"--guidance-scale 1 --reward {DELTA} --reward {PLAIN} --diversity-features none --bootstrap 0".split(),
        *f"--seed 5 --no-progress --out {out}".split(),
        *extra,
    ]


def test_edits_are_generated_and_scored_with_their_sources(tmp_path, capsys):
    prompts = _edit_set(tmp_path)
    out = tmp_path / "run"
    assert gen_bench.main(_args(prompts, out)) == 0
    assert "left out 2 line(s)" in capsys.readouterr().err
    run = json.loads((out / "results.json").read_text())
    left_out = run["prompt_set"]["left_out"]
    assert [line.split(":")[0] for line in left_out] == ["edits.jsonl line 2", "edits.jsonl line 3"]
    assert "not valid JSON" in left_out[0] and "cut.png" in left_out[1]
    samples = {s["id"]: s for s in run["samples"]}
    assert set(samples) == {"1_0", "4_0"}  # ids are line numbers
    assert samples["4_0"]["source"] == str(tmp_path / "src" / "light.png")
    assert "left out 2 prompt line(s)" in (out / "report.md").read_text()

    # the edit is the ODE rollout of that line's instruction on that line's source from the sample's seeded noise
    model = load_flow_model("qwenimage-edit", "tiny")
    source = load_sources([tmp_path / "src" / "light.png"])
    with torch.no_grad():
        direct = sample_ode(
            model,
            ["make it darker"],
            num_steps=2,
            height=32,
            width=32,
            guidance_scale=1.0,
            generator=[seeded(5, "4", 0)],
            sources=source,
        ).media[0]
    saved = media.load_image(out / samples["4_0"]["path"])
    torch.testing.assert_close(saved, (direct * 255).round() / 255, atol=1 / 255 + 1e-6, rtol=0)
    other_source = sample_ode(
        model,
        ["make it darker"],
        num_steps=2,
        height=32,
        width=32,
        generator=[seeded(5, "4", 0)],
        sources=load_sources([tmp_path / "src" / "dark.png"]),
    ).media[0]
    assert (other_source - direct).abs().max() > 1e-3  # the source conditions the edit

    # a score row equals the reward called directly with that sample's source (and the plain one ignores it)
    for sid, src in (("1_0", "dark.png"), ("4_0", "light.png")):
        file = str(out / samples[sid]["path"])
        direct_delta = BrightnessDeltaReward().score(["x"], [file], sources=[str(tmp_path / "src" / src)])
        assert run["rewards"]["BrightnessDeltaReward"]["scores"][sid] == pytest.approx(float(direct_delta.scores[0]))
        direct_plain = BrightnessReward().score(["x"], [file])
        assert run["rewards"]["BrightnessReward"]["scores"][sid] == pytest.approx(float(direct_plain.scores[0]))
    delta = run["rewards"]["BrightnessDeltaReward"]["scores"]
    plain = run["rewards"]["BrightnessReward"]["scores"]
    assert delta["1_0"] != pytest.approx(plain["1_0"])  # the source's brightness was subtracted

    # --on-error fail: the left-out lines make the run fail after writing everything
    assert gen_bench.main(_args(prompts, out, "--on-error", "fail")) == 1
    assert "error: 2 prompt line(s) were left out (--on-error fail)" in capsys.readouterr().err

    # the same instruction on other pixels is not the sample on disk: refused, not reused
    media.save_media(torch.full((3, 32, 32), 0.5), tmp_path / "src" / "light.png")
    assert gen_bench.main(_args(prompts, out)) == 2
    assert "other prompts or source images" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("family", "extra", "message"),
    [
        ("sd3", ["--reward", DELTA], "compares an edit with its source image"),
        ("sd3", ["--image-field", "src"], "--image-field is for editing families"),
        ("flux-kontext", ["--reward", PLAIN], "editing families need a prompt file"),
    ],
)
def test_editing_mistakes_are_refused_before_any_model_loads(family, extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mmreward.flow.models.load_flow_model", lambda *a, **k: pytest.fail("a model was loaded"))
    args = f"--model tiny --family {family} --prompts unigenbench --limit 1 --out {tmp_path / 'o'}".split()
    assert gen_bench.main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
