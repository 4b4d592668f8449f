"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image
Generation", arXiv 2304.05977) on transformers' BLIP modules, loading the released ``ImageReward.pt``.

The released model (THUDM/ImageReward, package ``image-reward``) is BLIP: a ViT-L/16 image encoder at 224 px, a
BERT text encoder whose layers cross-attend to the image tokens (sized by ``med_config.json``), and an MLP
768-1024-128-64-16-1 (dropout only, no nonlinearity) on the text encoder's first ([CLS]) output. The prompt is
tokenized with ``bert-base-uncased`` plus BLIP's ``[DEC]`` and ``[ENC]`` tokens, padded and truncated to 35
tokens; the image is resized (bicubic, shortest side) and centre-cropped to 224 with torchvision's offset rule and
normalized with OpenAI CLIP's statistics. The score is the head's output standardized with the mean and standard
deviation the package hard-codes (``(r - 0.16717) / 1.03334``): about 0 for an average generation, higher is better.

transformers' ``BlipVisionModel`` and ``BlipTextModel`` are the same networks as BLIP's own ``VisionTransformer``
and ``med.BertModel`` (GELU, LayerNorm eps 1e-6 in the ViT and 1e-12 in the text encoder, no token-type
embeddings, final LayerNorm over every image token), so the released state dict maps onto them by renaming keys
(:func:`split_state_dict`). The number of ViT heads is not in the state dict: BLIP's ViTs use 64-wide heads
(base 768/12, large 1024/16), so ``width // 64``.

The model was trained with a Bradley-Terry loss on the head's raw output, so ``P(A > B) = sigmoid(r_A - r_B)`` on
raw outputs, i.e. ``sigmoid(std * (s_A - s_B))`` on the standardized scores: :attr:`pairwise_scale` is that std.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from mmreward.errors import ConfigError
from mmreward.hub import resolve_dir, resolve_file
from mmreward.rewards.clip_preprocess import ClipImageReward, ResizeBackend
from mmreward.rewards.hf_clip_rewards import AestheticHead

# The package's standardization of the head's output (ImageReward.py, ``self.mean`` / ``self.std``).
RELEASED_MEAN = 0.16717362830052426
RELEASED_STD = 1.0333394966054072
MAX_TOKENS = 35  # the package's ``max_length`` for the prompt, [CLS] and [SEP] included
BLIP_HEAD_WIDTH = 64
# BLIP's ViT (timm layout) -> transformers' BlipVisionModel, after the "blip.visual_encoder." prefix.
_VIT_RENAMES = (
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
)
_PREFIXES = {"vision": "blip.visual_encoder.", "text": "blip.text_encoder.", "head": "mlp."}
# In the released file but not used for the score: ITC projections and the text position-id buffer.
_UNUSED = re.compile(r"^blip\.(vision_proj|text_proj)\.|^blip\.text_encoder\.embeddings\.position_ids$")


def _rename_vit_key(key: str) -> str:
    for pattern, replacement in _VIT_RENAMES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    raise ConfigError(f"unexpected ImageReward image-encoder key 'blip.visual_encoder.{key}'; is this ImageReward.pt?")


def split_state_dict(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The released ImageReward state dict -> ``{"vision", "text", "head"}`` state dicts for
    ``BlipVisionModel``, ``BlipTextModel`` and the MLP head. Keys the score does not use are dropped; any other key
    is an error naming it."""
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in _PREFIXES}
    for key, value in state.items():
        if _UNUSED.search(key):
            continue
        part = next((name for name, prefix in _PREFIXES.items() if key.startswith(prefix)), None)
        if part is None:
            raise ConfigError(
                f"unexpected key {key!r} in the ImageReward checkpoint (expected {sorted(_PREFIXES.values())})"
            )
        inner = key[len(_PREFIXES[part]) :]
        parts[part][_rename_vit_key(inner) if part == "vision" else inner] = value
    return parts


def _load_exact(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` requiring every parameter (buffers may come from the module itself)."""
    parameters = {name for name, _ in module.named_parameters()}
    missing = sorted(parameters - set(state))
    unexpected = sorted(set(state) - set(module.state_dict()))
    if missing or unexpected:
        raise ConfigError(
            f"the ImageReward checkpoint does not fit its {what}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; the file must be ImageReward.pt with the med_config.json published beside it"
        )
    module.load_state_dict(state, strict=False)


def _vision_model(state: dict[str, torch.Tensor]):
    from transformers import BlipVisionConfig, BlipVisionModel

    width = state["embeddings.class_embedding"].shape[-1]
    patch = state["embeddings.patch_embedding.weight"].shape[-1]
    grid = round((state["embeddings.position_embedding"].shape[1] - 1) ** 0.5)  # (1, 1 + grid^2, width)
    depth = len({key.split(".")[2] for key in state if key.startswith("encoder.layers.")})
    if width % BLIP_HEAD_WIDTH:
        raise ConfigError(f"ImageReward image encoder width {width} is not a multiple of BLIP's head width 64")
    config = BlipVisionConfig(
        hidden_size=width,
        intermediate_size=state["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=depth,
        num_attention_heads=width // BLIP_HEAD_WIDTH,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",
        layer_norm_eps=1e-6,  # BLIP's VisionTransformer: partial(nn.LayerNorm, eps=1e-6)
    )
    model = BlipVisionModel(config)
    _load_exact(model, state, "image encoder")
    return model


def _text_model(med_config: Path, encoder_width: int, state: dict[str, torch.Tensor]):
    from transformers import BlipTextConfig, BlipTextModel

    try:
        med = json.loads(med_config.read_text(encoding="utf-8"))
        config = BlipTextConfig(
            vocab_size=med["vocab_size"],
            hidden_size=med["hidden_size"],
            encoder_hidden_size=encoder_width,  # BLIP sets encoder_width from the ViT, whatever the file says
            intermediate_size=med["intermediate_size"],
            num_hidden_layers=med["num_hidden_layers"],
            num_attention_heads=med["num_attention_heads"],
            max_position_embeddings=med["max_position_embeddings"],
            hidden_act=med["hidden_act"],
            layer_norm_eps=med["layer_norm_eps"],
            pad_token_id=med.get("pad_token_id", 0),
            # Generation token ids are not used by an encoder; the class defaults (30522, 102) would not fit a
            # smaller vocabulary.
            bos_token_id=None,
            eos_token_id=None,
            sep_token_id=None,
            is_decoder=True,  # builds the cross-attention layers (med's add_cross_attention); run as an encoder
        )
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"cannot read ImageReward med_config {str(med_config)!r}: {err!r}") from err
    model = BlipTextModel(config, add_pooling_layer=False)
    _load_exact(model, state, "text encoder")
    return model


class ImageReward(ClipImageReward):
    """ImageReward: BLIP image-text cross-attention, MLP head, standardized with the released mean and std.

    Args:
        weights: hub id (``THUDM/ImageReward``) or a local directory holding ``filename`` and ``med_config``, or
            the checkpoint file itself (then ``med_config`` must be a path).
        filename: the checkpoint's file name inside ``weights``.
        med_config: the text encoder's config: a file name inside ``weights`` or a path.
        tokenizer: hub id or directory of the BERT tokenizer (``google-bert/bert-base-uncased``).
        resize: ``"pil"`` (the package's 8-bit PIL resize, as the reference scores) or ``"torch"`` (differentiable).
    """

    raw_range = (-2.5, 2.5)
    pairwise_scale = RELEASED_STD
    crop_rounding = "round"  # torchvision's CenterCrop

    def __init__(
        self,
        weights: str = "THUDM/ImageReward",
        filename: str = "ImageReward.pt",
        med_config: str = "med_config.json",
        tokenizer: str = "google-bert/bert-base-uncased",
        resize: ResizeBackend = "pil",
        **kwargs,
    ) -> None:
        super().__init__(resize=resize, **kwargs)
        from transformers import AutoTokenizer

        hint = (
            "load_reward('imagereward', weights='/path/to/dir with ImageReward.pt and med_config.json', "
            "tokenizer='/path/to/bert-base-uncased')"
        )
        checkpoint = resolve_file(weights, filename, what="ImageReward", hint=hint)
        config_file = Path(med_config).expanduser()
        if not config_file.is_file():
            config_file = resolve_file(weights, med_config, what="ImageReward med_config", hint=hint)
        parts = split_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        self.vision = _vision_model(parts["vision"])
        self.text = _text_model(config_file, self.vision.config.hidden_size, parts["text"])
        self.head = AestheticHead(parts["head"]["layers.0.weight"].shape[1])  # the same MLP, keys layers.0 .. .7
        _load_exact(self.head, parts["head"], "MLP head")
        for module in (self.vision, self.text, self.head):
            module.to(self.device, self.dtype).eval().requires_grad_(False)

        tokenizer_dir = resolve_dir(tokenizer, what="ImageReward tokenizer", hint=hint, need_weights=False)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        # BLIP's init_tokenizer adds [DEC] (as bos) then [ENC]; the checkpoint's vocabulary counts them.
        self.tokenizer.add_tokens(["[DEC]", "[ENC]"], special_tokens=True)
        rows = self.text.config.vocab_size
        if len(self.tokenizer) != rows:
            raise ConfigError(
                f"tokenizer {tokenizer!r} has {len(self.tokenizer)} tokens with [DEC] and [ENC], but the "
                f"checkpoint's text encoder has {rows} embeddings: use the tokenizer ImageReward was trained with "
                "(bert-base-uncased)"
            )
        self.image_size = self.vision.config.image_size
        self.mean, self.std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        self.weights_id = f"{weights}:{filename}"
        self.reference_stats = {"score": (RELEASED_MEAN, RELEASED_STD)}

    def forward_pixels(self, prompts: list[str], inputs: torch.Tensor) -> torch.Tensor:
        image_tokens = self.vision(pixel_values=inputs).last_hidden_state  # (N, 1 + patches, Dv)
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        ).to(self.device)
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=self.device)
        text = self.text(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            encoder_hidden_states=image_tokens,
            encoder_attention_mask=image_mask,
            is_decoder=False,
        ).last_hidden_state[:, 0]  # (N, Dt): the [CLS] position
        raw = self.head(text).float()
        return (raw - RELEASED_MEAN) / RELEASED_STD
