"""Golden numbers for DiffusionNFT from the reference code itself (NVlabs/DiffusionNFT, commit
24af5554898d85e93efa492f42b5e9cdf4156e9b; golden.json records the sha256 of the two files read).

The reference's training step is inline in ``main()`` of ``scripts/train_nft_sd3.py``; this script reads that file,
cuts out, unchanged, (1) the loss block (from ``loss_terms = {}`` to ``loss_terms["total_loss"] = ...``), (2) the
old-policy update after an epoch (``decay = return_decay(...)`` and the ``copy_`` loop) and (3) ``return_decay``,
and runs them with ``exec`` on fixed inputs; advantages come from the reference's ``PerPromptStatTracker``
(``flow_grpo/stat_tracking.py``, imported as is) with ``global_std=True`` as ``config/base.py`` sets it.
Inputs are drawn here from a seeded generator and saved with the outputs, so the test needs no reference code.

The step case runs the reference's whole per-level training block (from ``x0 = train_sample_batch[...]`` to the
backward) on a tiny random SD3 transformer (mmreward's, saved to ``transformer.safetensors``) wrapped the
reference's way (peft ``get_peft_model`` with adapters "default" and "old", its target modules), at 2 noise
levels per sample with the noise its ``torch.randn_like`` draws; it saves the inputs, the adapters and the LoRA
gradients to ``step.safetensors`` and the per-level losses to ``golden.json``.

    NFT_DIR=/path/to/DiffusionNFT /work/venvs/nft-ref/bin/python tests/golden/diffusion_nft/make_golden.py
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import save_file

NFT_DIR = Path(os.environ["NFT_DIR"])
sys.path.insert(0, str(NFT_DIR))
from flow_grpo.stat_tracking import PerPromptStatTracker  # noqa: E402

COMMIT = "24af5554898d85e93efa492f42b5e9cdf4156e9b"
FILES = ("scripts/train_nft_sd3.py", "flow_grpo/stat_tracking.py")
SCRIPT = (NFT_DIR / FILES[0]).read_text()
LINES = SCRIPT.splitlines()


def cut(first: str, last: str) -> str:
    """The reference's lines from the one containing ``first`` to the next containing ``last``, dedented."""
    start = next(i for i, line in enumerate(LINES) if first in line)
    end = next(i for i in range(start, len(LINES)) if last in LINES[i])
    return textwrap.dedent("\n".join(LINES[start : end + 1]))


def function(name: str) -> str:
    node = next(n for n in ast.parse(SCRIPT).body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(SCRIPT, node)


LOSS_BLOCK = cut("loss_terms = {}", 'loss_terms["total_loss"] = loss.detach()')
OLD_UPDATE = cut("decay = return_decay(global_step, config.decay_type)", "tgt_param.data.copy_(")
namespace: dict = {"torch": torch}
exec(function("return_decay"), namespace)  # noqa: S102
return_decay = namespace["return_decay"]


def as_list(t: torch.Tensor) -> list:
    return t.detach().double().tolist()


def loss_case(g: torch.Generator, beta: float, kl_beta: float) -> dict:
    """One call of the loss block: 6 samples, latents (4, 4, 4), advantages beyond the clip on both sides."""
    b, shape = 6, (4, 4, 4)
    x0 = torch.randn(b, *shape, generator=g)
    noise = torch.randn(b, *shape, generator=g)
    t = torch.tensor([0.95, 0.8, 0.6, 0.4, 0.2, 0.05])
    t_expanded = t.view(-1, 1, 1, 1)
    xt = (1 - t_expanded) * x0 + t_expanded * noise  # the reference's noising line
    old = torch.randn(b, *shape, generator=g)
    forward = (old + 0.3 * torch.randn(b, *shape, generator=g)).requires_grad_(True)
    ref = old + 0.2 * torch.randn(b, *shape, generator=g)
    advantages = torch.tensor([-7.0, -2.5, -0.3, 0.0, 1.7, 6.0])
    config = SimpleNamespace(beta=beta, train=SimpleNamespace(adv_clip_max=5.0, adv_mode="all", beta=kl_beta))
    scope = {
        "torch": torch,
        "config": config,
        "train_sample_batch": {"advantages": advantages[:, None]},
        "j_idx": 0,
        "x0": x0,
        "xt": xt,
        "t_expanded": t_expanded,
        "forward_prediction": forward,
        "old_prediction": old,
        "ref_forward_prediction": ref,
    }
    exec(LOSS_BLOCK, scope)  # noqa: S102
    scope["loss"].backward()
    terms = scope["loss_terms"]
    return {
        "beta": beta,
        "kl_beta": kl_beta,
        "adv_clip_max": 5.0,
        "x0": as_list(x0),
        "noise": as_list(noise),
        "t": as_list(t),
        "v_old": as_list(old),
        "v_theta": as_list(forward),
        "v_ref": as_list(ref),
        "advantages": as_list(advantages),
        "r": as_list(scope["r"]),
        "policy_loss": float(terms["policy_loss"]),
        "kl_div_loss": float(terms["kl_div_loss"]),
        "total_loss": float(terms["total_loss"]),
        "grad_v_theta": as_list(forward.grad),
    }


def advantage_case(g: torch.Generator) -> dict:
    """The stat tracker on 3 prompts x 4 samples, interleaved (it groups by the prompt string)."""
    prompts = ["a cat", "a dog", "a fox"] * 4
    rewards = torch.rand(12, generator=g, dtype=torch.float64) * 2
    rewards[3] = rewards[0]  # a tie inside a group
    tracker = PerPromptStatTracker(global_std=True)
    advantages = tracker.update(prompts, rewards.numpy()[:, None].repeat(9, axis=1))  # (12, timesteps) as reference
    assert np.allclose(advantages, advantages[:, :1])
    return {"prompts": prompts, "rewards": as_list(rewards), "advantages": advantages[:, 0].tolist()}


def old_update_case(g: torch.Generator) -> dict:
    """The old adapter after an epoch at several optimizer-step counts and decay types."""
    cases = []
    for decay_type, global_step in ((1, 1), (1, 250), (1, 900), (2, 10), (2, 100), (2, 400), (0, 50)):
        live = [torch.randn(3, 2, generator=g), torch.randn(5, generator=g)]
        old = [torch.randn(3, 2, generator=g), torch.randn(5, generator=g)]
        before = [p.clone() for p in old]
        scope = {
            "torch": torch,
            "return_decay": return_decay,
            "global_step": global_step,
            "config": SimpleNamespace(decay_type=decay_type),
            "transformer_trainable_parameters": live,
            "old_transformer_trainable_parameters": old,
        }
        exec(OLD_UPDATE, scope)  # noqa: S102
        cases.append(
            {
                "decay_type": decay_type,
                "global_step": global_step,
                "decay": scope["decay"],
                "live": [as_list(p) for p in live],
                "old_before": [as_list(p) for p in before],
                "old_after": [as_list(p) for p in old],
            }
        )
    return cases


class _Wrapped:
    """What the reference's ``transformer_ddp`` offers the block: ``.module`` (the peft model) and the call."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, **kwargs):
        return self.module(**kwargs)


def step_case(g: torch.Generator) -> dict:
    """The reference's per-level block on a tiny SD3 transformer, 4 samples x 2 levels, one accumulation cycle."""
    from contextlib import nullcontext

    from peft import LoraConfig, get_peft_model

    from mmreward.tiny_models import tiny_pipeline

    here = Path(__file__).resolve().parent
    transformer = tiny_pipeline("sd3").transformer.float()
    save_file({k: v.contiguous() for k, v in transformer.state_dict().items()}, here / "transformer.safetensors")
    scope = {}
    exec(cut("target_modules = [", "]"), scope)  # noqa: S102  the reference's LoRA targets
    targets = scope["target_modules"]
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=targets)
    model = get_peft_model(transformer, lora)
    model.add_adapter("old", lora)
    model.set_adapter("default")
    tensors = {}
    with torch.no_grad():  # a mid-training state: both adapters non-zero, the old one near the trained one
        params = dict(model.named_parameters())
        for name, param in sorted(params.items()):
            if ".default." in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=g))
        for name, param in sorted(params.items()):
            if ".old." in name:
                param.copy_(params[name.replace(".old.", ".default.")] + 0.1 * torch.randn(param.shape, generator=g))
        for name, param in params.items():
            if ".default." in name or ".old." in name:
                tensors["lora/" + name.removeprefix("base_model.model.")] = param.detach().clone()
    cfg = transformer.config
    b, levels = 4, 2
    x0 = torch.randn(b, cfg.in_channels, 8, 8, generator=g)
    embeds = torch.randn(b, 6, cfg.joint_attention_dim, generator=g)
    pooled = torch.randn(b, cfg.pooled_projection_dim, generator=g)
    timesteps = torch.tensor([[750.0, 250.0], [500.0, 875.0], [125.0, 625.0], [937.5, 375.0]])
    advantages = torch.tensor([-6.0, -1.0, 0.5, 3.0])[:, None].repeat(1, levels)
    config = SimpleNamespace(
        beta=1.0, use_lora=True, train=SimpleNamespace(adv_clip_max=5.0, adv_mode="all", beta=1e-4)
    )
    scope = {
        "torch": torch,
        "config": config,
        "train_sample_batch": {"latents_clean": x0, "timesteps": timesteps, "advantages": advantages},
        "transformer_ddp": _Wrapped(model),
        "embeds": embeds,
        "pooled_embeds": pooled,
        "torch_autocast": lambda enabled, dtype: nullcontext(),
        "enable_amp": False,
        "mixed_precision_dtype": torch.float32,
        "scaler": None,
        "effective_grad_accum_steps": levels,  # gradient_accumulation_steps 1 x num_train_timesteps
        "current_accumulated_steps": 0,
    }
    block = cut('x0 = train_sample_batch["latents_clean"]', "current_accumulated_steps += 1")
    losses = []
    for j in range(levels):
        torch.manual_seed(1000 + j)
        tensors[f"noise/{j}"] = torch.randn_like(x0.float())  # what the block's randn_like draws after this seed
        torch.manual_seed(1000 + j)
        level = {**scope, "j_idx": j}
        exec(block, level)  # noqa: S102
        losses.append(float(level["loss_terms"]["total_loss"]))
    grads = {
        "grad/" + n.removeprefix("base_model.model."): p.grad.clone() for n, p in params.items() if p.grad is not None
    }
    assert grads and all(".default." in n for n in grads)
    tensors.update({"x0": x0, "embeds": embeds, "pooled": pooled, "timesteps": timesteps, **grads})
    save_file({k: v.contiguous() for k, v in tensors.items()}, here / "step.safetensors")
    return {"targets": targets, "advantages": advantages[:, 0].tolist(), "total_loss": losses, "kl_beta": 1e-4}


def main() -> None:
    g = torch.Generator().manual_seed(18)
    sha256 = {name: hashlib.sha256((NFT_DIR / name).read_bytes()).hexdigest() for name in FILES}
    golden = {
        "reference": {"repository": "NVlabs/DiffusionNFT", "commit": COMMIT, "sha256": sha256},
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "peft": importlib.metadata.version("peft"),
            "diffusers": importlib.metadata.version("diffusers"),
            "python": sys.version.split()[0],
        },
        "loss": [loss_case(g, 1.0, 1e-4), loss_case(g, 0.1, 1e-4), loss_case(g, 1.0, 0.0)],
        "advantages": advantage_case(g),
        "old_update": old_update_case(g),
        "step": step_case(g),
    }
    out = Path(__file__).with_name("golden.json")
    out.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
