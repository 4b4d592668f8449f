"""Train Flow-NRG's latent reward: a time-conditioned reward on *noisy* generator latents, one output per dimension.

Paper: "Improving Video Generation with Human Feedback" (VideoAlign), arXiv 2501.13918, Flow-NRG. Guidance
evaluates the reward on the noisy latent ``x_t`` of every sampling step, so the reward is trained on
``x_t = (1 - t) x0 + t eps`` (Table 7: trained on clean latents it fails). No public code exists; what differs:
the reward is a small convolutional network on the latents (mmreward.guidance.latent_reward), not the first
layers of the generator, so guidance costs no transformer backward.

    python align/train_latent_reward.py --config configs/tiny/train_latent_reward.yaml      # tiny SD3, CPU
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml align/train_latent_reward.py \\
        --config my_config.yaml --model.family wan --data.label_columns '[VQ,MQ,TA]'

Data (``data.source``):
- ``pairs``: a pair table as align/flow_dpo.py reads it (``prompt, chosen, rejected`` or VideoAlign's
  ``path_A, path_B, prompt`` + labels). With the VideoAlign schema every column of ``data.label_columns`` is a
  dimension trained on its own labels (ties skipped per dimension); otherwise one dimension ``data.dim_name``.
  Loss: Bradley-Terry on noised latents, ``-log sigmoid(r_k(x_t^w, t) - r_k(x_t^l, t))``, the same ``t`` for both
  sides and independent noise (at sampling time there is one ``x_t``, not a pair sharing its noise).
- ``distill``: the generator samples ``data.samples_per_prompt`` images/videos per prompt and every reward of
  ``data.rewards`` (any mmreward reward, differentiable or not) scores them; each reward (and each of its
  dimensions) becomes a dimension. Loss: mean squared error to the standardized scores, whose minimizer is
  ``E[r(x0) | x_t, t]``, the quantity a guidance gradient should follow.
- ``synthetic``: pairs of random smooth textures at random brightness, the brighter one preferred (tests, demos).

Noise levels: ``u ~ U(0, 1)`` mapped through the generator's shifted training grid (the levels sampling visits).
Media are VAE-encoded once, each process its share, into ``output_dir/cache`` and read memory-mapped. A share of
the pairs (``data.holdout``) is held out; pairwise accuracy on them at ``train.eval_sigmas`` is logged and saved
to ``eval.json``. Several processes train under DDP, or sharded with torch's FSDP2 (``train.sharding: fsdp2``, or an
accelerate config with ``distributed_type: FSDP``; mmreward.train.sharding): each conv block and then the root are
sharded, checkpoints hold every process's shard and resume exactly, and the saved reward is gathered. The network
starts random and always trains whole (there is no LoRA to choose, unlike the generator programs). Output:
``output_dir/latent_reward`` (load with ``mmreward.guidance.latent_reward.load_latent_reward``; guide with
``mmreward generate --method nrg --guide output_dir/latent_reward``), plus ``config.yaml``, ``metrics.jsonl``,
``skipped_pairs.jsonl`` and resumable checkpoints.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mmreward.errors import ConfigError
from mmreward.flow.models import load_flow_model
from mmreward.flow.rollout import seeded
from mmreward.guidance.latent_reward import LatentRewardModel, LatentRewardSpec
from mmreward.reward_training.latent_data import plan_data
from mmreward.reward_training.latent_encoding import build_cache, prompt_embeddings
from mmreward.reward_training.latent_objective import batch_loss, draw_levels_and_noise, heldout_accuracy
from mmreward.reward_training.latent_sections import (
    LatentDataConfig,
    LatentGeneratorConfig,
    LatentRewardNetConfig,
    LatentTrainConfig,
)
from mmreward.reward_training.latent_split import global_rows, split_data
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import parse_config, require_positive
from mmreward.train.distributed import check_launch, make_accelerator
from mmreward.train.guards import NonFiniteGuard, finite_everywhere
from mmreward.train.run import open_run
from mmreward.train.sections import check_media_kind
from mmreward.train.sharding import ShardedState, clip_grad_norm, full_state_dict, is_sharded, shard_model

# ----------------------------------------------------------------------------------------------------- config


@dataclass
class TrainLatentRewardConfig:
    output_dir: str = "outputs/latent_reward"
    logging: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    model: LatentGeneratorConfig = field(default_factory=LatentGeneratorConfig)
    reward_model: LatentRewardNetConfig = field(default_factory=LatentRewardNetConfig)
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    train: LatentTrainConfig = field(default_factory=LatentTrainConfig)

    def __post_init__(self) -> None:
        data, model, train = self.data, self.model, self.train
        if data.source == "pairs" and not data.pairs:
            raise ConfigError("data.source=pairs needs data.pairs (a .csv or .jsonl pair table)")
        if data.source == "distill" and (not data.prompts or not data.rewards):
            raise ConfigError("data.source=distill needs data.prompts (a text file) and data.rewards (reward names)")
        if data.source == "distill" and data.samples_per_prompt < 2:
            raise ConfigError(f"data.samples_per_prompt must be >= 2, got {data.samples_per_prompt}")
        if not 0 < data.holdout < 1:
            raise ConfigError(f"data.holdout must be in (0, 1), got {data.holdout}")
        check_media_kind(model)
        if any(not 0 <= s <= 1 for s in train.eval_sigmas):
            raise ConfigError(f"train.eval_sigmas must lie in [0, 1], got {train.eval_sigmas}")
        require_positive(
            {
                "train.max_steps": train.max_steps,
                "train.batch_size": train.batch_size,
                "train.eval_every": train.eval_every,
                "train.save_every": train.save_every,
                "reward_model.width": self.reward_model.width,
                "reward_model.depth": self.reward_model.depth,
            }
        )


# ------------------------------------------------------------------------------------------------------ main


def main(cfg: TrainLatentRewardConfig) -> Path:
    train = cfg.train
    plan = plan_data(cfg.data)  # bad tables, empty prompt files and unknown rewards fail before any model loads
    accelerator = make_accelerator()
    sharding = check_launch(accelerator, train.sharding)
    run = open_run(cfg, accelerator)
    output, tracker = run.output, run.tracker
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    # -- generator (VAE, text encoders; the transformer for distill), data
    model = load_flow_model(
        cfg.model.family,
        cfg.model.path,
        device=device,
        dtype=cfg.model.dtype,
        vae_dtype=cfg.model.vae_dtype,
        max_sequence_length=cfg.model.max_sequence_length,
    )
    latent_shape = list(model.latent_shape(1, cfg.model.height, cfg.model.width, cfg.model.num_frames)[1:])
    latents = build_cache(cfg, plan, model, accelerator)
    data = split_data(cfg.data, train.seed, plan, latents)
    text, text_size = None, 0
    if cfg.reward_model.text_conditioning:
        text, text_size = prompt_embeddings(model, plan.prompts, device)
    if accelerator.is_main_process:
        with (output / "skipped_pairs.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(s)) + "\n" for s in data.skipped)
        if data.skipped:
            print(
                f"train_latent_reward: skipped {len(data.skipped)} (reasons in {output / 'skipped_pairs.jsonl'})",
                file=sys.stderr,
            )

    # -- the latent reward, optimizer, resume
    spec = LatentRewardSpec(
        family=cfg.model.family,
        latent_shape=latent_shape,
        dims=data.dims,
        text_dim=int(text_size),
        width=cfg.reward_model.width,
        depth=cfg.reward_model.depth,
        generator=cfg.model.path,
    )
    torch.manual_seed(train.seed)  # the same initial weights on every process (FSDP2 keeps each one's shard)
    unwrapped = LatentRewardModel(spec).to(device)
    if sharding == "fsdp2" and torch.distributed.is_initialized():  # the conv blocks, then the root (stem, head)
        shard_model(unwrapped, mixed_precision=accelerator.mixed_precision)
    optimizer = torch.optim.AdamW(unwrapped.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
    if sharding == "fsdp2":
        # accelerate never wraps a sharded model; the checkpoint is every process's shard of the weights and of the
        # optimizer state (sharded/), written and read by all of them.
        reward, saved = unwrapped, {"modules": {}, "states": {}}
        saved["collective"] = ShardedState(unwrapped, optimizer, trainable_only=False)
    else:
        reward, optimizer = accelerator.prepare(unwrapped, optimizer)
        saved = {"modules": {"latent_reward": unwrapped}, "states": {"optimizer": optimizer}}
    guard = NonFiniteGuard(train.max_nonfinite_steps)
    step = 0
    checkpoint = latest_checkpoint(output / "checkpoints") if train.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, **saved, rank=rank)
        step, guard.skipped = state["step"], state["nonfinite_skipped"]

    def evaluate() -> dict[str, float]:
        unwrapped.eval()
        return heldout_accuracy(
            unwrapped, latents, text, data, cfg.data.source, train.eval_sigmas, train.batch_size, train.seed, device
        )

    # -- loop: a global batch of train.batch_size x world from a seeded permutation per epoch, one slice each
    size, b = len(data.train), train.batch_size
    sides = 1 if cfg.data.source == "distill" else 2
    evaluation: dict[str, float] = {}
    while step < train.max_steps:
        rows = global_rows(size, step, b * world, train.seed)[rank * b : (rank + 1) * b]
        batch = [data.train[i] for i in rows]
        generators = [seeded(train.seed, "step", step, rank * b + k) for k in range(len(batch))]
        sigma, noise = draw_levels_and_noise(model, latent_shape, generators, train.noise_levels, sides)
        unwrapped.train()
        loss, stats = batch_loss(cfg.data.source, reward, latents, text, batch, data, sigma, noise, device)
        finite = finite_everywhere(loss, accelerator.reduce)  # every process skips the same backward
        if finite:
            accelerator.backward(loss)
            if is_sharded(unwrapped):  # the norm over every process's gradient shards
                grad_norm = clip_grad_norm(list(unwrapped.parameters()), train.max_grad_norm)
            else:
                grad_norm = accelerator.clip_grad_norm_(unwrapped.parameters(), train.max_grad_norm)
            optimizer.step()
        applied = guard.ok(loss if finite else float("nan"))
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if applied and (step % train.log_every == 0 or step == train.max_steps):
            logged = {"loss": loss.detach(), **stats}
            logged = {k: accelerator.reduce(v.float().reshape(1).to(device), "mean").item() for k, v in logged.items()}
            tracker.log(step, {**logged, "grad_norm": float(grad_norm), "nonfinite_skipped": guard.skipped})
        if step % train.eval_every == 0 or step == train.max_steps:
            evaluation = evaluate()
            tracker.log(step, evaluation)
        if step % train.save_every == 0 or step == train.max_steps:
            save_checkpoint(
                output / "checkpoints",
                step,
                **saved,
                extra={"nonfinite_skipped": guard.skipped},
                keep_last=train.keep_checkpoints,
                rank=rank,
                barrier=accelerator.wait_for_everyone,
            )

    # -- save (every process evaluates and gathers: under FSDP2 a forward and the whole weights need all of them)
    accelerator.wait_for_everyone()
    target = output / "latent_reward"
    evaluation = evaluation or evaluate()  # resumed at max_steps: evaluate what was loaded
    weights = full_state_dict(unwrapped) if is_sharded(unwrapped) else None
    if accelerator.is_main_process:
        (output / "eval.json").write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
        unwrapped.spec.training = {
            "source": cfg.data.source,
            "steps": step,
            "train_size": size,
            "heldout_size": len(data.heldout),
            "heldout_accuracy": evaluation,
        }
        unwrapped.save(target, weights)
    tracker.close()
    accelerator.end_training()
    return target


if __name__ == "__main__":
    main(parse_config(TrainLatentRewardConfig, description=__doc__.splitlines()[0]))
