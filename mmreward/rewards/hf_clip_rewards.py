"""Rewards on Hugging Face transformers CLIP checkpoints: PickScore and the LAION aesthetic predictor.

- **PickScore** (Kirstain et al. 2023, "Pick-a-Pic", arXiv 2305.01569): CLIP ViT-H/14 fine-tuned on Pick-a-Pic;
  the score is ``logit_scale.exp() * cos(E_img, E_txt)`` (about 100 x cosine), typically 15-25. The softmax of
  two images' scores is the model's preference probability, so :meth:`compare` uses scale 1. The released
  checkpoint is used with the LAION ViT-H/14 processor (224 px, bicubic shortest-side resize, centre crop,
  OpenAI normalization; text truncated to 77 tokens).
- **LAION aesthetic predictor v2** (Schuhmann et al., "improved-aesthetic-predictor"): the L2-normalized image
  embedding of OpenAI CLIP ViT-L/14 goes through a linear MLP 768-1024-128-64-16-1 (dropout only, no
  nonlinearity) trained with MSE on AVA ratings; scores are on the AVA 1-10 scale, typically 4-7. The head
  weights are the ``sac+logos+ava1-l14-linearMSE`` checkpoint as published in ``trl-lib/ddpo-aesthetic-predictor``.

Both references preprocess with transformers' ``CLIPImageProcessor``, which resizes 8-bit PIL images and centre-crops
at offset ``(H - S) // 2``; ``resize="pil"`` (the default, see :mod:`mmreward.rewards.clip_preprocess`) does exactly
that in :meth:`score`, ``resize="torch"`` the differentiable float resize ``score_pixels`` always uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmreward.hub import resolve_dir, resolve_file
from mmreward.rewards.clip_preprocess import ClipImageReward, ResizeBackend


def _features(output) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _load_clip(directory):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(directory)


def _image_settings(processor_dir) -> tuple[int, tuple, tuple]:
    """Crop size, mean and std from a CLIP image processor config (the resize is always bicubic/shortest side)."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(processor_dir)
    crop = processor.crop_size
    size = int(crop) if isinstance(crop, int) else int(crop["height"])
    return size, tuple(processor.image_mean), tuple(processor.image_std)


class PickScore(ClipImageReward):
    """PickScore: ``logit_scale.exp() * cos`` under a CLIP fine-tuned on Pick-a-Pic preferences.

    Args:
        weights: model hub id (``yuvalkirstain/PickScore_v1``) or local directory.
        processor: processor hub id (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``) or local directory.
        resize: ``"pil"`` (the processor's 8-bit PIL resize, as the reference scores) or ``"torch"`` (differentiable).
    """

    raw_range = (15.0, 25.0)
    pairwise_scale = 1.0
    crop_rounding = "floor"  # CLIPImageProcessor's centre crop

    def __init__(
        self,
        weights: str = "yuvalkirstain/PickScore_v1",
        processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        resize: ResizeBackend = "pil",
        **kwargs,
    ) -> None:
        super().__init__(resize=resize, **kwargs)
        from transformers import AutoTokenizer

        hint = "load_reward('pickscore', weights='/path/to/PickScore_v1', processor='/path/to/CLIP-ViT-H-14')"
        self.model = _load_clip(resolve_dir(weights, what="PickScore", hint=hint))
        self.model.to(self.device, self.dtype).eval().requires_grad_(False)
        processor_dir = resolve_dir(processor, what="PickScore processor", hint=hint, need_weights=False)
        self.tokenizer = AutoTokenizer.from_pretrained(processor_dir)
        self.image_size, self.mean, self.std = _image_settings(processor_dir)
        self.weights_id = weights

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        unique = list(dict.fromkeys(prompts))
        tokens = self.tokenizer(unique, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text = _features(self.model.get_text_features(**tokens.to(self.device)))
        text = F.normalize(text.float(), dim=-1)  # (U, D)
        image = F.normalize(_features(self.model.get_image_features(pixel_values=inputs)).float(), dim=-1)  # (N, D)
        index = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        return self.model.logit_scale.exp().float() * (image * text[index]).sum(-1)


class AestheticHead(nn.Module):
    """The LAION improved-aesthetic-predictor MLP. Layer indices match the released state dict (``layers.N``)."""

    def __init__(self, embed_dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


class LaionAesthetic(ClipImageReward):
    """LAION aesthetic score (AVA 1-10 scale) of each image; the prompt is not used.

    Args:
        weights: hub id or local path of the MLP head checkpoint (``trl-lib/ddpo-aesthetic-predictor``).
        filename: the head's file name inside ``weights``.
        clip: hub id or local directory of the CLIP backbone and its processor (``openai/clip-vit-large-patch14``).
        resize: ``"pil"`` (the processor's 8-bit PIL resize, as the reference scores) or ``"torch"`` (differentiable).
    """

    raw_range = (1.0, 10.0)
    uses_prompt = False
    pairwise_scale = 1.0
    crop_rounding = "floor"  # CLIPImageProcessor's centre crop

    def __init__(
        self,
        weights: str = "trl-lib/ddpo-aesthetic-predictor",
        filename: str = "aesthetic-model.pth",
        clip: str = "openai/clip-vit-large-patch14",
        resize: ResizeBackend = "pil",
        **kwargs,
    ) -> None:
        super().__init__(resize=resize, **kwargs)
        hint = (
            "load_reward('laion-aesthetic', weights='/path/to/aesthetic-model.pth', "
            "clip='/path/to/clip-vit-large-patch14')"
        )
        clip_dir = resolve_dir(clip, what="LAION aesthetic CLIP backbone", hint=hint)
        clip_model = _load_clip(clip_dir)
        # Only the image tower and its projection are needed.
        self.vision = clip_model.vision_model
        self.projection = clip_model.visual_projection
        head_file = resolve_file(weights, filename, what="LAION aesthetic head", hint=hint)
        self.head = AestheticHead(self.projection.out_features)
        self.head.load_state_dict(torch.load(head_file, map_location="cpu", weights_only=True))
        for module in (self.vision, self.projection, self.head):
            module.to(self.device, self.dtype).eval().requires_grad_(False)
        self.image_size, self.mean, self.std = _image_settings(clip_dir)
        self.weights_id = f"{weights}:{filename}"

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        pooled = self.vision(pixel_values=inputs).pooler_output
        embeddings = F.normalize(self.projection(pooled).float(), dim=-1).to(self.dtype)
        return self.head(embeddings).float()
