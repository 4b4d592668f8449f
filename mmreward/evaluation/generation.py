"""Generating a benchmark's samples: evaluation defaults per model family, LoRA checks, seeded resumable sampling.

- :data:`EVAL_DEFAULTS`: the sampling settings a family's published evaluations use (ODE steps, guidance, size).
- :func:`inspect_lora` reads a LoRA directory saved in the diffusers format (what ``align/flow_dpo.py`` writes and
  ``pipeline.load_lora_weights(directory)`` loads) without loading any model, and tells which families it can belong
  to, so a LoRA trained on another family is refused before the generator loads. :func:`check_lora_shapes` then
  compares every LoRA matrix with the loaded transformer's layers.
- :func:`plan_samples` names the samples ``{prompt id}_{k}.png`` (``.mp4`` for videos), UniGenBench's naming, and
  :func:`generate_samples` draws the missing ones with the ODE sampler. Sample ``k`` of prompt ``p`` starts from the
  noise of ``seeded(seed, p, k)``, whatever the batch, ``--limit`` or process: a base run and an aligned run with
  the same seed see the same noise, so their differences come from the weights alone. Files are written atomically
  (temporary name, then rename), so an interrupted run leaves no half-written sample and a rerun draws only what is
  missing.
- Editing families edit each prompt's source image (:func:`mmreward.evaluation.prompt_sets.load_edit_prompt_set`):
  a sample records its source, and the directory's manifest records the source's content digest with the prompt,
  so a sample is reused only for the same instruction on the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mmreward import media as media_io
from mmreward.errors import ConfigError
from mmreward.evaluation.prompt_sets import PromptSet
from mmreward.family_names import FAMILIES, VIDEO_FAMILIES

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default name (mmreward.train.lora saves it)
# frame rate of saved videos: Wan 2.1 and Wan2.2 A14B generate 16 fps, Wan2.2 TI2V-5B and HunyuanVideo 1.5 24 fps
# (the release configs; HunyuanVideo 1.5: 121 frames for 5 s)
VIDEO_FPS = {"wan": 16.0, "wan22": 16.0, "wan22ti2v": 24.0, "hunyuanvideo15": 24.0, "wan-i2v": 16.0}


@dataclass(frozen=True)
class EvalDefaults:
    num_steps: int
    guidance_scale: float
    height: int
    width: int
    num_frames: int | None
    source: str


# Evaluation settings of the base models mmreward aligns (research notes: alignment.md section 2.2).
EVAL_DEFAULTS: dict[str, EvalDefaults] = {
    "sd3": EvalDefaults(40, 4.5, 512, 512, None, "Flow-GRPO's SD3.5-M evaluation: 40 ODE steps, CFG 4.5, 512 px"),
    "flux": EvalDefaults(
        28, 3.5, 512, 512, None, "Flow-GRPO's FLUX.1-dev evaluation: 28 steps, embedded guidance 3.5, 512 px"
    ),
    "wan": EvalDefaults(
        50, 5.0, 480, 832, 81, "Wan 2.1 release defaults (WanPipeline): 50 steps, CFG 5.0, 480 x 832, 81 frames"
    ),
    "qwenimage": EvalDefaults(
        50, 4.0, 1024, 1024, None, "QwenImagePipeline defaults: 50 steps, true CFG 4.0 (norm-rescaled), 1024 px"
    ),
    "zimage": EvalDefaults(
        50, 6.0, 1024, 1024, None, "ZImagePipeline defaults: 50 steps, its guidance_scale 5 (CFG 6.0 here), 1024 px"
    ),
    "flux2klein": EvalDefaults(
        50, 4.0, 1024, 1024, None, "Flux2KleinPipeline defaults (base models): 50 steps, CFG 4.0, 1024 px"
    ),
    "wan22": EvalDefaults(
        40,
        4.0,
        720,
        1280,
        81,
        "Wan2.2 T2V-A14B release (t2v_A14B config): 40 steps, CFG 4.0 high-noise / 3.0 low-noise expert "
        "(model.guidance_scale_2), 720 x 1280, 81 frames",
    ),
    "wan22ti2v": EvalDefaults(
        50, 5.0, 704, 1280, 121, "Wan2.2 TI2V-5B release (ti2v_5B config): 50 steps, CFG 5.0, 704 x 1280, 121 frames"
    ),
    "flux2": EvalDefaults(
        50, 4.0, 1024, 1024, None, "Flux2Pipeline defaults (FLUX.2 dev): 50 steps, embedded guidance 4.0, 1024 px"
    ),
    "hunyuanvideo15": EvalDefaults(
        50,
        6.0,
        480,
        848,
        121,
        "HunyuanVideo15Pipeline defaults (480p checkpoints): 50 steps, CFG 6.0 (its guider), 480 x 848, 121 frames",
    ),
    # The editing pipelines size their output from the source (about 1 megapixel at its aspect ratio); a benchmark
    # run has one size for every edit: 1024 x 1024 unless --height / --width say otherwise.
    "qwenimage-edit": EvalDefaults(
        50,
        4.0,
        1024,
        1024,
        None,
        "QwenImageEditPlusPipeline defaults: 50 steps, true CFG 4.0 (norm-rescaled), 1024 px (the pipeline: the "
        "source's aspect ratio at 1 megapixel)",
    ),
    "flux-kontext": EvalDefaults(
        28,
        3.5,
        1024,
        1024,
        None,
        "FluxKontextPipeline defaults: 28 steps, embedded guidance 3.5, 1024 px (the pipeline: the source's aspect "
        "ratio at 1 megapixel)",
    ),
    # the image is resized to the output size, as the pipeline resizes it
    "wan-i2v": EvalDefaults(
        50,
        5.0,
        480,
        832,
        81,
        "WanImageToVideoPipeline defaults (Wan2.1 I2V 480P): 50 steps, CFG 5.0, 480 x 832, 81 frames",
    ),
    "qwenimage21": EvalDefaults(
        40, 1.0, 1024, 1024, None, "QwenImage21Pipeline defaults: 40 steps, no guidance (true_cfg_scale 1), 1024 px"
    ),
}
# The tiny random pipelines of mmreward.tiny_models (path "tiny"): same steps and guidance, tiny sizes.
TINY_SIZES = {
    "sd3": (32, 32, None),
    "flux": (32, 32, None),
    "wan": (32, 32, 5),
    "qwenimage": (32, 32, None),
    "zimage": (32, 32, None),
    "flux2klein": (32, 32, None),
    "wan22": (32, 32, 5),
    "wan22ti2v": (32, 32, 5),
    "flux2": (32, 32, None),
    "hunyuanvideo15": (32, 32, 5),
    "qwenimage-edit": (32, 32, None),
    "flux-kontext": (32, 32, None),
    "wan-i2v": (32, 32, 5),
    "qwenimage21": (32, 32, None),
}
# Heights and widths must be multiples of VAE factor x patch size: 8 x 2 for every released checkpoint of these
# families; 2 x 2 for the tiny SD3, FLUX (Kontext too), Z-Image and FLUX.2 pipelines (2x VAE), 4 x 2 for tiny
# Qwen-Image (and -Edit), 8 x 2 for tiny Wan (and Wan I2V); Wan2.2 TI2V-5B's VAE is 16x (2x2 patchified, then 8x):
# 16 x 2, tiny or not; Qwen-Image 2.1's pipeline fixes its VAE at 16x and groups latents 2x2 into its encoder's
# image slots: 32, tiny or not. Wan frames are 4k + 1.
SPATIAL_MULTIPLE = {
    "sd3": 16,
    "flux": 16,
    "wan": 16,
    "qwenimage": 16,
    "zimage": 16,
    "flux2klein": 16,
    "wan22": 16,
    "wan22ti2v": 32,
    "flux2": 16,
    "hunyuanvideo15": 16,
    "qwenimage-edit": 16,
    "flux-kontext": 16,
    "wan-i2v": 16,
    "qwenimage21": 32,
}
TINY_SPATIAL_MULTIPLE = {
    "sd3": 4,
    "flux": 4,
    "wan": 16,
    "qwenimage": 8,
    "zimage": 4,
    "flux2klein": 4,
    "wan22": 16,
    "wan22ti2v": 32,
    "flux2": 4,
    "hunyuanvideo15": 4,
    "qwenimage-edit": 8,
    "flux-kontext": 4,
    "wan-i2v": 16,
    "qwenimage21": 32,
}
WAN_TEMPORAL = 4


def check_size(family: str, path: str, height: int, width: int, num_frames: int | None) -> None:
    """Refuse sizes the family cannot generate, before the model loads (the loaded model checks again)."""
    multiple = (TINY_SPATIAL_MULTIPLE if path == "tiny" else SPATIAL_MULTIPLE)[family]
    for name, value in (("--height", height), ("--width", width)):
        if value <= 0 or value % multiple:
            nearest = max(multiple, round(value / multiple) * multiple)
            raise ConfigError(
                f"{name} {value} does not fit {family}: use a positive multiple of {multiple} ({nearest})"
            )
    if family in VIDEO_FAMILIES:  # Wan's and HunyuanVideo 1.5's VAEs both compress time 4x
        if num_frames is None or num_frames < 1 or (num_frames - 1) % WAN_TEMPORAL:
            frames = num_frames or 1
            nearest = max(1, round((frames - 1) / WAN_TEMPORAL)) * WAN_TEMPORAL + 1
            raise ConfigError(f"--num-frames {num_frames} does not fit {family}: use 4k + 1 frames (e.g. {nearest})")
    elif num_frames is not None:
        raise ConfigError(
            f"--num-frames is for video families ({', '.join(VIDEO_FAMILIES)}); {family} generates images"
        )


# ---------------------------------------------------------------------------------------------------------- LoRA


@dataclass(frozen=True)
class LoraInfo:
    """What a LoRA directory holds, read without loading a model.

    Attributes:
        directory, weight_file: where it is.
        families: the model families its layer names fit (``{"sd3", "flux"}`` when they cannot be told apart).
        trained_on: ``model.family`` / ``model.path`` from the training run's ``config.yaml`` next to it, if any.
        rank: the LoRA rank (rows of the A matrices).
        digest: sha256 of the weight file (part of a run's identity: other weights, other samples).
    """

    directory: Path
    weight_file: Path
    families: frozenset[str]
    trained_on: dict[str, Any]
    rank: int
    digest: str


def _family_of_key(key: str) -> set[str]:
    """Families whose transformer has the layer a diffusers LoRA key names."""
    # The editing families' transformers are their text-to-image siblings' (Qwen-Image, FLUX.1) classes.
    if ".single_transformer_blocks." in key:
        return {"flux", "flux-kontext", "flux2klein", "flux2"}
    if re.search(r"^transformer\.blocks\.\d+\.(attn1|attn2|ffn)\.", key):
        # Wan's self/cross-attention blocks (HunyuanVideo's are joint)
        return {"wan", "wan22", "wan22ti2v", "wan-i2v"}
    if re.search(r"^transformer\.(layers|noise_refiner|context_refiner)\.\d+\.", key):
        return {"zimage"}
    if re.search(r"^transformer\.transformer_blocks\.\d+\.img_mlp\.(proj|gate_layer|out)\.", key):
        return {"qwenimage21"}  # its single-stream blocks' SwiGLU (Qwen-Image's MLP is img_mlp.net.*)
    if re.search(r"^transformer\.transformer_blocks\.\d+\.(img_mlp|txt_mlp|img_mod|txt_mod)\.", key):
        return {"qwenimage", "qwenimage-edit"}
    if key.startswith("transformer.transformer_blocks."):
        # joint (MM-DiT) blocks with the same projection names
        joint = {"sd3", "flux", "flux-kontext", "qwenimage", "qwenimage-edit", "flux2klein", "flux2", "hunyuanvideo15"}
        if re.search(r"^transformer\.transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0)\.", key):
            return joint | {"qwenimage21"}  # Qwen-Image 2.1's single-stream blocks name their attention alike
        return joint
    return set(FAMILIES)


def inspect_lora(directory: str | Path) -> LoraInfo:
    """Read a diffusers-format LoRA directory (see the module docstring); ConfigError when it is not one."""
    from safetensors import safe_open

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ConfigError(
            f"--lora {str(directory)!r} is not a directory; pass the folder that holds {LORA_WEIGHTS_NAME}"
        )
    weight_file = directory / LORA_WEIGHTS_NAME
    if not weight_file.is_file():
        candidates = sorted(directory.glob("*.safetensors"))
        if len(candidates) != 1:
            raise ConfigError(
                f"--lora {str(directory)!r} holds no {LORA_WEIGHTS_NAME} (found {[c.name for c in candidates]}); pass "
                "a LoRA saved in the diffusers format (align/flow_dpo.py writes OUTPUT_DIR/lora)"
            )
        weight_file = candidates[0]
    with safe_open(str(weight_file), "pt") as handle:
        keys = list(handle.keys())
        ranks = {handle.get_slice(k).get_shape()[0] for k in keys if k.endswith("lora_A.weight")}
    lora_keys = [k for k in keys if ".lora_A." in k or ".lora_B." in k]
    if not lora_keys or not all(k.startswith("transformer.") for k in lora_keys):
        raise ConfigError(
            f"{str(weight_file)!r} is not a diffusers transformer LoRA (keys like "
            "'transformer.<layer>.lora_A.weight'); gen_bench loads LoRAs the way pipeline.load_lora_weights does"
        )
    families = set(FAMILIES)
    for key in lora_keys:
        families &= _family_of_key(key)
    trained_on: dict[str, Any] = {}
    config = directory.parent / "config.yaml"
    if config.is_file():
        import yaml

        try:
            model = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("model") or {}
        except yaml.YAMLError:
            model = {}
        trained_on = {k: model[k] for k in ("family", "path") if k in model}
    digest = hashlib.sha256(weight_file.read_bytes()).hexdigest()
    return LoraInfo(directory, weight_file, frozenset(families), trained_on, max(ranks, default=0), digest)


def check_lora_family(info: LoraInfo, family: str) -> None:
    """Refuse a LoRA trained for another family (from its layer names and its training config)."""
    trained = info.trained_on.get("family")
    if trained is not None and trained != family:
        raise ConfigError(
            f"the LoRA in {str(info.directory)!r} was trained on a {trained} model (model.family in "
            f"{info.directory.parent / 'config.yaml'}), but --family is {family}; pass --family {trained} and its "
            "base model"
        )
    if family not in info.families:
        fits = " or ".join(sorted(info.families)) or "no known family"
        raise ConfigError(
            f"the LoRA in {str(info.directory)!r} has layers of a {fits} transformer, not {family}; pass the base "
            "model it was trained on"
        )


def check_lora_shapes(transformer: torch.nn.Module, weight_file: Path) -> None:
    """Every LoRA matrix must fit the layer it adapts (another model size of the same family does not)."""
    from safetensors import safe_open

    modules = dict(transformer.named_modules())
    problems = []
    with safe_open(str(weight_file), "pt") as handle:
        for key in handle.keys():
            match = re.match(r"transformer\.(.+)\.lora_([AB])\.weight$", key)
            if not match:
                continue
            layer = modules.get(match.group(1))
            shape = handle.get_slice(key).get_shape()
            if layer is None or not hasattr(layer, "in_features"):
                problems.append(f"{match.group(1)}: no such linear layer")
            elif match.group(2) == "A" and shape[1] != layer.in_features:
                problems.append(f"{match.group(1)}: LoRA input {shape[1]}, layer input {layer.in_features}")
            elif match.group(2) == "B" and shape[0] != layer.out_features:
                problems.append(f"{match.group(1)}: LoRA output {shape[0]}, layer output {layer.out_features}")
    if problems:
        raise ConfigError(
            f"the LoRA {str(weight_file)!r} does not fit this transformer ({len(problems)} layer(s), e.g. "
            f"{'; '.join(problems[:3])}); it was trained on another model size or architecture"
        )


# ------------------------------------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """Sample ``index`` of prompt ``prompt_id``, stored at ``path``; for editing families, an edit of the image file
    ``source`` (whose content sha256 is ``source_digest``)."""

    prompt_id: str
    index: int
    prompt: str
    path: Path
    source: Path | None = None
    source_digest: str | None = None

    @property
    def id(self) -> str:
        return f"{self.prompt_id}_{self.index}"

    @property
    def manifest_entry(self) -> str | dict[str, str]:
        """What the manifest records for this sample: the prompt, and for an edit the source's digest too."""
        if self.source is None:
            return self.prompt
        return {"prompt": self.prompt, "source": str(self.source), "source_sha256": self.source_digest}


def plan_samples(prompts: PromptSet, per_prompt: int, directory: Path, media_kind: str) -> list[Sample]:
    """Every sample of a run, prompt-major, named ``{prompt id}_{k}.png`` / ``.mp4`` under ``directory``."""
    suffix = ".mp4" if media_kind == "video" else ".png"
    digests = {item.id: hashlib.sha256(item.source.read_bytes()).hexdigest() for item in prompts.items if item.source}
    return [
        Sample(item.id, k, item.prompt, directory / f"{item.id}_{k}{suffix}", item.source, digests.get(item.id))
        for item in prompts.items
        for k in range(per_prompt)
    ]


def _same_entry(stored: Any, sample: Sample) -> bool:
    """Whether a manifest entry was written for this sample's prompt (and source pixels: not their path, so a
    moved data folder keeps its samples)."""
    entry = sample.manifest_entry
    if isinstance(entry, str) or not isinstance(stored, dict):
        return stored == entry
    return stored.get("prompt") == entry["prompt"] and stored.get("source_sha256") == entry["source_sha256"]


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides a run's pixels (written to ``run.json``; a rerun with other values is refused)."""

    family: str
    model: str
    lora: str | None
    lora_digest: str | None
    num_steps: int
    guidance_scale: float
    height: int
    width: int
    num_frames: int | None
    negative_prompt: str
    seed: int
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """``"key: stored -> now"`` for each setting that differs from a stored run's."""
        now = json.loads(json.dumps(self.to_dict()))
        return [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in now.items() if stored.get(k) != v]


MANIFEST = "prompts.json"  # sample id -> the prompt it was generated from, next to the samples
RANK_MANIFESTS = "prompts.rank*.json"  # the same, per process of a multi-process run, until merged


def rank_manifest(rank: int) -> str:
    """The manifest a process of a multi-process run records its samples in (folded into ``prompts.json`` by
    :func:`merge_manifests` when all are done; read with it until then, so an interrupted run resumes)."""
    return f"prompts.rank{rank:05d}.json"


def _read_manifest(directory: Path, name: str | None = None) -> dict[str, Any]:
    """``prompts.json`` and the processes' manifests of ``directory`` (or the one file ``name``), merged."""
    paths = [directory / name] if name else [directory / MANIFEST, *sorted(directory.glob(RANK_MANIFESTS))]
    manifest: dict[str, Any] = {}
    for path in paths:
        if not path.is_file():
            continue
        try:
            manifest.update(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"cannot read {str(path)!r} ({err}); remove the samples directory and generate again"
            ) from err
    return manifest


def merge_manifests(directories: Iterable[Path]) -> None:
    """Fold the processes' manifests of each directory into its ``prompts.json`` (atomically), then remove them."""
    for directory in directories:
        ranks = sorted(directory.glob(RANK_MANIFESTS))
        if not ranks:
            continue
        partial = directory / f".{MANIFEST}.partial"
        partial.write_text(json.dumps(_read_manifest(directory), indent=0, ensure_ascii=False) + "\n", "utf-8")
        os.replace(partial, directory / MANIFEST)
        for path in ranks:
            path.unlink()


def check_existing_samples(samples: Sequence[Sample]) -> None:
    """Refuse sample files made for other prompts (another prompt file, or an edited one, in the same directory):
    samples are reused only for the prompt they were generated from."""
    manifests: dict[Path, dict[str, Any]] = {}
    wrong = []
    for s in samples:
        if not s.path.is_file():
            continue
        manifest = manifests.setdefault(s.path.parent, _read_manifest(s.path.parent))
        if not _same_entry(manifest.get(s.id), s):
            wrong.append(f"{s.path.name} (made for {manifest.get(s.id)!r}, now {s.manifest_entry!r})")
    if wrong:
        made_from = "prompts or source images" if any(s.source is not None for s in samples) else "prompts"
        raise ConfigError(
            f"{len(wrong)} existing sample(s) were generated from other {made_from}, e.g. {'; '.join(wrong[:2])}; "
            "use another --out for another prompt set"
        )


def _record_samples(samples: Sequence[Sample], name: str = MANIFEST) -> None:
    for directory in {s.path.parent for s in samples}:
        manifest = _read_manifest(directory, name)
        manifest.update({s.id: s.manifest_entry for s in samples if s.path.parent == directory})
        partial = directory / f".{name}.partial"
        partial.write_text(json.dumps(manifest, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, directory / name)


def generate_samples(
    model: Any,
    samples: Sequence[Sample],
    settings: GenerationSettings,
    *,
    batch_size: int,
    progress: bool = True,
    autocast: Callable[[], Any] | None = None,
    manifest: str = MANIFEST,
) -> int:
    """Draw ``samples`` with the ODE sampler in batches, seeded per sample, and save them (recording each sample's
    prompt in the directory's ``manifest``: ``prompts.json``, or :func:`rank_manifest` for a process of several);
    returns how many. Edits (samples with a ``source``) are conditioned on their source image, read per batch."""
    from tqdm.auto import tqdm

    from mmreward.data.prompts import load_sources
    from mmreward.flow.rollout import sample_ode, seeded

    fps = VIDEO_FPS.get(settings.family)
    with tqdm(total=len(samples), desc="generating", unit="sample", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            sources = load_sources([s.source for s in chunk]) if chunk[0].source is not None else None
            with torch.no_grad(), autocast() if autocast is not None else nullcontext():
                out = sample_ode(
                    model,
                    [s.prompt for s in chunk],
                    num_steps=settings.num_steps,
                    height=settings.height,
                    width=settings.width,
                    num_frames=settings.num_frames,
                    guidance_scale=settings.guidance_scale,
                    negative_prompt=settings.negative_prompt,
                    generator=[seeded(settings.seed, s.prompt_id, s.index) for s in chunk],
                    batch_size=batch_size,
                    sources=sources,
                )
            for s, media in zip(chunk, out.media.float().cpu(), strict=True):
                s.path.parent.mkdir(parents=True, exist_ok=True)
                media_io.save_media(media, s.path, fps or 16.0)
            _record_samples(chunk, manifest)
            bar.update(len(chunk))
    return len(samples)


def load_samples(samples: Sequence[Sample], num_frames: int = 4) -> torch.Tensor:
    """Saved samples as one float batch: images ``(n, 3, H, W)``; videos ``(n, F, 3, H, W)`` with ``num_frames``
    frames spread over each clip (enough for diversity features and grids)."""
    items = []
    for s in samples:
        if s.path.suffix == ".mp4":
            items.append(media_io.load_video(s.path, num_frames=num_frames, if_short="repeat")[0])
        else:
            items.append(media_io.load_image(s.path))
    return torch.stack(items)
