"""Monitoring a generator while it is aligned: deterministic samples on held-out prompts, reward means, the win rate
against the base model, within-prompt diversity, and a grid of samples on disk.

Reward hacking shows as the training reward rising while held-out rewards, or a judge's win rate against the base
model, stall or fall; mode collapse shows as the diversity (mean pairwise feature distance between the samples of
one prompt) falling towards 0. A Pref-GRPO training reward cannot show either: the mean win rate within a group is
0.5 by construction (Pref-GRPO issue #14), so the held-out numbers are the ones to watch.

Samples are drawn with the ODE sampler from fixed per-sample seeds, so every evaluation of a run (and the base
model's samples) starts from the same noise and differences come from the weights alone. The ``E = prompts x
samples`` evaluation samples are split over the processes like training samples (:class:`GroupLayout`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmreward.alignment.layout import GroupLayout, exchange_rows
from mmreward.data.prompts import read_prompts
from mmreward.errors import ConfigError
from mmreward.evaluation.diversity import Features, ImageEmbeddingFeatures, pixel_features, within_group_diversity
from mmreward.flow.rollout import sample_ode, seeded
from mmreward.media import to_pil, to_uint8, write_video
from mmreward.rewards.mix import RewardMix
from mmreward.train.policy import LoraPolicy
from mmreward.train.run import clock


@dataclass
class EvalConfig:
    """Held-out evaluation (``eval:`` section of a GRPO program's config)."""

    every: int = 50  # steps between evaluations (also at the start and at the end); 0: never
    num_prompts: int = 16  # the first prompts of data.eval_prompts
    samples_per_prompt: int = 4  # >= 2: diversity compares the samples of a prompt
    num_steps: int = 40  # ODE steps (Flow-GRPO evaluates SD3.5 at 40, trains at 10)
    guidance_scale: float = 4.5
    batch_size: int = 8  # samples per transformer call
    rewards: dict[str, float] = field(default_factory=dict)  # pointwise rewards to report (default: training's)
    compare_to_base: bool = True  # win rate (judge) or reward gain against the base model on the same seeds
    diversity_features: str = "pixels"  # "pixels" (32x32 RMS distance) or a CLIP-family reward (clip-score, pickscore)
    grid_prompts: int = 8  # prompts shown in the saved grid (one row each)
    video_fps: float = 16.0  # frame rate of saved videos (Wan 2.1: 16)


def check_eval_config(cfg: EvalConfig, world: int = 1) -> None:
    if cfg.every < 0:
        raise ConfigError(f"eval.every must be >= 0, got {cfg.every}")
    if not cfg.every:
        return
    if cfg.samples_per_prompt < 2:
        raise ConfigError(
            f"eval.samples_per_prompt must be >= 2 (diversity compares them), got {cfg.samples_per_prompt}"
        )
    for name in ("num_prompts", "num_steps", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"eval.{name} must be >= 1, got {getattr(cfg, name)}")
    if (cfg.num_prompts * cfg.samples_per_prompt) % world:
        raise ConfigError(
            f"eval.num_prompts x eval.samples_per_prompt = {cfg.num_prompts * cfg.samples_per_prompt} evaluation "
            f"samples cannot be split evenly over {world} processes; make it a multiple of {world}"
        )


def read_eval_prompts(path: str | None, column: str | None, cfg: EvalConfig) -> list[str]:
    """The first ``cfg.num_prompts`` held-out prompts of ``path`` ([] when evaluation is off)."""
    if not cfg.every:
        return []
    prompts = read_prompts(path, column)[: cfg.num_prompts]
    if len(prompts) < cfg.num_prompts:
        raise ConfigError(f"eval.num_prompts={cfg.num_prompts} but {path!r} has {len(prompts)}")
    return prompts


@dataclass
class EvalSamples:
    """This process's evaluation samples: ``index`` ``(n,)`` global sample indices (prompt-major), their
    ``prompts``, ``media`` ``(n, ...)`` uint8, and for editing families their ``sources`` (n canonical images)."""

    index: torch.Tensor
    prompts: list[str]
    media: torch.Tensor
    sources: list[torch.Tensor] | None = None


def sample_eval(
    policy: LoraPolicy,
    prompts: Sequence[str],
    cfg: EvalConfig,
    *,
    base_model: bool = False,
    height: int,
    width: int,
    num_frames: int | None = None,
    negative_prompt: str = "",
    accelerator: Any,
    seed: int,
    sources: Sequence[torch.Tensor] | None = None,
) -> EvalSamples:
    """ODE samples of this process's share of ``prompts x cfg.samples_per_prompt``, sample ``i`` from the noise
    of ``seeded(seed, "eval", i)`` (the same at every evaluation), drawn by the base model (``base_model``: the
    policy's adapter disabled) or by the policy (its EMA weights when EMA is on). ``sources``: editing families'
    source image of each prompt."""
    layout = GroupLayout(len(prompts), cfg.samples_per_prompt, accelerator.num_processes, accelerator.process_index)
    index = layout.local_index()
    local_prompts = [prompts[int(i) // cfg.samples_per_prompt] for i in index]
    local_sources = None if sources is None else [sources[int(i) // cfg.samples_per_prompt] for i in index]
    ema = policy.ema
    weights = policy.reference.active() if base_model else ema.swapped_in() if ema is not None else nullcontext()
    with weights, accelerator.autocast():
        out = sample_ode(
            policy.model,
            local_prompts,
            num_steps=cfg.num_steps,
            height=height,
            width=width,
            num_frames=num_frames,
            guidance_scale=cfg.guidance_scale,
            negative_prompt=negative_prompt,
            generator=[seeded(seed, "eval", int(i)) for i in index],
            batch_size=cfg.batch_size,
            sources=local_sources,
        )
    return EvalSamples(index, local_prompts, to_uint8(out.media), local_sources)


# ----------------------------------------------------------------------------------------------------- metrics


def load_diversity_features(cfg: EvalConfig, device: torch.device | str) -> Features:
    """The feature map of ``cfg.diversity_features``: 32x32 pixel thumbnails (``"pixels"``, no weights), or the image
    embeddings of a CLIP-family reward, loaded here (only when evaluation is on)."""
    if not cfg.every or cfg.diversity_features == "pixels":
        return pixel_features
    from mmreward.rewards.registry import load_reward

    return ImageEmbeddingFeatures(load_reward(cfg.diversity_features, device=device))


def evaluate(
    samples: EvalSamples,
    samples_per_prompt: int,
    *,
    accelerator: Any,
    rewards: RewardMix | None = None,
    judge: Any = None,
    orders: str = "both",
    base: EvalSamples | None = None,
    base_scores: dict[str, torch.Tensor] | None = None,
    features: Features = pixel_features,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Metrics of evaluation samples, the same on every process, and their per-sample reward scores.

    - ``eval/<reward>``: mean of each reward of ``rewards`` over the samples it scored (``eval/failed`` counts
      the others); with ``base_scores`` (the base model's scores, as returned here) also ``eval/<reward>_gain``,
      the mean paired difference on the same prompts and seeds;
    - ``eval/win_rate_vs_base``: with a ``judge`` and the ``base`` model's samples, P(policy sample better than
      the base sample of the same prompt and seed) + P(tie) / 2, averaged over the pairs the judge decided;
    - ``eval/diversity``: :func:`within_group_diversity` of ``features`` over each prompt's samples.

    Returns ``(metrics, scores)`` with ``scores[name]`` the ``(E,)`` per-sample scores (NaN where failed).
    """
    device = accelerator.device
    metrics: dict[str, float] = {}
    scores: dict[str, torch.Tensor] = {}
    if rewards is not None:
        out = rewards.score(samples.prompts, samples.media, sources=samples.sources)
        local = {name: torch.where(out.failed, torch.nan, values.float()) for name, values in out.dims.items()}
        for name, values in local.items():
            scores[name] = accelerator.gather(values.to(device)).cpu()
            metrics[f"eval/{name}"] = float(scores[name].nanmean())
            if base_scores is not None and name in base_scores:
                metrics[f"eval/{name}_gain"] = float((scores[name] - base_scores[name]).nanmean())
        metrics["eval/failed"] = float(accelerator.gather(out.failed.to(device)).sum())
    if judge is not None and base is not None:
        pair = judge.compare(samples.prompts, samples.media, base.media, orders=orders)
        wins = torch.where(pair.failed, torch.nan, pair.prob_a.float() + 0.5 * pair.tie.float())
        wins = accelerator.gather(wins.to(device)).cpu()
        metrics["eval/win_rate_vs_base"] = float(wins.nanmean())
        metrics["eval/judge_failed"] = float(wins.isnan().sum())
    feats = accelerator.gather(features(samples.media).float().to(device)).cpu()  # (E, D)
    index = accelerator.gather(samples.index.to(device)).cpu()
    metrics["eval/diversity"] = within_group_diversity(feats, index // samples_per_prompt)
    return metrics, scores


@dataclass
class HeldOutEvaluation:
    """One held-out evaluation of a training program, as Pref-GRPO and DiffusionNFT run it: ODE samples of the
    evaluation prompts from fixed seeds (:func:`sample_eval`), their metrics (:func:`evaluate`; the judge's win rate
    against the base model's samples when ``cfg.compare_to_base``), the sample grid saved under
    ``output/eval/step-N`` and the metrics logged at step ``at`` with ``time/eval``.

    ``extra_metrics(at, samples)``: a program's own metrics of the same samples, merged into the logged ones
    (Adv-GRPO's distances to its reference images); every process calls it, as :func:`evaluate` is called."""

    policy: Any
    prompts: list[str]
    cfg: EvalConfig
    size: dict[str, Any]
    negative_prompt: str
    accelerator: Any
    seed: int
    output: Path
    tracker: Any
    rewards: RewardMix | None = None
    judge: Any = None
    orders: str = "both"
    features: Features = pixel_features
    extra_metrics: Callable[[int, EvalSamples], dict[str, float]] | None = None
    sources: list[torch.Tensor] | None = None  # editing families: the source image of each prompt

    def __call__(
        self,
        at: int,
        *,
        base_model: bool = False,
        base: EvalSamples | None = None,
        base_scores: dict[str, torch.Tensor] | None = None,
        log: bool = True,
    ) -> tuple[EvalSamples, dict[str, torch.Tensor]]:
        """Evaluate the policy (the base model with ``base_model``); returns the samples and per-sample scores,
        the comparison point ``base``/``base_scores`` of later evaluations."""
        cfg, accelerator = self.cfg, self.accelerator
        start = clock(accelerator.device)
        samples = sample_eval(
            self.policy,
            self.prompts,
            cfg,
            base_model=base_model,
            **self.size,
            negative_prompt=self.negative_prompt,
            accelerator=accelerator,
            seed=self.seed,
            sources=self.sources,
        )
        metrics, scores = evaluate(
            samples,
            cfg.samples_per_prompt,
            accelerator=accelerator,
            rewards=self.rewards,
            judge=self.judge if cfg.compare_to_base else None,
            orders=self.orders,
            base=base,
            base_scores=base_scores if cfg.compare_to_base else None,
            features=self.features,
        )
        if self.extra_metrics is not None:
            metrics |= self.extra_metrics(at, samples)
        grid = grid_samples(samples, cfg.grid_prompts * cfg.samples_per_prompt, accelerator)
        if log and accelerator.is_main_process:
            if len(grid):
                save_grid(self.output / "eval" / f"step-{at:08d}", grid, cfg.samples_per_prompt, cfg.video_fps)
            self.tracker.log(at, {**metrics, "time/eval": clock(accelerator.device) - start})
        return samples, scores


# ------------------------------------------------------------------------------------------------- sample grids


def grid_samples(samples: EvalSamples, count: int, accelerator: Any) -> torch.Tensor | None:
    """The first ``count`` evaluation samples (prompt-major), delivered to the main process (None elsewhere)."""
    local = samples.media
    total = len(samples.index) * accelerator.num_processes
    destination = torch.full((total,), -1, dtype=torch.long)
    destination[: min(count, total)] = 0
    _, rows = exchange_rows(local, destination, accelerator)
    return rows.cpu() if accelerator.is_main_process else None


def save_grid(path: str | Path, media: torch.Tensor, per_row: int, fps: float = 16.0) -> Path:
    """Write uint8 samples as one grid, ``per_row`` samples per row (one prompt per row): a PNG for images
    ``(n, 3, H, W)``, an H.264 mp4 for videos ``(n, T, 3, H, W)`` (each frame a grid). Returns the file written."""
    from torchvision.utils import make_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = media.float() / 255 if media.dtype == torch.uint8 else media.float()
    if x.ndim == 4:
        target = path.with_suffix(".png")
        to_pil(make_grid(x, nrow=per_row, padding=2, pad_value=1.0)).save(target)
        return target
    frames = torch.stack([make_grid(x[:, t], nrow=per_row, padding=2, pad_value=1.0) for t in range(x.shape[1])])
    target = path.with_suffix(".mp4")
    write_video(target, frames, fps)
    return target
