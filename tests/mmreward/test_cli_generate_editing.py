"""``mmreward generate`` on the editing families, in process: an edit of ``--image`` is the diffusers pipeline's
output for the same source and seed, rewards that compare with the source get it (and rewards.jsonl names it), an
editing prompt file gives each line its source with bad lines left out by line number, and editing mistakes are
reported before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmreward import cli, media
from mmreward.flow.adapter import source_pil
from mmreward.flow.models import load_flow_model
from mmreward.guidance.latent_reward import SPEC_FILE
from mmreward.rewards.brightness import BrightnessDeltaReward

DELTA = "mmreward.rewards.brightness:BrightnessDeltaReward"
BRIGHTNESS = "mmreward.rewards.brightness:DifferentiableBrightnessReward"


def _source(path: Path, level: float, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    media.save_media((level + 0.2 * torch.rand(3, 32, 32, generator=generator)).clamp(0, 1), path)
    return path


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rewards.jsonl").read_text().splitlines()]


def test_an_edit_of_the_image_is_the_pipelines_output_for_that_seed(tmp_path):
    source = _source(tmp_path / "source.png", 0.3)
    out = tmp_path / "out"
    code = cli.main(
        [
            *"generate --model tiny --family flux-kontext --prompt".split(),
            "make it brighter",
            *f"--image {source} --guide {DELTA} --method best-of-n --steps 3 --budget 3 --seed 7".split(),
            *f"--no-progress --out {out}".split(),
        ]
    )
    assert code == 0
    (row,) = _rows(out)
    assert row["source"] == str(source) and not row["failed"]

    # FluxKontextPipeline from the noise best-of-n's first candidate draws (torch.Generator().manual_seed(seed)),
    # on the same 8-bit source kept at its 32 x 32 (the tiny model's source area)
    model = load_flow_model("flux-kontext", "tiny")
    noise = torch.randn(model.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(7))
    expected = model.pipeline(
        prompt="make it brighter",
        image=source_pil(media.load_image(source)),
        num_inference_steps=3,
        height=32,
        width=32,
        latents=model.pipeline_initial_latents(noise),
        output_type="pt",
        _auto_resize=False,
        max_area=32 * 32,
        max_sequence_length=model.max_sequence_length,  # FLUX.1 attends to its padding: the adapter's length
        **model.pipeline_guidance_kwargs(3.5),
    )[0][0]
    saved = media.load_image(out / row["file"])
    torch.testing.assert_close(saved, (expected.float() * 255).round() / 255, atol=1 / 255 + 1e-5, rtol=0)
    # the row's reward is the source-aware reward on that edit and that source (before 8-bit rounding)
    direct = BrightnessDeltaReward().score(["make it brighter"], [saved], sources=[str(source)])
    assert row["rewards"][DELTA] == pytest.approx(float(direct.scores[0]), abs=1 / 255)
    assert row["rewards"][DELTA] == pytest.approx(float(expected.mean() - media.load_image(source).mean()), abs=1e-5)


def test_an_editing_prompt_file_edits_each_lines_source_and_leaves_out_bad_lines(tmp_path, capsys):
    dark, light = _source(tmp_path / "dark.png", 0.1), _source(tmp_path / "light.png", 0.7, seed=1)
    lines = [
        json.dumps({"prompt": "make it brighter", "image": "dark.png"}),
        json.dumps({"prompt": "make it red", "image": "missing.png"}),
        json.dumps({"prompt": "make it darker", "image": "light.png"}),
    ]
    prompts = tmp_path / "edits.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = cli.main(
        [
            *f"generate --model tiny --family qwenimage-edit --prompts {prompts} --guide {DELTA}".split(),
            *f"--method search --steps 2 --budget 6 --cfg 1 --no-progress --out {out}".split(),
        ]
    )
    assert code == 1  # everything else was written; the left-out line makes the exit status say so
    err = capsys.readouterr().err
    assert "edits.jsonl line 2: source image" in err and "missing.png" in err
    rows = _rows(out)
    assert [(r["prompt"], r["source"]) for r in rows] == [
        ("make it brighter", str(dark)),
        ("make it darker", str(light)),
    ]
    for row, source in zip(rows, (dark, light), strict=True):
        direct = BrightnessDeltaReward().score(["x"], [str(out / row["file"])], sources=[str(source)])
        assert row["score"] == pytest.approx(float(direct.scores[0]), abs=1 / 255)
    # the edits start from the darker and the lighter source: their deltas have the sources' brightness removed
    edited = [float(media.load_image(out / r["file"]).mean()) for r in rows]
    assert rows[0]["score"] == pytest.approx(edited[0] - float(media.load_image(dark).mean()), abs=1 / 255)


def test_ti2v_starts_every_video_from_the_image(tmp_path):
    """Wan2.2 TI2V-5B with --image: the image conditions each video (same seed, another image or none: another
    video), the row names it, and the brightness delta of the video against it is the reward called directly."""
    images = {"dark": _source(tmp_path / "dark.png", 0.1), "light": _source(tmp_path / "light.png", 0.8, seed=1)}
    videos, rows = {}, {}
    for name in ("dark", "light", "none"):
        image = [] if name == "none" else ["--image", str(images[name])]
        code = cli.main(
            [
                *"generate --model tiny --family wan22ti2v --prompt".split(),
                "a bright scene",
                *image,
                *f"--guide {BRIGHTNESS} --method best-of-n --steps 2 --budget 2 --seed 3 --no-progress".split(),
                *f"--out {tmp_path / name}".split(),
            ]
        )
        assert code == 0
        (rows[name],) = _rows(tmp_path / name)
        videos[name] = media.load_video(tmp_path / name / rows[name]["file"])[0]  # (5, 3, 32, 32)
    assert rows["dark"]["source"] == str(images["dark"]) and "source" not in rows["none"]
    for a, b in (("dark", "light"), ("dark", "none"), ("light", "none")):
        assert (videos[a][0] - videos[b][0]).abs().mean() > 0.01, (a, b)  # the first frame follows the image
    first = media.load_image(images["light"])
    direct = BrightnessDeltaReward().score(["a bright scene"], [videos["light"]], sources=[str(images["light"])])
    assert float(direct.scores[0]) == pytest.approx(float(videos["light"].mean() - first.mean()), abs=1e-5)


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the bad input was reported")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--family", "sd3", "--image", "{image}", "--guide", BRIGHTNESS],
            "--image is for editing and image-to-video",
        ),
        (["--family", "sd3", "--guide", DELTA], "compares an edit with its source image; sd3 generates from text"),
        (["--family", "wan22ti2v", "--guide", DELTA], "its source image; wan22ti2v generates from text here"),
        (["--family", "wan22ti2v", "--image", "{image}", "--guide", "{tmp}", "--method", "nrg"], "latent reward"),
        (
            ["--family", "wan22ti2v", "--image", "{image}", "--guide", BRIGHTNESS, "--method", "pixel"],
            "--method pixel on wan22ti2v with an image",
        ),
        (["--family", "qwenimage-edit", "--guide", BRIGHTNESS], "qwenimage-edit edits a source image: give it"),
        (["--family", "flux-kontext", "--image", "{tmp}/nope.png", "--guide", DELTA], "does not exist"),
        (
            ["--family", "flux-kontext", "--image", "{image}", "--guide", DELTA, "--method", "pixel"],
            "are not differentiable",
        ),
        (["--family", "flux-kontext", "--image", "{image}", "--guide", "{tmp}", "--method", "nrg"], "latent reward"),
    ],
)
def test_editing_mistakes_are_reported_before_any_model_loads(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("mmreward.flow.models.load_flow_model", _no_model)
    image = _source(tmp_path / "image.png", 0.5)
    (tmp_path / SPEC_FILE).write_text("{}")  # a directory that looks like a latent reward
    args = [a.format(image=image, tmp=tmp_path) for a in args]
    code = cli.main([*"generate --model tiny --prompt".split(), "a cat", *args, "--out", str(tmp_path / "o")])
    assert code == 2
    assert message in capsys.readouterr().err
