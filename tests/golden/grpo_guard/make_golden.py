"""Regenerate the GRPO-Guard golden data with the authors' code: the RatioNorm ratio, the reweighted clipped policy
loss and its gradient with respect to the velocity, for three samples at three steps of a 10-step SD3.5 schedule.

Two references compute RatioNorm, each inline in its training loop:

- GRPO-Guard in the Flow-GRPO repository (yifan123/flow_grpo, commit 9745241cf1101407e9b518dd4f10498092150522, pull
  request 175): ``scripts/train_sd3_GRPO_Guard.py`` with ``config.rationorm``, on the SDE step of
  ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`` (``return_sqrt_dt=True``);
- Pref-GRPO (CodeGoat24/Pref-GRPO, commit 3e787f6dd5a3051b40d61f07e9578468ac26130a): ``fastvideo/train_flux.py``
  ``--rationorm``, on ``flow_grpo_step(return_stats=True)`` of ``fastvideo/grpo/steps.py``.

Run with any python that has torch and diffusers, pointing at checkouts of both::

    FLOW_GRPO_DIR=/path/to/flow_grpo PREF_GRPO_DIR=/path/to/Pref-GRPO python tests/golden/grpo_guard/make_golden.py

The step functions are imported from the pinned files (sha256 checked). The loss lines are not functions: this
script reads the training script with ``ast``, takes the statements of the training loop from the advantage clamp
through the ``rationorm`` division of the policy loss, and executes them as published on the tensors of
:func:`guard_inputs` (the test builds the same inputs by importing that function).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
FLOW_GRPO_COMMIT = "9745241cf1101407e9b518dd4f10498092150522"
PREF_GRPO_COMMIT = "3e787f6dd5a3051b40d61f07e9578468ac26130a"
FILES = {
    "flow_grpo_sde": (
        "FLOW_GRPO_DIR",
        "flow_grpo/diffusers_patch/sd3_sde_with_logprob.py",
        "4ba34220d7f856b4f6aae8f27f7af3ccd3591df597dd53b5dcb5237066e25075",
    ),
    "flow_grpo_train": (
        "FLOW_GRPO_DIR",
        "scripts/train_sd3_GRPO_Guard.py",
        "0c8526c5f11d3df987eda54eb0edbf123028e9fe020aa8556bfbe0093784c6bd",
    ),
    "pref_grpo_steps": (
        "PREF_GRPO_DIR",
        "fastvideo/grpo/steps.py",
        "dba9345baa83278380aadd2b6525261c7a3a4accb95e0df79d4738c1013e11ab",
    ),
    "pref_grpo_train": (
        "PREF_GRPO_DIR",
        "fastvideo/train_flux.py",
        "d4d196b087ca2bffb20f8b559e92bc009644a93368a19147e46e0d0f89ef5b7c",
    ),
}
NUM_STEPS, SHIFT, NOISE_LEVEL = 10, 3.0, 0.7  # Flow-GRPO's SD3.5 schedule and noise level
STEPS = (0, 4, 8)  # the first step (sigma 1, where the SDE's denominator uses the next sigma), a middle and a late one
ADVANTAGES = (1.5, -0.7, 0.4)
CLIP_RANGE = 4e-4  # wide enough that some samples stay inside it and some are clipped
ADV_CLIP_MAX = 5.0


def guard_inputs() -> dict[str, torch.Tensor]:
    """The fixed tensors: ``sigmas`` (11,), ``latents`` (3 steps, 3, 4, 8, 8), the rollout's velocity ``v_old`` and
    the current one ``v_new`` (the same shape; the current differs by 0.02, 0.1 and 0.5 times a fixed draw per sample),
    and the standard noise ``noise`` of each rollout step.

    The test builds the same inputs with this function (imported from this file), so nothing here may change.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    scheduler.set_timesteps(NUM_STEPS)
    g = torch.Generator().manual_seed(2510)
    shape = (len(STEPS), 3, 4, 8, 8)
    latents = torch.randn(shape, generator=g)
    v_old = torch.randn(shape, generator=g)
    scale = torch.tensor([0.02, 0.1, 0.5]).reshape(1, 3, 1, 1, 1)
    v_new = v_old + scale * torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    return {"sigmas": scheduler.sigmas.float(), "latents": latents, "v_old": v_old, "v_new": v_new, "noise": noise}


def _pinned(name: str) -> Path:
    variable, path, sha256 = FILES[name]
    source = Path(os.environ.get(variable, "")).expanduser() / path
    if not source.is_file():
        sys.exit(f"set {variable} to a checkout that has {path} (see this script's docstring for the commits)")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != sha256:
        sys.exit(f"{source} has sha256 {digest}, not the pinned {sha256}: check out the pinned commit")
    return source


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, _pinned(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loss_block(name: str, rationorm_test: str) -> ast.Module:
    """The training loop's statements from ``advantages = torch.clamp(...)`` through the second ``if <rationorm>:``
    (the one that divides the policy loss), compiled as a module."""
    tree = ast.parse(_pinned(name).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        starts = [
            k
            for k, stmt in enumerate(body)
            if isinstance(stmt, ast.Assign)
            and ast.unparse(stmt.targets[0]) == "advantages"
            and "clamp" in ast.unparse(stmt.value)
        ]
        ifs = [
            k for k, stmt in enumerate(body) if isinstance(stmt, ast.If) and ast.unparse(stmt.test) == rationorm_test
        ]
        if starts and len(ifs) >= 2 and starts[0] < ifs[0] < ifs[1]:
            return ast.fix_missing_locations(ast.Module(body=body[starts[0] : ifs[1] + 1], type_ignores=[]))
    sys.exit(f"{name}: no training-loop block from the advantage clamp to the second `if {rationorm_test}:`")


def flow_grpo_case(inputs: dict[str, torch.Tensor], k: int, step: int) -> dict:
    """GRPO-Guard (Flow-GRPO repository): rollout step, then the training step's RatioNorm loss."""
    sde = _module("flow_grpo_sde")
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    scheduler.set_timesteps(NUM_STEPS)
    timesteps = scheduler.timesteps[step].repeat(3)
    x = inputs["latents"][k]
    # the rollout: its drawn next latents are mean + std * noise (the reference draws the noise from a generator;
    # the fixed noise is passed by building prev_sample from the rollout's own mean)
    _, _, old_mean, std_dev_t = sde.sde_step_with_logprob(
        scheduler, inputs["v_old"][k], timesteps, x, noise_level=NOISE_LEVEL, prev_sample=x
    )
    dt = inputs["sigmas"][step + 1] - inputs["sigmas"][step]
    next_latents = old_mean + std_dev_t * torch.sqrt(-dt) * inputs["noise"][k]
    _, old_log_prob, old_mean, _ = sde.sde_step_with_logprob(
        scheduler, inputs["v_old"][k], timesteps, x, noise_level=NOISE_LEVEL, prev_sample=next_latents
    )
    v_new = inputs["v_new"][k].clone().requires_grad_(True)
    _, log_prob, prev_sample_mean, std_dev_t, sqrt_dt = sde.sde_step_with_logprob(
        scheduler, v_new, timesteps, x, noise_level=NOISE_LEVEL, prev_sample=next_latents, return_sqrt_dt=True
    )
    namespace = {
        "torch": torch,
        "config": SimpleNamespace(
            rationorm=True, train=SimpleNamespace(clip_range=CLIP_RANGE, adv_clip_max=ADV_CLIP_MAX)
        ),
        "sample": {
            "advantages": torch.tensor(ADVANTAGES)[:, None],
            "log_probs": old_log_prob[:, None],
            "prev_sample_mean": old_mean[:, None],
        },
        "j": 0,
        "log_prob": log_prob,
        "prev_sample_mean": prev_sample_mean,
        "std_dev_t": std_dev_t,
        "sqrt_dt": sqrt_dt,
    }
    exec(compile(_loss_block("flow_grpo_train", "config.rationorm"), "train_sd3_GRPO_Guard.py", "exec"), namespace)
    (grad,) = torch.autograd.grad(namespace["policy_loss"], v_new)
    return {
        "step": step,
        "next_latents": next_latents.tolist(),
        "ratio": namespace["ratio"].tolist(),
        "policy_loss": float(namespace["policy_loss"]),
        "grad": grad.tolist(),
    }


def pref_grpo_case(inputs: dict[str, torch.Tensor], k: int, step: int, next_latents: torch.Tensor) -> dict:
    """Pref-GRPO's --rationorm on its own flow step, with the same rollout (next latents)."""
    steps = _module("pref_grpo_steps")
    sigmas, x = inputs["sigmas"], inputs["latents"][k]
    _, _, old_log_prob, old_mean, _, _ = steps.flow_grpo_step(
        inputs["v_old"][k], x, NOISE_LEVEL, sigmas, step, prev_sample=next_latents, return_stats=True
    )
    v_new = inputs["v_new"][k].clone().requires_grad_(True)
    _, _, new_log_probs, prev_sample_mean, noise_scale, dt = steps.flow_grpo_step(
        v_new, x, NOISE_LEVEL, sigmas, step, prev_sample=next_latents, return_stats=True
    )
    namespace = {
        "torch": torch,
        "args": SimpleNamespace(rationorm=True),
        "sample": {
            "advantages": torch.tensor(ADVANTAGES),
            "log_probs": old_log_prob[:, None],
            "prev_sample_mean": old_mean[:, None],
        },
        "_": 0,
        "clip_range": CLIP_RANGE,
        "adv_clip_max": ADV_CLIP_MAX,
        "new_log_probs": new_log_probs,
        "prev_sample_mean": prev_sample_mean,
        "noise_scale": noise_scale,
        "dt": dt,
    }
    block = _loss_block("pref_grpo_train", "getattr(args, 'rationorm', False)")
    exec(compile(block, "train_flux.py", "exec"), namespace)
    (grad,) = torch.autograd.grad(namespace["policy_loss"], v_new)
    return {
        "step": step,
        "ratio": namespace["ratio"].tolist(),
        "policy_loss": float(namespace["policy_loss"]),
        "grad": grad.tolist(),
    }


def main() -> None:
    inputs = guard_inputs()
    flow_cases, pref_cases = [], []
    for k, step in enumerate(STEPS):
        flow = flow_grpo_case(inputs, k, step)
        flow_cases.append(flow)
        pref_cases.append(pref_grpo_case(inputs, k, step, torch.tensor(flow["next_latents"])))
    golden = {
        "references": {
            "grpo_guard": f"yifan123/flow_grpo@{FLOW_GRPO_COMMIT}:{FILES['flow_grpo_train'][1]} (config.rationorm)",
            "pref_grpo": f"CodeGoat24/Pref-GRPO@{PREF_GRPO_COMMIT}:{FILES['pref_grpo_train'][1]} (--rationorm)",
        },
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
        "settings": {
            "num_steps": NUM_STEPS,
            "shift": SHIFT,
            "noise_level": NOISE_LEVEL,
            "clip_range": CLIP_RANGE,
            "advantages": list(ADVANTAGES),
        },
        "grpo_guard": flow_cases,
        "pref_grpo": pref_cases,
    }
    (HERE / "golden.json").write_text(json.dumps(golden) + "\n")
    for name, cases in (("grpo_guard", flow_cases), ("pref_grpo", pref_cases)):
        for case in cases:
            print(
                name, case["step"], "ratio - 1:", [f"{r - 1:.3e}" for r in case["ratio"]], "loss:", case["policy_loss"]
            )


if __name__ == "__main__":
    main()
