"""Rewards that overlap sampling: the rollout of a GRPO iteration is drawn in micro-batches of
``rollout.batch_size`` samples, and each micro-batch's rewards start as soon as it is decoded, in a worker thread,
while the next micro-batch samples (Flow-GRPO scores with a thread pool the same way; verl-omni's async reward).

- Pointwise rewards (a reward mix, Adv-GRPO's discriminator): one reward call per micro-batch.
- Group-complete rewards (win rates within a group): a call as soon as the micro-batches decoded so far complete
  one or more groups. When groups span processes, their media must first be exchanged between processes (a
  collective), so such rewards start after the whole rollout, as without overlap.
- Training starts only when every reward of the iteration is in (:func:`share_rewards` waits for the last one), so
  the update stays on-policy: nothing here changes which weights sampled or which weights are trained.

A micro-batch is sampled by :func:`mmreward.flow.rollout.sample` with exactly the rows, per-sample generators,
initial noise and SDE window of one transformer call of :func:`~mmreward.alignment.group_rollout.rollout_groups`,
so the samples are bit-identical with and without overlap; a reward that does not depend on which other items
share its call (the brightness rewards, remote servers that score items one by one, a discriminator drawing its
patch tokens per image from one generator in sample order) gives identical rewards too. A reward whose numbers
depend on its batch (a GPU model whose kernels change with batch size) may differ in the last bits.

Local rewards run in one worker thread (``workers=1``): torch releases the GIL in its kernels, so the reward runs
beside the sampler, and the calls run in sample order (a reward that draws from ``generator`` draws as it would in
one call). Remote rewards (``mmreward serve``, an OpenAI-compatible judge) may use several workers, so the requests
of several micro-batches are in flight at once while the server batches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from mmreward.alignment.group_rewards import (
    GroupReward,
    IterationRewards,
    compute_rewards,
    score_rows,
    share_rewards,
)
from mmreward.alignment.group_rollout import (
    GroupBatch,
    RolloutConfig,
    group_initial_noise,
    rollout_groups,
    rollout_window,
)
from mmreward.alignment.layout import GroupLayout
from mmreward.errors import ConfigError
from mmreward.flow.models import FlowModel, PromptEmbeds
from mmreward.flow.rollout import Rollout, sample, seeded
from mmreward.media import to_uint8
from mmreward.train.run import clock


def check_overlap_workers(workers: int, generator: torch.Generator | None = None) -> None:
    """``workers`` reward calls in flight at once: >= 1, and 1 for a reward that draws from a generator (its
    draws must follow sample order)."""
    if workers < 1:
        raise ConfigError(f"reward.overlap_workers must be >= 1, got {workers}")
    if generator is not None and workers != 1:
        raise ConfigError(
            f"reward.overlap_workers={workers}, but this reward draws random numbers in sample order; set "
            "reward.overlap_workers: 1"
        )


def micro_batches(count: int, size: int) -> list[slice]:
    """Row ranges ``[0, size), [size, 2 size), ...`` covering ``count`` rows: one transformer call each."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def complete_groups(group: torch.Tensor, decoded: int) -> int:
    """How many of this process's rows, from the first, form whole groups once ``decoded`` rows are decoded:
    ``group`` is ``(N,)`` the group of each local row, sorted (the layout is prompt-major). A group is complete when
    its last local row is decoded."""
    if decoded >= len(group):
        return len(group)
    # rows of the group that the next undecoded row belongs to are not complete yet
    return int((group[:decoded] < group[decoded]).sum())


def cat_rollouts(parts: Sequence[Rollout]) -> Rollout:
    """One :class:`Rollout` of the micro-batches' rows in order (each drawn with ``group_size=1``, so sample ``i``
    is its own group, as in :func:`rollout_groups`)."""
    first = parts[0]
    total = sum(len(p) for p in parts)
    return Rollout(
        prompts=[prompt for p in parts for prompt in p.prompts],
        group=torch.arange(total),
        cond=PromptEmbeds.cat([p.cond for p in parts]),
        negative=None if first.negative is None else PromptEmbeds.cat([p.negative for p in parts]),
        guidance_scale=first.guidance_scale,
        sde_type=first.sde_type,
        noise_level=first.noise_level,
        sigmas=first.sigmas,
        sde_steps=first.sde_steps,
        latents=torch.cat([p.latents for p in parts]),  # (N, S, *latent)
        next_latents=torch.cat([p.next_latents for p in parts]),
        log_probs=torch.cat([p.log_probs for p in parts]),  # (N, S)
        final=torch.cat([p.final for p in parts]),
        media=torch.cat([p.media for p in parts]),
        log_prob_kind=first.log_prob_kind,
        means=None if first.means is None else torch.cat([p.means for p in parts]),  # (N, S, *latent)
        sources=None if first.sources is None else [source for p in parts for source in p.sources],
    )


def rollout_and_reward(
    model: FlowModel,
    prompts: Sequence[str],
    layout: GroupLayout,
    rollout: RolloutConfig,
    reward: GroupReward,
    *,
    height: int,
    width: int,
    num_frames: int | None = None,
    iteration: int,
    seed: int,
    accelerator: Any,
    overlap: bool = True,
    workers: int = 1,
    generator: torch.Generator | None = None,
    transformer: nn.Module | None = None,
    record_means: bool = False,
    sources: Sequence[torch.Tensor] | None = None,
) -> tuple[GroupBatch, IterationRewards, float]:
    """The iteration's rollout (as :func:`rollout_groups`) and its rewards (as :func:`compute_rewards`), with the
    rewards overlapping the sampling when ``overlap`` (see the module docstring). Returns ``(batch, rewards,
    rolled)``: ``rolled`` is the :func:`clock` time when the last micro-batch was decoded (what is left after it
    is the reward time the sampling did not hide). ``generator`` goes to the reward; ``workers`` reward calls may
    be in flight at once; ``record_means`` and ``sources`` as for :func:`rollout_groups`."""
    check_overlap_workers(workers, generator)
    device = accelerator.device
    if not overlap:
        batch = rollout_groups(
            model, prompts, layout, rollout, height=height, width=width, num_frames=num_frames,
            iteration=iteration, seed=seed, accelerator=accelerator, transformer=transformer,
            record_means=record_means, sources=sources,
        )  # fmt: skip
        rolled = clock(device)
        return batch, compute_rewards(reward, batch, layout, accelerator, generator), rolled
    if len(prompts) != layout.prompts:
        raise ValueError(f"{len(prompts)} prompts for a layout of {layout.prompts}")
    prompts = list(prompts)
    source_list = None if sources is None else list(sources)
    index = layout.local_index()
    group = index // layout.group_size
    window = rollout_window(rollout, iteration, seed)
    # group rewards of groups spanning processes need a collective exchange after the whole rollout
    local_rewards = not reward.whole_groups or layout.groups_are_local
    parts: list[Rollout] = []
    media: list[torch.Tensor] = []
    futures: list[tuple[torch.Tensor, Future]] = []
    submitted = 0  # local rows whose reward has started
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward") as pool:
        for rows in micro_batches(len(index), rollout.batch_size):
            # a reward call that raised (not an item that failed) stops the iteration before more is sampled
            failed = next((job for _, job in futures if job.done() and job.exception() is not None), None)
            if failed is not None:
                failed.result()
            shape = model.latent_shape(rows.stop - rows.start, height, width, num_frames)
            with accelerator.autocast():
                part = sample(
                    model,
                    [prompts[int(g)] for g in group[rows]],
                    group_size=1,
                    num_steps=rollout.num_steps,
                    height=height,
                    width=width,
                    num_frames=num_frames,
                    guidance_scale=rollout.guidance_scale,
                    negative_prompt=rollout.negative_prompt,
                    sde_type=rollout.sde_type,
                    noise_level=rollout.noise_level,
                    sde_window=window,
                    generator=[seeded(seed, "rollout", iteration, int(i)) for i in index[rows]],
                    batch_size=rollout.batch_size,
                    transformer=transformer,
                    cps_log_prob=rollout.cps_log_prob,
                    initial_noise=(
                        group_initial_noise(shape, group[rows], seed, iteration) if rollout.same_noise else None
                    ),
                    record_means=record_means,
                    sources=None if sources is None else [sources[int(g)] for g in group[rows]],
                )
            parts.append(part)
            # contiguous, as the whole rollout's media are: a reduction over a strided item sums in another order
            media.append(to_uint8(part.media).contiguous())
            if not local_rewards:
                continue
            ready = rows.stop if not reward.whole_groups else complete_groups(group, rows.stop)
            if ready > submitted:
                todo = slice(submitted, ready)
                # pointwise: this micro-batch; group rewards: the newly complete groups' rows of those decoded
                rows_media = media[-1] if not reward.whole_groups else torch.cat(media)[todo]  # (rows, ...) uint8
                job = pool.submit(
                    score_rows, reward, prompts, index[todo], rows_media, layout.group_size, generator, source_list
                )
                futures.append((index[todo], job))
                submitted = ready
        batch = GroupBatch(
            cat_rollouts(parts), index, group, prompts, torch.cat(media), rollout.batch_size, source_list
        )
        rolled = clock(device)
        if not local_rewards:
            return batch, compute_rewards(reward, batch, layout, accelerator, generator), rolled
        # A failed call (the reward raised, not an item that failed) raises here, as it would without overlap.
        scored = [(rows_index, job.result()) for rows_index, job in futures]
    return batch, share_rewards(reward, scored, layout, accelerator), rolled
