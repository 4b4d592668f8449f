"""The head task (VideoReward, Liu et al. 2025): one reward token per dimension whose last hidden state a head
reads; a Bradley-Terry-type loss (``mmreward.losses.preference_loss``) on ``r(A) - r(B)`` per dimension, or
HPSv3's uncertainty loss for one token read as ``(mu, log sigma)``. Starts from a fresh head or continues a trained
head model (``model.init_from``). Saved in VideoAlign's checkpoint layout with the dimensions' normalization
stats."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from mmreward.errors import ConfigError
from mmreward.losses import preference_loss
from mmreward.reward_training.saved_presets import relative_to_output
from mmreward.reward_training.validation import gather_rewards
from mmreward.rewards.registry import SAVED_REWARD_FILE, find_preset
from mmreward.rewards.vlm.checkpoints import normalize_key, save_head_checkpoint
from mmreward.rewards.vlm.heads import VLMHeadReward
from mmreward.train.sharding import full_state_dict, is_sharded


class PairScorer(nn.Module):
    """Head task's trainable modules as one ``nn.Module`` (one DDP wrapper): raw rewards ``(2B, D)``."""

    def __init__(self, reward: VLMHeadReward) -> None:
        super().__init__()
        self.model = reward.model
        self.head = reward.head
        self._reward = [reward]  # a list, so the reward is not registered as a submodule

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._reward[0].forward_raw(inputs)


class HeadTask:
    """A per-dimension reward head (VideoReward): Bradley-Terry-type loss on ``r(A) - r(B)`` per dimension.

    ``options``: the constructor arguments the saved ``mmreward_reward.yaml`` repeats (template, frame sampling,
    pixel bounds), as the model was built with them.
    """

    def __init__(self, cfg: Any, reward: VLMHeadReward, options: dict[str, Any]) -> None:
        self.cfg, self.reward, self.options = cfg, reward, options
        self.module = PairScorer(reward)
        self.dims = list(cfg.model.dims)
        self.label_index = list(range(len(self.dims)))
        self.model, self.extra_params, self.token_ids = reward.model, list(reward.head.parameters()), reward.token_ids
        self.keep_stats = (cfg.train.stats or ("keep" if cfg.model.init_from else "measure")) == "keep"
        if self.keep_stats and reward.reference_stats and set(reward.reference_stats) != set(self.dims):
            raise ConfigError(
                f"train.stats=keep: model.dims {self.dims} are not the dimensions {sorted(reward.reference_stats)} "
                f"model.init_from normalizes; name them as it does, or set train.stats: measure"
            )

    @classmethod
    def untrained(cls, cfg: Any, base: str | None, common: dict[str, Any]) -> HeadTask:
        """The task on a fresh head over ``base``, or on the checkpoint ``model.init_from`` (``common``: the
        constructor arguments heads and judges share)."""
        data, model = cfg.data, cfg.model
        options = {
            **common,
            "dims": model.dims,
            "head": model.head,
            "head_output_dim": model.head_output_dim,
            "reward_tokens": model.reward_tokens,
            "video_fps": data.video_fps,
            "frame_min_pixels": data.frame_min_pixels,
            "frame_max_pixels": data.frame_max_pixels,
            "positions": model.positions,
            "frame_resize": model.frame_resize,
            "image_resize": model.image_resize,
        }
        if model.init_from is None:
            options = {
                **FRAME_DEFAULTS,
                **{k: v for k, v in options.items() if v is not None or k not in FRAME_DEFAULTS},
            }
            reward = VLMHeadReward.untrained(base, seed=cfg.train.seed, **options)
        else:
            options = init_arguments(model.init_from, model.init_filename, base, options)
            reward = VLMHeadReward(**options)
        if cfg.train.loss == "uncertainty" and (reward.output_dim != 2 or len(model.dims) != 1):
            raise ConfigError(
                f"train.loss=uncertainty reads (mu, log sigma) from one reward token: set model.head_output_dim: 2 "
                f"(got {reward.output_dim}) and one dimension in model.dims (got {list(model.dims)})"
            )
        recorded = {k: options.get(k) for k in PRESET_OPTIONS if options.get(k) is not None}
        return cls(cfg, reward, recorded)

    def prepare(self, path: str) -> Any:
        return self.reward.prepare(self.reward.load_media(path))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        # Both sides in one processor batch: rows 0..B-1 are the A sides, B..2B-1 the B sides.
        prompts = [it["prompt"] for it in items]
        return {
            "inputs": self.reward._encode(prompts + prompts, [it["a"] for it in items] + [it["b"] for it in items])
        }

    def rewards(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides' raw rewards, ``(B, D)``; ``(B, 1, 2)`` ``(mu, log sigma)`` for the uncertainty loss."""
        raw = module(batch["inputs"])  # (2B, D), or (2B, 2) for one token read as (mu, log sigma)
        size = batch["labels"].shape[0]
        if self.cfg.train.loss == "uncertainty":
            raw = raw.view(2 * size, 1, 2)
        return raw[:size], raw[size:]

    def loss(self, module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        r_a, r_b = self.rewards(module, batch)
        train = self.cfg.train
        return preference_loss(
            r_a,
            r_b,
            batch["labels"],
            train.loss,
            theta=train.theta,
            margin=batch["margins"],
            reduction=train.loss_reduction,
        )

    def margins(self, module: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """``(B, D)`` reward gaps (of mu for the uncertainty loss)."""
        r_a, r_b = self.rewards(module, batch)
        if self.cfg.train.loss == "uncertainty":
            r_a, r_b = r_a[..., 0], r_b[..., 0]
        return (r_a - r_b).float()

    def save(self, module: nn.Module, step: int, stats_loader: DataLoader, accelerator) -> None:
        # Normalization stats: mean and std of each dimension's raw reward over (up to stats_pairs) training pairs.
        if self.keep_stats:
            stats = dict(self.reward.reference_stats)
        else:
            r_a, r_b = gather_rewards(self, module, stats_loader, accelerator)
            both = torch.cat([r_a, r_b])  # (2N, D), or (2N, 1, 2) with the uncertainty loss: the stats are mu's
            if self.cfg.train.loss == "uncertainty":
                both = both[..., 0]
            stats = {
                d: (float(both[:, k].mean()), float(both[:, k].std().clamp(min=1e-6))) for k, d in enumerate(self.dims)
            }
        state, trainable = scorer_state(accelerator.unwrap_model(module), accelerator.is_main_process)
        if accelerator.is_main_process:
            save_head_dir(self.cfg, self.reward, state, trainable, self.options, step, stats)


# Constructor arguments a saved head directory's mmreward_reward.yaml repeats so that it scores as trained.
PRESET_OPTIONS = (
    "template",
    "template_name",
    "template_file",
    "reference_prompt",
    "template_source_dir",
    "video_fps",
    "frame_min_pixels",
    "frame_max_pixels",
    "image_min_pixels",
    "image_max_pixels",
)
TEMPLATE_OPTIONS = PRESET_OPTIONS[:5]
# Frame sampling where neither the run nor the starting checkpoint's preset sets it: the reward's own defaults.
FRAME_DEFAULTS = {
    name: inspect.signature(VLMHeadReward.__init__).parameters[name].default
    for name in ("video_fps", "frame_min_pixels", "frame_max_pixels")
}


def init_arguments(init_from: str, filename: str | None, base: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of :class:`VLMHeadReward` for continuing from ``init_from``: the vlm-head preset it
    names (a registered name, a preset file or a saved directory), or ``{"weights": init_from}`` for a checkpoint;
    then ``filename``, ``base`` and every option of ``options`` that is set (None: the checkpoint's own)."""
    preset = find_preset(init_from)
    arguments: dict[str, Any] = dict(FRAME_DEFAULTS)
    if preset is None:
        arguments["weights"] = init_from
    elif preset.type != "vlm-head":
        raise ConfigError(
            f"model.init_from={init_from!r} is a {preset.type!r} reward; training continues only vlm-head models "
            "(videoreward, hpsv3, a directory align/train_reward.py saved, or a VideoAlign-layout checkpoint)"
        )
    else:
        arguments.update(preset.kwargs)
    if filename is not None:
        arguments["filename"] = filename
    if base is not None:
        arguments["base_model"] = base
    if options.get("template_file") is not None:
        # The run's own template file replaces the preset's whole template choice; a template name given alone
        # keeps the preset's template_name and reference_prompt, which "ours" and "reference" apply to.
        arguments = {k: v for k, v in arguments.items() if k not in TEMPLATE_OPTIONS}
    arguments.update({k: v for k, v in options.items() if v is not None})
    return arguments


def scorer_state(scorer: PairScorer, is_main_process: bool) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The whole weights of ``scorer`` (named as in its ``state_dict``: ``model.*``, ``head.*``) and the names of
    the trained ones. Sharded (FSDP2): gathered to the main process, every process must call it; otherwise only the
    main process reads them (others get an empty dict)."""
    trainable = {name for name, p in scorer.named_parameters() if p.requires_grad}
    if is_sharded(scorer):
        return full_state_dict(scorer), trainable
    return (scorer.state_dict() if is_main_process else {}), trainable


def save_head_dir(
    cfg: Any,
    reward: VLMHeadReward,
    state: dict[str, torch.Tensor],
    trainable: set[str],
    options: dict[str, Any],
    step: int,
    stats,
) -> Path:
    """Write the trained head model (VideoAlign layout) and ``mmreward_reward.yaml`` into ``output_dir``, from the
    scorer's weights ``state`` of which ``trainable`` name the trained ones (:func:`scorer_state`).

    Saved beside the new LoRA: every trained tensor, the head, and the tensors the starting checkpoint changed
    from the base weights (its merged LoRA, its fine-tuned layers), so the directory loads on the base alone.
    """
    out = Path(cfg.output_dir)
    lora, trained = {}, {}
    model_state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    for name, tensor in model_state.items():
        if f"model.{name}" in trainable:
            (lora if "lora_" in name else trained)[name] = tensor
    if reward.checkpoint_tensors:
        # Bare names: LoRA injection renamed the adapted layers' weights to "...base_layer.weight".
        bare = {normalize_key(k): v for k, v in model_state.items() if ".lora_" not in k}
        for name in reward.checkpoint_tensors:
            trained.setdefault(name, bare[name])
    trained.update({f"rm_head.{k.removeprefix('head.')}": v for k, v in state.items() if k.startswith("head.")})
    lora_config = None
    if lora:
        lora_config = {"r": cfg.lora.rank, "lora_alpha": cfg.lora.alpha, "target_modules": cfg.lora.target_modules}
    for old in out.glob("checkpoint-*"):
        shutil.rmtree(old)
    save_head_checkpoint(
        out,
        step=step,
        base_model=reward.spec.base_model,
        dims=tuple(cfg.model.dims),
        reward_tokens=tuple(reward.spec.reward_tokens),
        head_kind=reward.spec.head,
        output_dim=reward.output_dim,
        lora=lora,
        lora_config=lora_config,
        trained=trained,
        stats=stats,
        data_config={"fps": options.get("video_fps"), "max_frame_pixels": options.get("frame_max_pixels")},
        positions=reward.positions,
        frame_resize=reward.frame_resize,
        image_resize=reward.image_resize,
    )
    preset = {
        "type": "vlm-head",
        "weights": "./",
        "base_model": relative_to_output(reward.spec.base_model, out),
        **options,
    }
    if "template_file" in options:
        copy = out / "template.yaml"
        if Path(options["template_file"]).resolve() != copy.resolve():  # continuing in the directory it came from
            shutil.copy(options["template_file"], copy)
        preset["template_file"] = "./template.yaml"
    (out / SAVED_REWARD_FILE).write_text(yaml.safe_dump(preset, sort_keys=False))
    return out
