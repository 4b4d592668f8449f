"""What a latent-reward run trains on, decided before any model loads: the items to encode (media files,
synthetic textures, or samples to generate) with their prompts, and the preference pairs between them."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmreward.data.media_pairs import SkippedPair, read_pair_table
from mmreward.data.prompts import read_prompts
from mmreward.data.synthetic_brightness import PROMPTS
from mmreward.errors import ConfigError
from mmreward.reward_training.latent_sections import LatentDataConfig
from mmreward.rewards.registry import resolve_reward


@dataclass
class Plan:
    """What to encode and how it is labelled, before any model loads. Items are media (pairs, synthetic) or
    samples to generate (distill), identified by their position in ``items``."""

    dims: list[str]
    items: list[str]  # pairs: file paths; synthetic: ""; distill: prompts (one per sample)
    prompts: list[str]
    pairs: list[tuple[int, int, int]] = field(default_factory=list)  # (dim, winner item, loser item)
    skipped: list[SkippedPair] = field(default_factory=list)


def plan_data(data: LatentDataConfig) -> Plan:
    """Read the pair table or prompts and check them (and the rewards' names) before any model loads."""
    if data.source == "synthetic":
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(data.num_synthetic) for _ in range(2)]
        pairs = [(0, 2 * i, 2 * i + 1) for i in range(data.num_synthetic)]  # orientation fixed when drawn
        return Plan(["brightness"], [""] * len(prompts), prompts, pairs)
    if data.source == "distill":
        for name in data.rewards:
            resolve_reward(name)  # unknown names fail here, before the generator loads
        prompts = [p for p in read_prompts(data.prompts) for _ in range(data.samples_per_prompt)]
        return Plan([], prompts, prompts)
    dims = list(data.label_columns) or [data.dim_name]
    items: dict[str, int] = {}
    prompts: list[str] = []
    plan = Plan(dims, [], prompts)
    for k, dim in enumerate(dims):
        columns = [dim] if data.label_columns else []
        table = read_pair_table(data.pairs, media_root=data.media_root, label_columns=columns)
        if data.label_columns:
            plan.skipped += [SkippedPair(s.row, f"{dim}: {s.reason}") for s in table.skipped]
        elif k == 0:
            plan.skipped += table.skipped
        for pair in table.pairs:
            ids = []
            for path in (pair.chosen, pair.rejected):
                key = str(path)
                if key not in items:
                    items[key] = len(items)
                    prompts.append(pair.prompt)
                ids.append(items[key])
            plan.pairs.append((k, ids[0], ids[1]))
    if not plan.pairs:
        reasons = "; ".join(f"row {s.row}: {s.reason}" for s in plan.skipped[:5])
        raise ConfigError(f"no usable pairs in {data.pairs!r}; all rows were skipped ({reasons})")
    plan.items = list(items)
    return plan


def distill_dims(names: list[str]) -> list[str]:
    """Dimension names of distilled rewards: the reward's name, then ``name.dim`` for each of its dims."""
    dims = []
    for name in names:
        cls, kwargs, display = resolve_reward(name)
        dims += [display, *[f"{display}.{d}" for d in kwargs.get("dims", cls.dims)]]
    return dims
