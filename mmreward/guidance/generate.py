"""The engine behind ``mmreward generate``: checked guide specs, the objective, and a run that writes every output
(an image, or an mp4 for video models) with its rewards in ``rewards.jsonl``. Editing families edit a source image
per prompt; each row records the source file it edited.

Everything that can be checked without weights is checked by :func:`plan_guides` before any model loads (unknown
rewards, a non-differentiable reward asked for gradient guidance, a latent reward of another generator family,
unknown dimension names); the latent shape and the text encoder are checked once the generator is loaded, before
the first sampling step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError
from mmreward.family_names import EDITING_FAMILIES, OPTIONAL_IMAGE_FAMILIES
from mmreward.guidance.latent_reward import LatentRewardSpec, is_latent_reward, read_latent_reward_spec
from mmreward.rewards.registry import resolve_reward

if TYPE_CHECKING:  # diffusers is imported only once sampling starts, so bad input is reported at once
    from mmreward.flow.models import FlowModel
    from mmreward.guidance.objective import GuidanceObjective
    from mmreward.guidance.sampling import GuidanceSettings, SamplingSettings, SearchSettings

# Sampling defaults of the diffusers pipelines (steps, classifier-free guidance, size).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd3": {"steps": 28, "cfg": 7.0, "height": 1024, "width": 1024, "num_frames": None},
    "flux": {"steps": 28, "cfg": 3.5, "height": 1024, "width": 1024, "num_frames": None},
    "wan": {"steps": 50, "cfg": 5.0, "height": 480, "width": 832, "num_frames": 81},
    # QwenImagePipeline's true_cfg_scale 4; ZImagePipeline's guidance_scale 5, which is 6 in mmreward's convention
    # (v_neg + w (v_pos - v_neg); Z-Image-Turbo samples with 8 steps and no guidance: --steps 8 --cfg 1)
    "qwenimage": {"steps": 50, "cfg": 4.0, "height": 1024, "width": 1024, "num_frames": None},
    "zimage": {"steps": 50, "cfg": 6.0, "height": 1024, "width": 1024, "num_frames": None},
    # Flux2KleinPipeline's defaults (the base models; the step-distilled ones sample 4 steps, guidance ignored)
    "flux2klein": {"steps": 50, "cfg": 4.0, "height": 1024, "width": 1024, "num_frames": None},
    # the Wan2.2 release configs: T2V-A14B 40 steps, CFG 4.0 (3.0 for its low-noise expert), 720 x 1280;
    # TI2V-5B 50 steps, CFG 5.0, 704 x 1280, 121 frames
    "wan22": {"steps": 40, "cfg": 4.0, "height": 720, "width": 1280, "num_frames": 81},
    "wan22ti2v": {"steps": 50, "cfg": 5.0, "height": 704, "width": 1280, "num_frames": 121},
    # Flux2Pipeline's defaults: 50 steps, embedded guidance 4.0 (FLUX.2 [dev] is guidance-distilled)
    "flux2": {"steps": 50, "cfg": 4.0, "height": 1024, "width": 1024, "num_frames": None},
    # HunyuanVideo15Pipeline's defaults for the 480p checkpoints (its guider's CFG 6.0; 480 x 848 from target_size)
    "hunyuanvideo15": {"steps": 50, "cfg": 6.0, "height": 480, "width": 848, "num_frames": 121},
    # QwenImageEditPlusPipeline: 50 steps, true_cfg_scale 4.0; FluxKontextPipeline: 28 steps, embedded guidance 3.5.
    # Both pipelines size the output from the source (about 1 megapixel at its aspect ratio); here every output
    # of a run has one size, 1024 x 1024 unless --height / --width say otherwise.
    "qwenimage-edit": {"steps": 50, "cfg": 4.0, "height": 1024, "width": 1024, "num_frames": None},
    "flux-kontext": {"steps": 28, "cfg": 3.5, "height": 1024, "width": 1024, "num_frames": None},
    # WanImageToVideoPipeline's defaults (Wan2.1 I2V 480P; the image is resized to the output size)
    "wan-i2v": {"steps": 50, "cfg": 5.0, "height": 480, "width": 832, "num_frames": 81},
    # QwenImage21Pipeline's defaults: 40 steps, true_cfg_scale 1 (2.1 is sampled without guidance), 1024 px
    "qwenimage21": {"steps": 40, "cfg": 1.0, "height": 1024, "width": 1024, "num_frames": None},
}
TINY_DEFAULTS = {"steps": 8, "height": 32, "width": 32}
FAMILIES = tuple(FAMILY_DEFAULTS)
METHODS = ("nrg", "pixel", "best-of-n", "search")
PIPELINE_FAMILIES = {
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
    "WanPipeline": "wan",
    "QwenImagePipeline": "qwenimage",
    "ZImagePipeline": "zimage",
    "Flux2KleinPipeline": "flux2klein",
    "Flux2Pipeline": "flux2",
    "HunyuanVideo15Pipeline": "hunyuanvideo15",
    "QwenImageEditPlusPipeline": "qwenimage-edit",
    "FluxKontextPipeline": "flux-kontext",
    "WanImageToVideoPipeline": "wan-i2v",
    "QwenImage21Pipeline": "qwenimage21",
}


@dataclass
class GuideSpec:
    """One ``--guide NAME[=WEIGHT]``: a latent reward directory or a pixel reward, resolved without weights."""

    name: str
    weight: float
    latent: LatentRewardSpec | None = None  # set for latent rewards
    differentiable: bool = False


def infer_family(model: str, family: str | None) -> str:
    """The generator family: given, read from a local pipeline's ``model_index.json``, or ``sd3`` for ``tiny``."""
    if family is not None:
        if family not in FAMILIES:
            raise ConfigError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
        return family
    if model == "tiny":
        return "sd3"
    index = Path(model).expanduser() / "model_index.json"
    if index.is_file():
        entries = json.loads(index.read_text(encoding="utf-8"))
        name = entries.get("_class_name", "")
        if name == "WanPipeline":  # Wan2.2's layouts, as WanPipeline reads them (a null slot is [null, null])
            if entries.get("transformer_2") not in (None, [None, None]):
                return "wan22"
            if entries.get("expand_timesteps"):
                return "wan22ti2v"
        if name in PIPELINE_FAMILIES:
            return PIPELINE_FAMILIES[name]
        raise ConfigError(f"{str(index)!r} names pipeline {name!r}; supported: {', '.join(PIPELINE_FAMILIES)}")
    raise ConfigError(f"cannot tell the family of {model!r}; pass --family ({', '.join(FAMILIES)})")


def plan_guides(
    guides: Sequence[tuple[str, float]],
    method: str,
    family: str,
    dim_weights: Mapping[str, float],
    *,
    with_sources: bool | None = None,
) -> list[GuideSpec]:
    """Resolve and check the guides for ``method`` and ``family`` (no weights are loaded). ``with_sources``: the
    outputs start from source images (default: for the editing families; Wan2.2 TI2V-5B when given an image)."""
    if with_sources is None:
        with_sources = family in EDITING_FAMILIES
    if with_sources and family in OPTIONAL_IMAGE_FAMILIES and method == "pixel":
        raise ConfigError(
            f"--method pixel on {family} with an image: its predicted clean video keeps the first frame the sampler "
            "holds fixed, not the image's; use --method best-of-n or search (they score the finished video)"
        )
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if not guides:
        raise ConfigError("give at least one reward to guide with: --guide NAME[=WEIGHT]")
    specs = []
    for name, weight in guides:
        if is_latent_reward(name):
            if with_sources:
                raise ConfigError(
                    f"{name!r} is a latent reward; latent rewards are trained on text-to-media latents and do not "
                    f"see the source image {family} starts from: guide with pixel rewards (--method best-of-n, "
                    "search or pixel)"
                )
            latent = read_latent_reward_spec(name)
            if latent.family != family:
                raise ConfigError(
                    f"latent reward {name!r} was trained on {latent.family} latents, but the generator is {family}; "
                    f"train one for {family} with align/train_latent_reward.py (model.family: {family})"
                )
            specs.append(GuideSpec(name, weight, latent=latent, differentiable=True))
        else:
            cls = resolve_reward(name)[0]
            if cls.uses_source and not with_sources:
                raise ConfigError(
                    f"reward {name!r} compares an edit with its source image; {family} generates from text here: "
                    f"guide an editing family ({', '.join(EDITING_FAMILIES)}) with it"
                )
            specs.append(GuideSpec(name, weight, differentiable=bool(cls.differentiable)))
    latent_dims = {d for s in specs if s.latent for d in s.latent.dims}
    unknown = sorted(set(dim_weights) - latent_dims)
    if unknown:
        raise ConfigError(
            f"--dim names {unknown} are not dimensions of any latent reward given (dimensions: "
            f"{sorted(latent_dims) or 'none; --dim applies to latent rewards'})"
        )
    pixel = [s.name for s in specs if s.latent is None]
    if method == "nrg" and pixel:
        raise ConfigError(
            f"--method nrg guides with latent rewards trained by align/train_latent_reward.py; {pixel} are pixel "
            "rewards: use --method pixel (differentiable rewards), best-of-n or search"
        )
    if method == "pixel":
        latent = [s.name for s in specs if s.latent is not None]
        if latent:
            raise ConfigError(
                f"--method pixel guides with pixel rewards; {latent} are latent rewards: use --method nrg"
            )
        flat = [s.name for s in specs if not s.differentiable]
        if flat:
            raise ConfigError(
                f"reward(s) {flat} are not differentiable (no score_pixels), so they cannot give gradient "
                "guidance; use --method best-of-n or search with them, or a differentiable reward ('mmreward list' "
                "shows which are)"
            )
    return specs


def build_objective(
    specs: Sequence[GuideSpec], dim_weights: Mapping[str, float], *, device: str, dtype: str
) -> GuidanceObjective:
    """Load the guides' weights: latent rewards (float32) and pixel rewards (``dtype``) on ``device``."""
    from mmreward.guidance.latent_reward import load_latent_reward
    from mmreward.guidance.objective import GuidanceObjective, LatentTerm, PixelTerm
    from mmreward.rewards.registry import load_reward

    terms: list = []
    for spec in specs:
        if spec.latent is not None:
            reward = load_latent_reward(spec.name, device=device)
            weights = {d: w for d, w in dim_weights.items() if d in spec.latent.dims}  # others keep weight 1
            terms.append(LatentTerm(reward, weight=spec.weight, dim_weights=weights, name=spec.name))
        else:
            reward = load_reward(spec.name, device=device, dtype=dtype)
            terms.append(PixelTerm(reward, weight=spec.weight, name=spec.name))
    return GuidanceObjective(terms)


def run(
    model: FlowModel,
    objective: GuidanceObjective,
    prompts: Sequence[str],
    method: str,
    *,
    out_dir: str | Path,
    budget: int,
    seed: int,
    num_outputs: int,
    sampling: SamplingSettings,
    guidance: GuidanceSettings,
    search: SearchSettings,
    fps: float = 16.0,
    progress: Callable[[int], None] | None = None,
    sources: Sequence[Path] | None = None,
) -> list[dict[str, Any]]:
    """Generate ``num_outputs`` outputs per prompt (seeds ``seed, seed + 1, ...``) into ``out_dir``: media files
    ``00000.png`` / ``.mp4`` and one row per output in ``rewards.jsonl``, appended as each output finishes.
    ``sources``: editing families, the source image file of each prompt (read when its outputs are drawn); each
    row names it in ``source``, so a later scoring of the outputs finds what they edit."""
    from mmreward.data.prompts import load_sources
    from mmreward.guidance.sampling import generate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".mp4" if model.media_kind == "video" else ".png"
    rows = []
    with (out / "rewards.jsonl").open("w", encoding="utf-8") as jsonl:
        for p, prompt in enumerate(prompts):
            source = None if sources is None else load_sources([sources[p]])[0]
            for j in range(num_outputs):
                index, output_seed = p * num_outputs + j, seed + j
                start = time.perf_counter()
                result = generate(
                    model,
                    prompt,
                    objective,
                    method,
                    budget=budget,
                    seed=output_seed,
                    sampling=sampling,
                    guidance=guidance,
                    search=search,
                    progress=progress,
                    source=source,
                )
                if progress is not None:
                    progress(budget - result.count.forward)  # search may spend a little less than its budget
                path = out / f"{index:05d}{suffix}"
                media_io.save_media(result.media[0], path, fps)
                scores = result.scores
                failed = bool(scores.failed[0])
                row = {
                    "file": path.name,
                    "prompt": prompt,
                    **({} if sources is None else {"source": str(sources[p])}),
                    "seed": output_seed,
                    "method": method,
                    "budget": budget,
                    "steps": sampling.num_steps,
                    "score": None if failed else float(scores.total[0]),
                    "rewards": {k: _number(v[0]) for k, v in scores.parts.items()},
                    "failed": failed,
                    "error": scores.errors[0],
                    "candidate": result.candidate,
                    "candidates": result.started,
                    "evaluations": {
                        "forward": result.count.forward,
                        "backward": result.count.backward,
                        "decode": result.count.decode,
                        "reward": result.count.reward,
                    },
                    "seconds": round(time.perf_counter() - start, 3),
                }
                jsonl.write(json.dumps(row) + "\n")
                jsonl.flush()
                rows.append(row)
    return rows


def _number(value: torch.Tensor) -> float | None:
    value = float(value)
    return None if value != value else value  # NaN -> null in JSON
