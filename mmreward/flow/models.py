"""Rectified-flow generators on diffusers pipelines: one small adapter per family (``sd3``, ``flux``, ``wan``,
``qwenimage``, ``zimage``, ``flux2klein``, ``wan22``, ``wan22ti2v``, ``qwenimage-edit``, ``flux-kontext``, ``flux2``,
``hunyuanvideo15``, ``wan-i2v``, ``qwenimage21``), each in its module of
:mod:`mmreward.flow.families`, all on the interface of :mod:`mmreward.flow.adapter`; this module maps family names
to adapters and loads them.

An adapter hides what differs between families behind one interface used by rollouts and losses:

- ``encode_prompts(prompts) -> PromptEmbeds`` with an embedding cache (text encoders can then be offloaded);
- ``latent_shape(batch, height, width, num_frames)``: latents are always kept *unpacked*, ``(B, C, h, w)`` for
  images and ``(B, C, t, h, w)`` for Wan videos; FLUX packs its 2x2 patches inside :meth:`FlowModel.velocity`
  (packing is a reshape, so per-element means and SDE log-probabilities do not change);
- ``velocity(latents, sigma, cond, guidance_scale=, negative=)``: one transformer call, classifier-free guidance as
  one batch ``[negative; positive]`` (FLUX.1-dev is guidance-distilled: its scale goes into the guidance embedding;
  Qwen-Image rescales the guided velocity to the conditional one's norm, :meth:`FlowModel.guide`);
  ``guidance_scale`` is always ``w`` of ``v_neg + w (v_pos - v_neg)`` (1: no guidance), whatever the pipeline calls
  it (:meth:`FlowModel.pipeline_guidance_kwargs` translates);
- ``to_pipeline_latents`` / ``from_pipeline_latents``: the adapter's unpacked latents to and from the layout the
  pipeline samples in (its ``latents=`` argument and the latents its step callbacks see; FLUX and Qwen-Image pack
  2x2 patches, FLUX.2 packs its patchified latents);
- ``encode_media`` / ``decode_latents``: VAE, to and from canonical media (float [0, 1], images ``(B, 3, H, W)``,
  videos ``(B, T, 3, H, W)``);
- ``sampling_sigmas(num_steps, latent_shape)`` (the pipeline's own schedule, FLUX's resolution shift included) and
  ``training_sigmas(u)`` (the 1000-step training grid indexed by ``u`` in [0, 1)).

``load_flow_model(family, path)`` loads a hub id or local directory with the diffusers pipeline class;
``path="tiny"`` builds the tiny random pipeline of :func:`mmreward.tiny_models.tiny_pipeline` for CPU runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from mmreward.devices import resolve_dtype
from mmreward.errors import ConfigError, WeightsNotFoundError
from mmreward.family_names import FAMILIES, VIDEO_FAMILIES, Family
from mmreward.flow.adapter import (
    CFG_GRADS,
    DEFAULT_LORA_TARGETS,
    Attention,
    CFGGrad,
    FlowModel,
    PromptEmbeds,
    fixed_shift_sigmas,
)
from mmreward.flow.families.flux import FluxModel
from mmreward.flow.families.flux2 import Flux2Model
from mmreward.flow.families.flux2klein import Flux2KleinModel
from mmreward.flow.families.flux_kontext import FluxKontextModel
from mmreward.flow.families.hunyuanvideo15 import HunyuanVideo15Model
from mmreward.flow.families.qwenimage import QwenImageModel
from mmreward.flow.families.qwenimage21 import QwenImage21Model
from mmreward.flow.families.qwenimage_edit import QwenImageEditModel
from mmreward.flow.families.sd3 import SD3Model
from mmreward.flow.families.wan import Wan22Model, Wan22TI2VModel, WanModel
from mmreward.flow.families.wan_i2v import WanI2VModel
from mmreward.flow.families.zimage import ZImageModel

# The adapter interface is re-exported: callers load and type models through this one module.
__all__ = [
    "ADAPTERS",
    "CFG_GRADS",
    "DEFAULT_LORA_TARGETS",
    "FAMILIES",
    "PIPELINE_CLASSES",
    "VIDEO_FAMILIES",
    "Attention",
    "CFGGrad",
    "Family",
    "FlowModel",
    "PromptEmbeds",
    "SD3Model",
    "check_attention",
    "fixed_shift_sigmas",
    "load_flow_model",
    "load_pipeline",
]

# The tiny pipelines' source resolution: the released pipelines' 1024 x 1024 would be 16k transformer tokens.
TINY_SOURCE_AREA = 32 * 32

ADAPTERS: dict[str, type[FlowModel]] = {
    "sd3": SD3Model,
    "flux": FluxModel,
    "wan": WanModel,
    "qwenimage": QwenImageModel,
    "zimage": ZImageModel,
    "flux2klein": Flux2KleinModel,
    "wan22": Wan22Model,
    "wan22ti2v": Wan22TI2VModel,
    "qwenimage-edit": QwenImageEditModel,
    "flux-kontext": FluxKontextModel,
    "flux2": Flux2Model,
    "hunyuanvideo15": HunyuanVideo15Model,
    "wan-i2v": WanI2VModel,
    "qwenimage21": QwenImage21Model,
}
PIPELINE_CLASSES = {
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "wan": "WanPipeline",
    "qwenimage": "QwenImagePipeline",
    "zimage": "ZImagePipeline",
    "flux2klein": "Flux2KleinPipeline",
    "wan22": "WanPipeline",
    "wan22ti2v": "WanPipeline",
    "qwenimage-edit": "QwenImageEditPlusPipeline",
    "flux-kontext": "FluxKontextPipeline",
    "flux2": "Flux2Pipeline",
    "hunyuanvideo15": "HunyuanVideo15Pipeline",
    "wan-i2v": "WanImageToVideoPipeline",
    "qwenimage21": "QwenImage21Pipeline",
}


def load_pipeline(family: str, path: str, *, dtype: torch.dtype = torch.float32) -> Any:
    """The diffusers pipeline for ``family`` from a hub id or local directory in ``dtype`` (``"tiny"``: the tiny
    random one, in float32)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")
    if path == "tiny":
        from mmreward.tiny_models import tiny_pipeline

        return tiny_pipeline(family)  # float32; load_flow_model casts each component to its dtype
    import diffusers

    pipeline_class = getattr(diffusers, PIPELINE_CLASSES[family])
    local = Path(path).expanduser()
    if not local.is_dir() and (path.count("/") != 1 or path.startswith((".", "/", "~"))):
        raise WeightsNotFoundError(
            f"{family} pipeline {path!r} is neither a local directory nor a hub id like 'org/name'; pass the "
            "directory that holds model_index.json, or 'tiny' for the tiny random pipeline"
        )
    try:
        pipeline = pipeline_class.from_pretrained(str(local) if local.is_dir() else path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise WeightsNotFoundError(
            f"cannot load the {family} pipeline {path!r} ({type(err).__name__}: {str(err).splitlines()[0]}). "
            f"Download it once where the hub is reachable (`hf download {path}`) and copy the cache (HF_HOME), "
            "or pass the local directory holding model_index.json as model.path"
        ) from err
    return pipeline


def load_flow_model(
    family: str,
    path: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    vae_dtype: str | torch.dtype = "float32",
    text_dtype: str | torch.dtype | None = None,
    attention: Attention = "auto",
    max_sequence_length: int | None = None,
    prompt_cache_size: int = 1024,
    sampling_shift: float | None = None,
    integer_timesteps: bool = False,
    lora_experts: str = "both",
    guidance_scale_2: float | None = None,
    source_area: int | None = None,
) -> FlowModel:
    """Load a pipeline and wrap it in its family's adapter; all weights frozen, on ``device``.

    ``dtype`` is the transformer's weight dtype, ``vae_dtype`` the VAE's and a CLIP image encoder's (float32 by
    default, as Flow-GRPO keeps the VAE; the Wan I2V pipeline feeds its image encoder float32 pixels),
    ``text_dtype`` the text encoders' (defaults to ``dtype``). ``attention``: ``auto``/``sdpa`` use PyTorch's
    scaled-dot-product attention (which itself picks flash or memory-efficient kernels on GPUs); ``xformers``
    needs the xformers package and a CUDA device. ``sampling_shift``: sample on :func:`fixed_shift_sigmas` with this
    shift instead of the pipeline's schedule. ``integer_timesteps``: the transformer sees ``floor(1000 sigma)``
    (divided by 1000 where it takes [0, 1]; see :meth:`FlowModel.timestep` and :meth:`FlowModel.unit_timestep`).
    ``lora_experts`` (``both``, ``high``, ``low``) and ``guidance_scale_2``: which experts of a two-expert Wan2.2
    checkpoint get a LoRA, and the low-noise expert's CFG scale (:class:`mmreward.flow.families.wan.WanModel`);
    other models take the defaults only.
    ``source_area``: editing families resize source images to this many pixels for the VAE (None: the
    pipeline's resolution; ``path="tiny"``: the tiny pipelines' 32 x 32); image-to-video resizes its source to the
    output size and takes none.
    """

    device = torch.device(device)
    check_attention(attention, device)
    weight_dtype = resolve_dtype(dtype)
    pipeline = load_pipeline(family, path, dtype=weight_dtype)
    pipeline.set_progress_bar_config(disable=True)
    text_dtype = resolve_dtype(text_dtype) if text_dtype is not None else weight_dtype
    experts = [m for m in (pipeline.transformer, getattr(pipeline, "transformer_2", None)) if m is not None]
    for module, module_dtype in [
        *[(m, weight_dtype) for m in experts],
        (pipeline.vae, resolve_dtype(vae_dtype)),
        # Wan2.1 I2V's CLIP image encoder with the VAE (float32 by default, as diffusers' Wan I2V example loads it)
        *[(m, resolve_dtype(vae_dtype)) for m in (getattr(pipeline, "image_encoder", None),) if m is not None],
        *[(m, text_dtype) for m in _text_modules(pipeline)],
    ]:
        module.requires_grad_(False).eval()
        # Cast only when needed: from_pretrained(torch_dtype=) already keeps the modules a model wants in fp32.
        if next(module.parameters()).dtype != module_dtype:
            module.to(dtype=module_dtype)
        module.to(device)
    if attention == "xformers":
        for expert in experts:
            expert.set_attention_backend("xformers")
    model = ADAPTERS[family](pipeline, device=device, prompt_cache_size=prompt_cache_size)
    if isinstance(model, WanModel):
        model.set_lora_experts(lora_experts)
        model.set_guidance_scale_2(guidance_scale_2)
    elif lora_experts != "both" or guidance_scale_2 is not None:
        raise ConfigError(
            f"model.lora_experts and model.guidance_scale_2 choose between Wan2.2's two experts; {family} has one "
            "transformer: remove them"
        )
    if max_sequence_length is not None:
        model.max_sequence_length = max_sequence_length
    if sampling_shift is not None:
        fixed_shift_sigmas(1, sampling_shift)  # validates the value before a run starts
        model.sampling_shift = sampling_shift
    model.integer_timesteps = integer_timesteps
    if model.conditional and not model.sources_need_size:
        if source_area is not None and source_area < 1:
            raise ConfigError(f"source_area must be a positive number of pixels, got {source_area}")
        model.source_area = source_area if source_area is not None or path != "tiny" else TINY_SOURCE_AREA
    elif source_area is not None:
        raise ConfigError(
            f"source_area is for editing families; {family} does not resize source images to an area: remove it"
        )
    return model


def _text_modules(pipeline: Any) -> list[torch.nn.Module]:
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    return [m for m in (getattr(pipeline, n, None) for n in names) if m is not None]


def check_attention(attention: str, device: torch.device | str) -> None:
    """Validate the attention choice before any model loads."""
    if attention not in ("auto", "sdpa", "xformers"):
        raise ConfigError(f"unknown attention {attention!r}; use auto, sdpa or xformers")
    if attention != "xformers":
        return
    if importlib.util.find_spec("xformers") is None:
        raise ConfigError(
            "attention: xformers needs the xformers package (pip install 'mmreward[gpu]'); use attention: sdpa, "
            "which is as fast on recent PyTorch"
        )
    if torch.device(device).type != "cuda":
        raise ConfigError(
            f"attention: xformers runs only on CUDA devices, not {torch.device(device).type}; use attention: sdpa"
        )
