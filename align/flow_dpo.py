"""Flow-DPO and Flow-RWR: preference alignment of rectified-flow generators (every family of
:mod:`mmreward.flow.models`: SD3, FLUX.1, FLUX.2 [klein], Qwen-Image, Z-Image, Wan2.1/2.2, HunyuanVideo 1.5, and the
editing families Qwen-Image-Edit Plus and FLUX.1 Kontext), LoRA or full fine-tuning.

Paper: "Improving Video Generation with Human Feedback" (VideoAlign), arXiv 2501.13918 -- Flow-DPO is
Diffusion-DPO written for velocity prediction, Flow-RWR reward-weighted flow matching. The only public Flow-DPO
code is yifan123/flow_grpo ``scripts/train_sd3_dpo.py`` (SD3.5, images); this program follows its recipe (shared
noise and noise level for the two sides of a pair, logit-normal levels on the shifted 1000-step grid, per-element
mean errors, constant beta = 100, conditional velocity without CFG (FLUX.1-dev: at the guidance embedding it samples
with, ``loss.guidance_scale``), reference = the model without its adapter)
and adds what it lacks: offline pairs (images or videos, VideoAlign's pair schema), video generators, hinge/IPO
losses, the paper's (1 - t)^2 beta as an option, and exact resume.

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/flow_dpo.py \\
        --config configs/align/flow_dpo_sd3.yaml [--train.learning_rate 1e-4 ...]
    python align/flow_dpo.py --config configs/tiny/flow_dpo.yaml          # tiny random SD3 on the CPU

Pairs come from ``data.source``:
- ``offline``: a pair table (prompt + chosen/rejected media files, or VideoAlign's path_A/path_B + labels);
- ``synthetic``: random textures where the brighter one is preferred (smoke tests, CPU demos);
- ``online``: every ``online.round_steps`` optimizer steps the reference draws ``online.samples_per_prompt``
  samples per prompt, the reward mix ranks them and the best and worst form a pair (Flow-RWR trains on all of
  them, weighted by ``exp(reward / temperature)``). ``online.ref_refresh_every`` makes the current policy the
  new reference every so many steps (online DPO); 0 keeps the base model.
Editing families (``qwenimage-edit``, ``flux-kontext``) train on edits of a source image: offline pair tables add a
source image column (``data.image_column``, default ``image``: ``{"prompt": "make it brighter", "image":
"src.png", "chosen": "a.png", "rejected": "b.png"}``, see :mod:`mmreward.data.media_pairs`), online prompt files are
``.jsonl`` / ``.csv`` / ``.tsv`` tables with ``prompt`` and ``image`` (each round samples edits of every drawn
prompt's source, and rewards that declare ``uses_source`` score them against it). A bad row or line is skipped alone
with its number; the source latents enter the policy's and the reference's forwards on both sides of a pair
(``configs/tiny/flow_dpo_edit.yaml``). Synthetic pairs have no sources and are refused for editing families.
Offline and synthetic media are VAE-encoded once (each process its share) and cached under ``output_dir/cache``;
training reads the cache memory-mapped, so pair sets larger than host memory work.

Writes ``output_dir/config.yaml``, ``metrics.jsonl`` (loss, implicit accuracy, implicit reward margin, ...),
``skipped_pairs.jsonl``, atomic checkpoints under ``checkpoints/`` (resumed automatically), and the final LoRA in
the diffusers format under ``lora/`` (EMA weights when EMA is on): ``pipeline.load_lora_weights(output_dir/lora)``.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mmreward.alignment.flow_dpo_objective import DPOLossConfig, dpo_loss, rwr_loss
from mmreward.alignment.group_rollout import check_sampler_config
from mmreward.alignment.online_pairs import OnlineConfig, build_online_round, round_prompts
from mmreward.alignment.preference_sets import PairDataConfig, TrainingSet, batch_rows, build_offline_set
from mmreward.alignment.prompt_sets import PromptSet, read_prompt_set
from mmreward.data.media_pairs import SkippedPair, read_pair_table
from mmreward.errors import ConfigError
from mmreward.flow.rollout import seeded
from mmreward.rewards.mix import RewardMix
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, require_positive
from mmreward.train.guards import finite_everywhere
from mmreward.train.policy import encode_prompts_once, load_policy
from mmreward.train.run import data_checked, finish_policy_run, open_run, require_steps, start_processes
from mmreward.train.sections import FlowModelConfig, LoraConfig, TrainConfig, check_media_kind

# ----------------------------------------------------------------------------------------------------- config


@dataclass
class DPOTrainConfig(TrainConfig):
    """``train:``: the shared optimizer settings and the pair batches (one optimizer step per training step)."""

    batch_size: int = 2  # pairs per process per micro-batch
    gradient_accumulation_steps: int = 1


@dataclass
class FlowDPOConfig:
    output_dir: str = "outputs/flow_dpo"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    model: FlowModelConfig = field(default_factory=FlowModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: PairDataConfig = field(default_factory=PairDataConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    loss: DPOLossConfig = field(default_factory=DPOLossConfig)
    train: DPOTrainConfig = field(default_factory=DPOTrainConfig)

    def __post_init__(self) -> None:
        """Cross-field rules, checked before anything is loaded."""
        data, online, loss, train, model = self.data, self.online, self.loss, self.train, self.model
        if data.source == "offline" and not data.pairs:
            raise ConfigError("data.source=offline needs data.pairs (a .csv or .jsonl pair table)")
        if data.source == "online":
            if not data.prompts:
                raise ConfigError("data.source=online needs data.prompts (a text file, one prompt per line)")
            if not online.rewards:
                raise ConfigError("data.source=online needs online.rewards, e.g. {pickscore: 1.0}")
            if online.samples_per_prompt < 2:
                raise ConfigError(f"online.samples_per_prompt must be >= 2, got {online.samples_per_prompt}")
            check_sampler_config(online.sampling, "online.sampling")
            if train.save_every % online.round_steps:
                raise ConfigError(
                    f"train.save_every ({train.save_every}) must be a multiple of online.round_steps "
                    f"({online.round_steps}): checkpoints are written at round boundaries so a resumed run draws "
                    "the same samples"
                )
        if loss.type == "rwr" and data.source != "online":
            raise ConfigError(
                "loss.type=rwr (Flow-RWR) weights generated samples by their reward; it needs data.source=online"
            )
        if loss.type == "ipo" and loss.beta_schedule == "one_minus_t_squared":
            raise ConfigError(
                "loss.type=ipo with beta_schedule=one_minus_t_squared: IPO's target 1/(2 beta_t) is infinite where "
                "(1 - t)^2 = 0; use beta_schedule=constant"
            )
        check_media_kind(model, editing=True)
        if data.source == "synthetic" and model.takes_sources():
            raise ConfigError(
                f"data.source=synthetic makes pairs without source images; model.family={model.family} edits sources: "
                "use data.source=offline (a pair table with an image column) or online (a prompt table with one)"
            )
        require_steps(train.max_steps)
        require_positive(
            {
                "train.batch_size": train.batch_size,
                "train.gradient_accumulation_steps": train.gradient_accumulation_steps,
                "train.save_every": train.save_every,
                "online.round_steps": online.round_steps,
                "loss.beta": loss.beta,
                "lora.rank": self.lora.rank,
            }
        )


# ------------------------------------------------------------------------------------------------------ main


def main(cfg: FlowDPOConfig) -> Path | None:
    """Train; returns the adapter's folder, or None for ``train.max_steps 0`` (the data is read, nothing else)."""
    train = cfg.train
    accelerator = start_processes(cfg, "flow_dpo")
    rank, world = accelerator.process_index, accelerator.num_processes
    # editing families: every prompt or pair has a source image (an image column)
    editing = cfg.model.takes_sources()
    prompt_set = PromptSet([])
    if cfg.data.source == "online":
        prompt_set = read_prompt_set(
            cfg.data.prompts, None, cfg.data.image_column, editing=editing, program="flow_dpo", accelerator=accelerator
        )
    if train.max_steps == 0:
        if cfg.data.source == "offline":
            table = read_pair_table(
                cfg.data.pairs,
                media_root=cfg.data.media_root,
                label_columns=cfg.data.label_columns,
                source_column=cfg.data.image_column if editing else None,
            )
            counts = {"data.pairs": len(table.pairs)}
        else:
            counts = {"data.prompts": len(prompt_set)}
        data_checked("flow_dpo", counts, accelerator)
        return None
    run = open_run(cfg, accelerator)
    output, tracker = run.output, run.tracker

    # -- model, adapter, reference, optimizer (one optimizer step per training step)
    policy = load_policy(cfg, accelerator, optimizer_steps=train.max_steps)
    model, transformer, reference = policy.model, policy.transformer, policy.reference

    # -- data
    rewards = None
    skipped: list[SkippedPair] = []
    if cfg.data.source == "online":
        rewards = RewardMix(cfg.online.rewards, device=accelerator.device)
        data, needed = None, {*prompt_set.prompts, cfg.online.sampling.negative_prompt}
    else:
        data, skipped = build_offline_set(cfg, model, accelerator)
        needed = set(data.prompts)
        if len(data) < train.batch_size * world:
            raise ConfigError(
                f"{len(data)} usable pairs, fewer than one batch ({train.batch_size} x {world} processes)"
            )
    if not editing:  # editing prompts are encoded with their source images, as batches draw them
        encode_prompts_once(model, needed, cfg.model.prompt_cache_size)
    if accelerator.is_main_process:
        with (output / "skipped_pairs.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(s)) + "\n" for s in skipped)
        if skipped:
            print(
                f"flow_dpo: skipped {len(skipped)} pairs (reasons in {output / 'skipped_pairs.jsonl'})",
                file=sys.stderr,
            )

    # -- resume
    step, refreshes = 0, 0
    extras = {"reference": reference}  # its snapshot after refreshes (online DPO's moving reference)
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        if json.loads((checkpoint / "state.json").read_text())["refreshes"]:
            reference.refresh()  # a sharded checkpoint loads into existing tensors: give the snapshot its shape
        state = load_checkpoint(checkpoint, **policy.checkpoint_args(extras), rank=rank)
        step, refreshes = state["step"], state["refreshes"]
        policy.guard.skipped = state["nonfinite_skipped"]

    # -- loop
    compute_loss = rwr_loss if cfg.loss.type == "rwr" else dpo_loss
    current: TrainingSet | None = data
    round_stats: dict[str, float] = {}
    while step < train.max_steps:
        if cfg.data.source == "online" and (current is None or step % cfg.online.round_steps == 0):
            round_index = step // cfg.online.round_steps
            drawn = round_prompts(
                range(len(prompt_set)), round_index, cfg.online.prompts_per_round, rank, world, train.seed
            )
            current, round_stats = build_online_round(
                cfg,
                model,
                rewards,
                reference,
                [prompt_set.prompts[i] for i in drawn],
                round_index,
                accelerator,
                sources=None if prompt_set.sources is None else [prompt_set.sources[i] for i in drawn],
            )
            counts = accelerator.gather(torch.tensor([len(current)], device=accelerator.device))
            if int(counts.min()) == 0:
                raise ConfigError(
                    f"round {round_index}: a process has no usable pairs (all samples of its prompts tied or failed; "
                    f"pair counts per process: {counts.tolist()}); raise online.prompts_per_round or "
                    "online.samples_per_prompt, or check the rewards"
                )
        step_metrics: dict[str, list[torch.Tensor]] = {}
        window_ok = True
        for micro in range(train.gradient_accumulation_steps):
            rows, positions = batch_rows(
                len(current), step, micro, cfg, rank, world, online=cfg.data.source == "online"
            )
            generators = [seeded(train.seed, step, micro, position) for position in positions]
            batch = current.select(rows)
            last = micro == train.gradient_accumulation_steps - 1
            with accelerator.no_sync(transformer) if not last else nullcontext():
                loss, metrics = compute_loss(cfg, model, transformer, reference, batch, generators, accelerator)
                if not finite_everywhere(loss, accelerator.reduce):  # every process skips the same backward
                    window_ok = False
                    continue
                accelerator.backward(loss / train.gradient_accumulation_steps)
            for name, value in {"loss": loss, **metrics}.items():
                step_metrics.setdefault(name, []).append(value.detach().float().reshape(()))
        # A non-finite micro-batch skips the whole step (counted; the run stops after too many in a row).
        step_loss = torch.stack(step_metrics["loss"]).mean() if window_ok else float("nan")
        applied, grad_norm = policy.optimizer.step_if_loss_finite(step_loss, accelerator)
        step += 1
        if cfg.online.ref_refresh_every and step % cfg.online.ref_refresh_every == 0:
            reference.refresh()
            refreshes += 1
        if applied and step % train.log_every == 0:
            logged = {
                name: accelerator.reduce(torch.stack(v).mean().to(accelerator.device), "mean").item()
                for name, v in step_metrics.items()
            }
            logged |= {
                "grad_norm": grad_norm,
                "lr": policy.lr_scheduler.get_last_lr()[0],
                "nonfinite_skipped": policy.guard.skipped,
                "skipped_pairs": len(skipped),
                "reference_refreshes": refreshes,
                **round_stats,
            }
            round_stats = {}
            tracker.log(step, logged)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints",
                step,
                **policy.trained_state(extras),
                extra={"refreshes": refreshes, "nonfinite_skipped": policy.guard.skipped},
                keep_last=train.keep_checkpoints,
                rank=rank,
                barrier=accelerator.wait_for_everyone,
            )

    return finish_policy_run(run, policy)


if __name__ == "__main__":
    try:
        main(parse_config(FlowDPOConfig, description=__doc__.splitlines()[0]))
    except ConfigError as err:  # a bad option, prompt or pair file, or a prompt set not available: no traceback
        print(f"flow_dpo: {err}", file=sys.stderr)
        raise SystemExit(2) from None
