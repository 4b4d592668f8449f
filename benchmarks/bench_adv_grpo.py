"""What Adv-GRPO's discriminator adds to a GRPO step: scoring the rollout and a batch of references, the reward
call, and the discriminator's optimizer steps, against the GRPO step itself (rollout, reward, advantages, update).

    python benchmarks/bench_adv_grpo.py          # CPU; the bench_grpo.py generator, a ViT-S/14-shaped DINOv2
    python benchmarks/bench_adv_grpo.py --device cuda --latent-size 64 --dino-width 768 --dino-size 518
    python benchmarks/bench_adv_grpo.py --smoke  # bench_grpo.py's smoke generator, 1-layer DINOv2 at 28 px, once

The generator is the one of ``benchmarks/bench_grpo.py`` (SD3 MM-DiT, LoRA r32, CFG, KL); its step is what
align/pref_grpo.py runs with a pointwise brightness reward (a free reward, so the step is the generator's own cost).
The discriminator is a random ``Dinov2Model`` of the given shape with the Adv-GRPO head (512 hidden, 64 patch
tokens: ``--dino-patches``), run through the same functions align/adv_grpo.py calls (``DinoDiscriminator.score``,
``AdversarialReward``, ``DiscriminatorTrainer.step``). The two are timed interleaved, best of ``--repeats``, CPU time
of the process on a CPU (one thread), wall time on a GPU. The last line is ``discriminator/step: NN%``.

Measured on the shared 2-core CPU machine (CPU time, one thread, best of 3), 2 prompts x 4 samples at 64 px, 6 SDE
steps, 3 trained; ViT-S/14 shape (12 layers, width 384) at 224 px, 16 references drawn from a pool of 64 per use,
1 discriminator step (``OMP_NUM_THREADS=1 python benchmarks/bench_adv_grpo.py``): GRPO step 5.27 s; discriminator
work 7.55 s with one backbone pass per use, 5.42 s (1.39x) with the samples' backbone outputs reused across the
metrics, the reward and the discriminator step (:meth:`DinoDiscriminator.hidden_states`); ``discriminator/step:
103%``. Here the 16 references (two draws) outnumber the 8 samples; with the real config's 16 x 16 samples per
iteration the samples dominate and reuse saves more. The generator is a 2-layer MM-DiT, so the ratio to the GRPO
step says little about SD3.5-M with DINOv2-B at 518 px; run it on the target GPU with real sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from bench_grpo import SMOKE as BENCH_GRPO_SMOKE  # noqa: E402
from bench_grpo import build, sync  # noqa: E402

from mmreward.alignment.advantages import group_advantages  # noqa: E402
from mmreward.alignment.adversarial import AdversarialReward, DiscriminatorTrainer  # noqa: E402
from mmreward.alignment.clipped_update import grpo_update  # noqa: E402
from mmreward.alignment.discriminators import DinoDiscriminator, DiscriminatorConfig  # noqa: E402
from mmreward.alignment.group_rewards import PointwiseGroupReward, compute_rewards  # noqa: E402
from mmreward.alignment.group_rollout import RolloutConfig, rollout_groups  # noqa: E402
from mmreward.alignment.layout import GroupLayout  # noqa: E402
from mmreward.alignment.references import draw  # noqa: E402
from mmreward.alignment.update_schedule import GRPOLossConfig  # noqa: E402
from mmreward.flow.rollout import seeded  # noqa: E402
from mmreward.rewards.mix import RewardMix  # noqa: E402
from mmreward.train.guards import NonFiniteGuard  # noqa: E402
from mmreward.train.lora import LoraReference  # noqa: E402
from mmreward.train.policy import PolicyOptimizer  # noqa: E402


def dinov2(directory: Path, args) -> Path:
    """A random Dinov2Model of the requested shape, saved like a hub checkpoint."""
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=args.dino_width,
        num_hidden_layers=args.dino_layers,
        num_attention_heads=args.dino_width // 64,
        intermediate_size=4 * args.dino_width,
        patch_size=14,
        image_size=args.dino_size,
    )
    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(Dinov2Model(config).state_dict(), str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(directory)
    return directory


# ``--smoke``: every call above at the smallest sizes (a group of 2, two 14-px patches a side, 2 references), once.
SMOKE = {
    **BENCH_GRPO_SMOKE,
    "dino_width": 64,
    "dino_layers": 1,
    "dino_size": 28,
    "dino_patches": 4,
    "references": 2,
    "disc_steps": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--latent-size", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="SDE steps of a rollout")
    parser.add_argument("--trained", type=int, default=3, help="trained steps per sample")
    parser.add_argument("--dino-width", type=int, default=384)
    parser.add_argument("--dino-layers", type=int, default=12)
    parser.add_argument("--dino-size", type=int, default=224)
    parser.add_argument("--dino-patches", type=int, default=64, help="random patch tokens the head sees per image")
    parser.add_argument("--references", type=int, default=16, help="reference images per discriminator step")
    parser.add_argument("--disc-steps", type=int, default=1, help="discriminator steps per iteration")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="smallest sizes, one repeat (the test suite's run)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    accelerator = Accelerator(
        cpu=device.type == "cpu", mixed_precision={"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[args.dtype]
    )
    model = build(args, device)
    prompts = [f"a photo of object number {i}" for i in range(args.prompts)]
    model.encode_prompts([*prompts, ""])
    layout = GroupLayout(args.prompts, args.group)
    rollout_cfg = RolloutConfig(
        prompts_per_step=args.prompts,
        group_size=args.group,
        num_steps=args.steps,
        guidance_scale=4.5,
        batch_size=layout.total,
    )
    loss_cfg = GRPOLossConfig(kl_beta=0.01, timestep_fraction=args.trained / args.steps)
    size = {"height": 2 * args.latent_size, "width": 2 * args.latent_size}
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    policy_optimizer = PolicyOptimizer(params, optimizer, scheduler, 1.0, NonFiniteGuard())
    reference = LoraReference(model.transformer)
    brightness = PointwiseGroupReward(RewardMix({"mmreward.rewards.brightness:BrightnessReward": 1.0}, device=device))

    with tempfile.TemporaryDirectory() as root:
        backbone = str(dinov2(Path(root) / "dinov2", args))
        cfg = DiscriminatorConfig(
            backbone=backbone,
            references_per_step=args.references,
            steps=args.disc_steps,
            num_patches=args.dino_patches,
            batch_size=layout.total,
        )
        discriminator = DinoDiscriminator(cfg, device=device)
    trainer = DiscriminatorTrainer(discriminator, cfg, accelerator)
    adversarial = AdversarialReward(discriminator)
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(
        0, 256, (4 * args.references, 3, size["height"], size["width"]), generator=g, dtype=torch.uint8
    )  # the reference set; each use draws from it, as the program

    def grpo_step(iteration: int):
        batch = rollout_groups(
            model, prompts, layout, rollout_cfg, **size, iteration=iteration, seed=0, accelerator=accelerator
        )
        rewards = compute_rewards(brightness, batch, layout, accelerator)
        groups = torch.arange(layout.prompts).repeat_interleave(layout.group_size)
        adv = group_advantages(rewards.scores, groups)
        grpo_update(
            model,
            batch,
            adv.values,
            adv.keep,
            transformer=model.transformer,
            reference=reference,
            optimizer=policy_optimizer,
            loss=loss_cfg,
            micro_batch_size=layout.total,
            accelerator=accelerator,
            seed=(0, iteration),
        )
        return batch

    def discriminator_work(batch, iteration: int, reuse: bool) -> None:
        """align/adv_grpo.py's additions to an iteration: score samples and references, the reward call, D steps.
        ``reuse=False`` forgets the backbone outputs before every call (the baseline: one backbone pass per use)."""
        forget = (lambda: None) if reuse else (lambda: discriminator._recent.clear())
        discriminator._recent.clear()  # a new iteration: nothing of the previous run is reused
        local_prompts = [prompts[int(gr)] for gr in batch.group]
        patches = seeded(0, "patches", iteration)
        forget()
        discriminator.score(local_prompts[: args.references], pool[draw(args.references, len(pool), g)], patches)
        forget()
        discriminator.score(local_prompts, batch.media, patches)
        forget()
        compute_rewards(adversarial, batch, layout, accelerator)
        for k in range(args.disc_steps):
            forget()
            trainer.step(
                pool[draw(args.references, len(pool), g)], batch.media, local_prompts, seeded(0, "d", iteration, k)
            )

    best = {"grpo": float("inf"), "disc": float("inf"), "disc_baseline": float("inf")}
    for r in range(args.repeats + 1):  # round 0 warms up
        start = sync(device)
        batch = grpo_step(r)
        middle = sync(device)
        discriminator_work(batch, r, reuse=False)
        baseline_end = sync(device)
        discriminator_work(batch, r, reuse=True)
        end = sync(device)
        if r:
            best["grpo"] = min(best["grpo"], middle - start)
            best["disc_baseline"] = min(best["disc_baseline"], baseline_end - middle)
            best["disc"] = min(best["disc"], end - baseline_end)
    what = f"{args.references} refs, {layout.total} samples, {args.disc_steps} steps"
    print(f"GRPO step (rollout, reward, advantages, update): {best['grpo']:.3f} s")
    print(f"discriminator work, one backbone pass per use ({what}): {best['disc_baseline']:.3f} s")
    print(
        f"discriminator work, backbone outputs reused ({what}): {best['disc']:.3f} s "
        f"({best['disc_baseline'] / best['disc']:.2f}x)"
    )
    print(f"discriminator/step: {100 * best['disc'] / best['grpo']:.0f}%")


if __name__ == "__main__":
    main()
