"""Reward-head checkpoint layouts: VideoAlign's LoRA layout (VideoReward) and single full state-dict files (HPSv3).

**VideoAlign layout** (``KlingTeam/VideoReward``; read from VideoAlign's train_reward.py, utils.py, inference.py)::

    model_config.json            data_config (eval_dim, fps, max_frame_pixels, ...), model_config
                                 (model_name_or_path = the base Qwen2-VL, output_dim, reward_token,
                                 use_special_tokens),
                                 peft_lora_config (lora_r, lora_alpha, use_rslora, ...), inference_config
                                 ({VQ,MQ,TA}_{mean,std}: the normalization of each dimension)
    checkpoint-<step>/
      adapter_model.safetensors  LoRA A/B matrices of the language model's linear layers (peft naming)
      adapter_config.json        r, lora_alpha, use_rslora
      non_lora_state_dict.pth    every other trained tensor: vision tower, merger, token embeddings (with the
                                 added reward tokens), rm_head
      model.pth                  instead of the two above when trained with save_full_model: the whole state dict
                                 of the peft-wrapped model (base weights as ``...base_layer.weight`` next to their
                                 LoRA matrices); it takes precedence, as in VideoAlign's loader. The LoRA scale
                                 then comes from ``peft_lora_config`` (lora_r, lora_alpha; VideoAlign's defaults
                                 16 and 32 where absent)

The newest ``checkpoint-<step>`` is used unless a step is given. mmreward's own training program writes the same
layout (with ``non_lora_state_dict.safetensors`` instead of the pickle) plus an ``mmreward`` section recording how
the model was trained (head, reward tokens, position mode, frame resizing), so both load through this module.

**How a checkpoint expects its inputs** (:class:`HeadCheckpoint` ``positions``, ``frame_resize``,
``image_resize``).
VideoAlign's reward forward calls the language model with ``position_ids=None``, which under its pinned
transformers 4.45 gives every token, visual ones included, the sequential positions ``0..n-1`` (no 3-D M-RoPE),
in training and inference; its data pipeline resizes 8-bit frames with torchvision's antialiased bicubic before
the processor. A VideoAlign-layout directory without the ``mmreward`` section is therefore read as
``positions="sequential"``, ``frame_resize="videoalign"``. mmreward checkpoints say what they were trained with;
ones written before the record existed were trained with M-RoPE and the processor's resize. HPSv3's single file
(no config of its own) is read as sequential positions with its PIL bicubic image resize (``image_resize="pil"``).

**Full state dict** (``MizzenAI/HPSv3``, ``HPSv3.safetensors``): every tensor of the fine-tuned model, including
``rm_head``; the base checkpoint supplies only the config and processor.

Keys are written by several transformers versions (4.45's ``model.layers`` / ``visual`` and 5.x's
``model.language_model`` / ``model.visual``) and by peft (``base_model.model.`` prefix, adapter names);
:func:`normalize_key` maps them all to the bare ``*VLModel`` naming (``language_model.*``, ``visual.*``).
LoRA deltas are merged into the base weights at load (``W += scale * B @ A``), so inference runs without peft.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmreward.errors import ConfigError, WeightsNotFoundError

MODEL_CONFIG_FILE = "model_config.json"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
NON_LORA_FILES = ("non_lora_state_dict.safetensors", "non_lora_state_dict.pth")
FULL_MODEL_FILE = "model.pth"
# "sequential": positions 0..n-1 for every token (VideoAlign, HPSv3); "mrope": Qwen's 3-D multimodal positions.
POSITION_MODES = ("sequential", "mrope")
# "videoalign": antialiased bicubic resize of the uint8 frames before the processor; "processor": its own resize.
FRAME_RESIZE_MODES = ("videoalign", "processor")
# "pil": PIL bicubic resize of the uint8 image before the processor (HPSv3); "processor": its own resize.
IMAGE_RESIZE_MODES = ("pil", "processor")


def check_mode(name: str, value: str, allowed: tuple[str, ...], source: str) -> str:
    """``value`` if it is one of ``allowed``, else a ConfigError naming ``source`` and the choices."""
    if value not in allowed:
        raise ConfigError(f"{source}: {name}={value!r} is not one of {allowed}")
    return value


def normalize_key(key: str) -> str | None:
    """Map a checkpoint key to the bare ``*VLModel`` naming; None for tensors heads do not use (``lm_head``)."""
    key = key.removeprefix("base_model.model.").replace(".base_layer.", ".")  # peft keeps wrapped weights there
    if key.startswith("lm_head."):
        return None
    if key.startswith(("rm_head.", "language_model.", "visual.")):
        return key
    if key.startswith(("model.language_model.", "model.visual.")):
        return key.removeprefix("model.")
    if key.startswith("model."):  # transformers 4.x: the text model was `model`, the vision tower `visual`
        return "language_model." + key.removeprefix("model.")
    return key


@dataclass
class HeadCheckpoint:
    """What a head checkpoint says about itself (from ``model_config.json`` or the preset)."""

    base_model: str | None = None
    dims: tuple[str, ...] = ()
    output_dim: int | None = None
    reward_token: str = "special"
    reward_tokens: tuple[str, ...] = ()
    head: str = "linear"
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    fps: float | None = None
    max_frame_pixels: int | None = None
    positions: str | None = None
    frame_resize: str | None = None
    image_resize: str | None = None
    checkpoint_dir: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def read_model_config(directory: Path, checkpoint_step: int | None = None) -> HeadCheckpoint:
    """Parse ``model_config.json`` of a VideoAlign-layout directory and locate its ``checkpoint-<step>``."""
    path = directory / MODEL_CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {str(path)!r}: {err}") from err
    model = raw.get("model_config", {})
    data = raw.get("data_config", {})
    dims = data.get("eval_dim") or raw.get("mmreward", {}).get("dims") or []
    dims = (dims,) if isinstance(dims, str) else tuple(dims)
    extra = raw.get("mmreward", {})
    tokens = tuple(extra.get("reward_tokens") or (f"<|{d}_reward|>" for d in dims))
    stats = {}
    inference = raw.get("inference_config") or {}
    for dim in dims:
        if f"{dim}_mean" in inference and f"{dim}_std" in inference:
            stats[dim] = (float(inference[f"{dim}_mean"]), float(inference[f"{dim}_std"]))
    reward_token = model.get("reward_token", "special")
    if reward_token not in ("special", "last"):
        raise ConfigError(
            f"{str(path)!r}: reward_token={reward_token!r} is not supported; mmreward reads 'special' reward tokens "
            "or the 'last' token"
        )
    if reward_token == "special" and not model.get("use_special_tokens", True):
        raise ConfigError(f"{str(path)!r}: reward_token='special' needs use_special_tokens=true")
    if "mmreward" in raw:  # written by mmreward: what it was trained with (M-RoPE before this was recorded)
        positions = extra.get("positions", "mrope")
        frame_resize = extra.get("frame_resize", "processor")
        image_resize = extra.get("image_resize", "processor")
    else:  # written by VideoAlign (see the module docstring); it trained on videos, images keep the processor's
        positions, frame_resize, image_resize = "sequential", "videoalign", "processor"
    return HeadCheckpoint(
        base_model=model.get("model_name_or_path"),
        dims=dims,
        output_dim=model.get("output_dim"),
        reward_token=reward_token,
        reward_tokens=tokens if reward_token == "special" else (),
        head=extra.get("head", "linear"),
        stats=stats,
        fps=data.get("fps"),
        max_frame_pixels=data.get("max_frame_pixels"),
        positions=check_mode("positions", positions, POSITION_MODES, str(path)),
        frame_resize=check_mode("frame_resize", frame_resize, FRAME_RESIZE_MODES, str(path)),
        image_resize=check_mode("image_resize", image_resize, IMAGE_RESIZE_MODES, str(path)),
        checkpoint_dir=find_checkpoint_dir(directory, checkpoint_step),
        raw=raw,
    )


def find_checkpoint_dir(directory: Path, step: int | None) -> Path:
    """``checkpoint-<step>`` inside ``directory`` (the newest when ``step`` is None)."""
    found = {}
    for child in directory.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir():
            found[int(match.group(1))] = child
    if not found:
        raise WeightsNotFoundError(f"{str(directory)!r} has {MODEL_CONFIG_FILE} but no checkpoint-<step> directory")
    if step is None:
        return found[max(found)]
    if step not in found:
        raise WeightsNotFoundError(f"{str(directory)!r} has no checkpoint-{step}; available steps: {sorted(found)}")
    return found[step]


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.pth``/``.bin`` pickle (read with ``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"{str(path)!r} does not hold a state dict")
    return state


def non_lora_state(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    for name in NON_LORA_FILES:
        if (checkpoint_dir / name).is_file():
            return load_state_dict_file(checkpoint_dir / name)
    raise WeightsNotFoundError(f"{str(checkpoint_dir)!r} has none of {list(NON_LORA_FILES)}")


def load_into(
    model: torch.nn.Module,
    head: torch.nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    changed: set[str] | None = None,
) -> int:
    """Copy ``state`` (any naming, see :func:`normalize_key`) into ``model`` and ``head``; returns tensors loaded.

    Every tensor must find its parameter with the same shape; a mismatch names the key and the likely cause.
    ``changed``, when given, collects the model tensors (bare names) whose values the copy altered: what a
    model continued from this checkpoint must save beside the base weights.
    """
    targets = dict(model.state_dict())
    targets.update({f"rm_head.{k}": v for k, v in head.state_dict().items()})
    loaded = 0
    with torch.no_grad():
        for key, value in state.items():
            name = normalize_key(key)
            if name is None or ".lora_" in name:
                continue
            if name not in targets:
                raise ConfigError(f"{source}: tensor {key!r} has no counterpart in the model (is base_model right?)")
            if targets[name].shape != value.shape:
                raise ConfigError(
                    f"{source}: tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(targets[name].shape)} (is base_model the checkpoint's base?)"
                )
            value = value.to(targets[name].dtype)
            if changed is not None and not name.startswith("rm_head.") and not torch.equal(targets[name], value):
                changed.add(name)
            targets[name].copy_(value)
            loaded += 1
    return loaded


def load_full(
    model: torch.nn.Module,
    head: torch.nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    changed: set[str] | None = None,
) -> None:
    """:func:`load_into` for a file that must hold every tensor of ``model`` and ``head`` (LoRA matrices aside)."""
    loaded = load_into(model, head, state, source=source, changed=changed)
    expected = len(model.state_dict()) + len(head.state_dict())
    if loaded < expected:
        raise ConfigError(f"{source} holds {loaded} of the model's {expected} tensors; is it a full checkpoint?")


def videoalign_lora_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The adapter settings of a full-model VideoAlign checkpoint, from ``peft_lora_config`` of its
    model_config.json (VideoAlign's defaults r=16, alpha=32 where absent, as its config class fills them)."""
    peft = raw.get("peft_lora_config") or {}
    return {
        "r": peft.get("lora_r", 16),
        "lora_alpha": peft.get("lora_alpha", 32),
        "use_rslora": peft.get("use_rslora"),
    }


def lora_scale(adapter_config: dict[str, Any]) -> float:
    """``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), peft's scaling of ``B @ A``."""
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        raise ConfigError("LoRA adapters with per-module rank_pattern/alpha_pattern are not supported")
    rank = float(adapter_config["r"])
    alpha = float(adapter_config.get("lora_alpha", rank))
    return alpha / rank**0.5 if adapter_config.get("use_rslora") else alpha / rank


def merge_lora(model: torch.nn.Module, adapter: dict[str, torch.Tensor], scale: float, *, source: str) -> list[str]:
    """Add ``scale * B @ A`` to each adapted linear layer of ``model``; returns the weights changed
    (``<layer>.weight``, bare names)."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in adapter.items():
        match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if match is None:
            continue
        module = normalize_key(match.group(1))
        pairs.setdefault(module, {})[match.group(2)] = value
    with torch.no_grad():
        for module_name, ab in pairs.items():
            if set(ab) != {"A", "B"}:
                raise ConfigError(f"{source}: LoRA layer {module_name!r} lacks its A or B matrix")
            try:
                layer = model.get_submodule(module_name)
            except AttributeError as err:
                raise ConfigError(f"{source}: LoRA layer {module_name!r} is not in the model") from err
            delta = (ab["B"].float() @ ab["A"].float()) * scale
            if delta.shape != layer.weight.shape:
                raise ConfigError(f"{source}: LoRA delta for {module_name!r} has shape {tuple(delta.shape)}")
            layer.weight.add_(delta.to(layer.weight.device, layer.weight.dtype))
    return [f"{name}.weight" for name in pairs]


def save_head_checkpoint(
    directory: Path,
    *,
    step: int,
    base_model: str,
    dims: tuple[str, ...],
    reward_tokens: tuple[str, ...],
    head_kind: str,
    output_dim: int,
    lora: dict[str, torch.Tensor],
    lora_config: dict[str, Any] | None,
    trained: dict[str, torch.Tensor],
    stats: dict[str, tuple[float, float]],
    data_config: dict[str, Any],
    positions: str,
    frame_resize: str,
    image_resize: str,
) -> Path:
    """Write a head model in the VideoAlign layout (see the module docstring); returns ``checkpoint-<step>``.

    Args:
        lora: LoRA tensors named as in the model (``...q_proj.lora_A.<adapter>.weight``); empty without LoRA.
        lora_config: ``{"r", "lora_alpha", "use_rslora", "target_modules"}`` of that LoRA.
        trained: every other trained tensor by bare ``*VLModel`` name (vision tower, embeddings) plus ``rm_head.*``.
        stats: ``{dim: (mean, std)}`` of the raw outputs, written as ``inference_config``.
        data_config: fps, frame pixels and other sampling settings, kept for the record.
        positions, frame_resize, image_resize: the position mode and the frame and image resizing the model was
            trained with; loading uses them.
    """
    from safetensors.torch import save_file

    step_dir = directory / f"checkpoint-{step}"
    step_dir.mkdir(parents=True, exist_ok=True)
    if lora:
        adapter = {}
        for key, value in lora.items():
            # peft writes adapters without the adapter name: "...lora_A.default.weight" -> "...lora_A.weight".
            bare = re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", key)
            adapter["base_model.model." + bare] = value.detach().cpu().contiguous()
        save_file(adapter, str(step_dir / ADAPTER_FILE))
        (step_dir / ADAPTER_CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", **(lora_config or {})}, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in trained.items()}, str(step_dir / NON_LORA_FILES[0]))
    inference = {f"{d}_{k}": v for d, (mean, std) in stats.items() for k, v in (("mean", mean), ("std", std))}
    config = {
        "data_config": {"eval_dim": list(dims), **data_config},
        "model_config": {
            "model_name_or_path": base_model,
            "output_dim": output_dim,
            "use_special_tokens": True,
            "reward_token": "special",
        },
        "peft_lora_config": {"lora_enable": bool(lora), **({"lora_r": lora_config["r"]} if lora_config else {})},
        "inference_config": inference,
        "mmreward": {
            "head": head_kind,
            "reward_tokens": list(reward_tokens),
            "dims": list(dims),
            "positions": check_mode("positions", positions, POSITION_MODES, "save_head_checkpoint"),
            "frame_resize": check_mode("frame_resize", frame_resize, FRAME_RESIZE_MODES, "save_head_checkpoint"),
            "image_resize": check_mode("image_resize", image_resize, IMAGE_RESIZE_MODES, "save_head_checkpoint"),
        },
    }
    tmp = directory / f".{MODEL_CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(directory / MODEL_CONFIG_FILE)
    return step_dir
