"""Rewards on open_clip models: CLIPScore (any architecture and weights) and HPSv2 / HPSv2.1.

- **CLIPScore** (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning",
  arXiv 2104.08718): ``w * max(cos(E_img, E_txt), 0)`` with ``w = 2.5``, the caption prefixed with
  ``"A photo depicts"`` as in the reference code (``caption_prefix=""`` scores the bare caption). Raw range
  [0, 2.5]; real image-caption pairs mostly land in 0.5-1.0.
- **HPSv2** (Wu et al. 2023, "Human Preference Score v2", arXiv 2306.09341): an open_clip ViT-H-14 fine-tuned on
  HPDv2; the score is the plain cosine ``cos(E_img, E_txt)`` (no logit scale), typically 0.2-0.35. Images are
  preprocessed with the longest side resized to 224 and zero padding to a square, as the released
  ``hpsv2.score`` does. v2.0 and v2.1 scores are not comparable with each other.

``resize`` (see :mod:`mmreward.rewards.clip_preprocess`): CLIPScore's reference (OpenAI's ``clip`` preprocess) and
open_clip's transform resize 8-bit PIL images, so ``clip-score`` defaults to ``pil``. The hpsv2 package converts
the image to a float tensor *before* resizing (``ToTensor`` then ``ResizeMaxSize`` on the tensor), which is what
``torch`` does, so ``hpsv2`` defaults to ``torch``; ``pil`` there gives open_clip's usual PIL-first order instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mmreward.errors import ConfigError, WeightsNotFoundError
from mmreward.hub import resolve_file
from mmreward.rewards.clip_preprocess import ClipImageReward, ResizeBackend, ResizeMode


def _register_architecture(model: str) -> str:
    """An open_clip architecture name, or a JSON architecture config (registered, and named by its stem)."""
    import open_clip

    if model.endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ConfigError(f"open_clip architecture config {model!r} does not exist")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise ConfigError(
            f"unknown open_clip architecture {model!r}; use one of open_clip.list_models() (e.g. ViT-B-32, "
            "ViT-L-14, ViT-H-14) or a path to an architecture .json"
        )
    return model


class OpenClipReward(ClipImageReward):
    """An open_clip image/text model with a read-out of the cosine similarity (see subclasses)."""

    def __init__(
        self, *, architecture: str, checkpoint: Path, quick_gelu: bool, resize_mode: ResizeMode, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        import open_clip

        self.model = open_clip.create_model(architecture, pretrained=str(checkpoint), force_quick_gelu=quick_gelu)
        self.model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(architecture)
        cfg = self.model.visual.preprocess_cfg
        self.image_size = int(cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"])
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.resize_mode = resize_mode

    def cosine(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        """``(N,)`` cosine similarity of each preprocessed image with its prompt (unique prompts encoded once)."""
        unique = list(dict.fromkeys(prompts))
        tokens = self.tokenizer(unique).to(self.device)
        text = F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (U, D)
        image = F.normalize(self.model.encode_image(inputs).float(), dim=-1)  # (N, D)
        index = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        return (image * text[index]).sum(-1)


class ClipScore(OpenClipReward):
    """CLIPScore, ``w * max(cos, 0)`` (Hessel et al. 2021), on any open_clip architecture and weights.

    Args:
        model: open_clip architecture name (``ViT-B-32``, ``ViT-L-14``, ...) or a path to an architecture .json.
        pretrained: an open_clip pretrained tag for that architecture (``openai``, ``laion2b_s34b_b79k``, ...;
            see ``open_clip.list_pretrained_tags_by_model``), or a local checkpoint file.
        w: the CLIPScore weight (2.5 in the paper, which stretches scores towards [0, 1] for typical pairs).
        caption_prefix: text put before every caption, followed by a space: ``"A photo depicts"`` as in the
            reference implementation (the paper found that this prompt slightly improves the correlation with
            human judgments); ``""`` scores the caption alone.
        resize: how :meth:`score` resizes: ``"pil"`` (8-bit PIL bicubic, then centre crop, as the reference and
            open_clip's transform do) or ``"torch"`` (the differentiable float resize ``score_pixels`` uses).
    """

    raw_range = (0.0, 2.5)

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str = "openai",
        w: float = 2.5,
        caption_prefix: str = "A photo depicts",
        resize: ResizeBackend = "pil",
        **kwargs,
    ) -> None:
        import open_clip

        if not isinstance(caption_prefix, str):
            raise ConfigError(f"caption_prefix must be a string ('' for none), got {caption_prefix!r}")

        architecture = _register_architecture(model)
        tag_cfg = open_clip.get_pretrained_cfg(architecture, pretrained)
        if tag_cfg:
            source = tag_cfg.get("hf_hub") or tag_cfg.get("url")
            try:
                checkpoint = Path(open_clip.download_pretrained(tag_cfg))
            except Exception as err:
                raise WeightsNotFoundError(
                    f"open_clip weights {architecture}/{pretrained} (from {source}) are not available: "
                    f"{type(err).__name__}: {err}. Download them once where the hub is reachable and copy the "
                    "Hugging Face cache (HF_HOME), or pass a local checkpoint: "
                    f"load_reward('clip-score', model={model!r}, pretrained='/path/to/open_clip_model.safetensors')"
                ) from err
        else:
            checkpoint = resolve_file(
                pretrained,
                "open_clip_model.safetensors",
                what=f"open_clip {architecture}",
                hint="pass pretrained= an open_clip tag from open_clip.list_pretrained_tags_by_model"
                f"({architecture!r}) or a local checkpoint file",
            )
        super().__init__(
            architecture=architecture,
            checkpoint=checkpoint,
            quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            resize_mode="shortest",
            resize=resize,
            **kwargs,
        )
        self.w = w
        # The reference appends a space to a prefix that lacks one, then the caption.
        self.caption_prefix = (
            caption_prefix if not caption_prefix or caption_prefix.endswith(" ") else caption_prefix + " "
        )
        # Bradley-Terry scale for compare(): CLIP's logit scale is 100 on the cosine, i.e. 100 / w on w * cos.
        self.pairwise_scale = 100.0 / w
        self.weights_id = f"{architecture}/{pretrained}"

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        captions = [self.caption_prefix + prompt for prompt in prompts]
        return self.w * self.cosine(captions, inputs).clamp(min=0.0)


HPS_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
_HPS_PRESETS = {"v2.0": "hpsv2", "v2.1": "hpsv2.1"}


class HPSv2(OpenClipReward):
    """Human Preference Score v2 / v2.1: cosine similarity under the HPS-fine-tuned open_clip ViT-H-14.

    Args:
        weights: hub id holding the released checkpoints (``xswu/HPSv2``), a local directory with them, or the
            checkpoint file itself.
        version: ``"v2.0"`` or ``"v2.1"``, selecting the file within ``weights``.
        model: the architecture (``ViT-H-14`` for the released checkpoints).
        resize: how :meth:`score` resizes: ``"torch"`` (float tensor, as the hpsv2 package does after
            ``ToTensor``; also what ``score_pixels`` uses) or ``"pil"`` (8-bit PIL bicubic before padding).
    """

    raw_range = (0.15, 0.40)
    # HPS was trained with CLIP's logit scale 100 on the cosine.
    pairwise_scale = 100.0

    def __init__(
        self,
        weights: str = "xswu/HPSv2",
        version: str = "v2.1",
        model: str = "ViT-H-14",
        resize: ResizeBackend = "torch",
        **kwargs,
    ) -> None:
        if version not in HPS_FILES:
            raise ConfigError(f"HPSv2 version must be one of {sorted(HPS_FILES)}, got {version!r}")
        architecture = _register_architecture(model)
        checkpoint = resolve_file(
            weights,
            HPS_FILES[version],
            what=f"HPS{version}",
            hint=f"load_reward('{_HPS_PRESETS[version]}', weights='/path/to/{HPS_FILES[version]}')",
        )
        super().__init__(
            architecture=architecture,
            checkpoint=checkpoint,
            quick_gelu=False,
            resize_mode="longest",
            resize=resize,
            **kwargs,
        )
        self.weights_id = f"{weights}:{HPS_FILES[version]}" if not Path(weights).is_file() else weights

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        return self.cosine(prompts, inputs)
