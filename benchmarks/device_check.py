"""What the CPU test suite cannot check, in one run on a GPU machine (under 5 minutes on one H100):

    python benchmarks/device_check.py                  # every check; exit status 1 if any fails
    python benchmarks/device_check.py --only bf16 fsdp2

1. ``xformers``: memory-efficient attention (``model.attention: xformers``) against SDPA on a real-size SD3.5
   attention layer (24 heads x 64, 1024 image + 333 text tokens, bf16); skipped when xformers is not installed.
2. ``bf16``: one real-size SD3.5-Medium MM-DiT block (width 1536) under bf16 autocast against fp32: relative error
   of the output and of the gradient of its input.
3. ``fsdp2``: full fine-tuning steps of a 4-block real-width SD3 transformer sharded by the programs' own
   :func:`mmreward.train.sharding.shard_model`, launched through the shipped ``configs/accelerate/fsdp.yaml``
   (accelerate then reports ``DistributedType.FSDP`` and the programs shard with FSDP2): loss, peak memory.
4. ``zero2`` / ``zero3``: the same model prepared by accelerate's DeepSpeed engine through the shipped
   ``deepspeed_zero2.yaml`` / ``deepspeed_zero3.yaml`` (the configs work as written; the training programs
   themselves refuse DeepSpeed and shard with FSDP2); skipped when deepspeed is not installed.
5. ``program``: ``align/pref_grpo.py`` on ``configs/tiny/pref_grpo_fsdp.yaml`` through ``fsdp.yaml`` in bf16.

Launched checks run with as many processes as there are GPUs (``--num_processes`` overrides the configs' 8), so
one GPU runs them too (FSDP2 over one process still goes through DTensors and the sharded checkpoint). Without a
CUDA GPU the script says so and exits with status 2 before anything runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHECKS = ("xformers", "bf16", "fsdp2", "zero2", "zero3", "program")
ACCELERATE_CONFIGS = {"fsdp2": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml", "zero3": "deepspeed_zero3.yaml"}
WIDTH, HEADS, HEAD_DIM = 1536, 24, 64  # SD3.5 Medium's MM-DiT
TIMEOUT_S = 150  # per launched check


def require_gpu() -> None:
    """Exit with status 2 and one line when no CUDA GPU is visible: every check needs one."""
    import torch

    if not torch.cuda.is_available():
        print("device_check: no CUDA GPU is visible; run this on a GPU machine (the CPU suite covers the rest)")
        raise SystemExit(2)


def _relative(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def check_xformers() -> str:
    import importlib.util

    import torch
    from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0, XFormersJointAttnProcessor

    if importlib.util.find_spec("xformers") is None:
        return "skipped: xformers is not installed (pip install xformers)"
    torch.manual_seed(0)
    attn = Attention(
        query_dim=WIDTH,
        cross_attention_dim=None,
        added_kv_proj_dim=WIDTH,
        dim_head=HEAD_DIM,
        heads=HEADS,
        out_dim=WIDTH,
        context_pre_only=False,
        bias=True,
        processor=JointAttnProcessor2_0(),
    ).to("cuda", torch.bfloat16)
    image = torch.randn(2, 1024, WIDTH, device="cuda", dtype=torch.bfloat16)
    text = torch.randn(2, 333, WIDTH, device="cuda", dtype=torch.bfloat16)
    sdpa = attn(image, encoder_hidden_states=text)
    attn.set_processor(XFormersJointAttnProcessor())
    xformers = attn(image, encoder_hidden_states=text)
    error = max(_relative(x, s) for x, s in zip(xformers, sdpa, strict=True))
    if error > 2e-2:
        raise AssertionError(f"xformers differs from SDPA by {error:.2e} (relative)")
    return f"xformers vs SDPA relative error {error:.2e}"


def _block_inputs(torch, dtype):
    generator = torch.Generator("cuda").manual_seed(0)
    image = torch.randn(2, 1024, WIDTH, device="cuda", dtype=dtype, generator=generator, requires_grad=True)
    text = torch.randn(2, 333, WIDTH, device="cuda", dtype=dtype, generator=generator)
    temb = torch.randn(2, WIDTH, device="cuda", dtype=dtype, generator=generator)
    return image, text, temb


def check_bf16() -> str:
    import torch
    from diffusers.models.attention import JointTransformerBlock

    torch.manual_seed(0)
    block = JointTransformerBlock(dim=WIDTH, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM).to("cuda")
    outputs, grads = [], []
    for autocast in (False, True):
        image, text, temb = _block_inputs(torch, torch.float32)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            _, out = block(image, text, temb)
        out.float().square().mean().backward()
        outputs.append(out.detach())
        grads.append(image.grad)
    out_error, grad_error = _relative(outputs[1], outputs[0]), _relative(grads[1], grads[0])
    if out_error > 5e-2 or grad_error > 1e-1:
        raise AssertionError(f"bf16 block output error {out_error:.2e}, input-gradient error {grad_error:.2e}")
    return f"bf16 vs fp32: output {out_error:.2e}, input gradient {grad_error:.2e} (relative)"


def _worker(engine: str, result_file: str) -> None:
    """One launched process: 3 full fine-tuning steps of a 4-block real-width SD3 transformer, sharded by the
    programs' FSDP2 code or prepared by accelerate's DeepSpeed engine; the main process writes the result."""
    import torch
    from accelerate import Accelerator
    from diffusers import SD3Transformer2DModel

    from mmreward.train.sharding import clip_grad_norm, resolve_sharding, shard_model

    accelerator = Accelerator()
    torch.manual_seed(0)
    model = SD3Transformer2DModel(
        sample_size=64,
        patch_size=2,
        in_channels=16,
        num_layers=4,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS,
        joint_attention_dim=4096,
        caption_projection_dim=WIDTH,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=96,
    ).to(accelerator.device)
    model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    if engine == "fsdp2":
        if resolve_sharding("ddp", accelerator) != "fsdp2":
            raise AssertionError(f"fsdp.yaml gave {accelerator.distributed_type}, not FSDP")
        shard_model(model, mixed_precision=accelerator.mixed_precision)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    else:
        from accelerate.state import AcceleratorState

        # No data loader is prepared here, so DeepSpeed's batch size per GPU is given directly.
        AcceleratorState().deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 2
        model, optimizer = accelerator.prepare(model, optimizer)
    # DeepSpeed casts the model to bf16 itself and runs no autocast: the inputs take the parameters' dtype.
    dtype = next(model.parameters()).dtype
    torch.cuda.reset_peak_memory_stats()
    generator = torch.Generator(accelerator.device).manual_seed(accelerator.process_index)
    losses = []
    start = time.perf_counter()
    for _ in range(3):
        kwargs = {"device": accelerator.device, "generator": generator, "dtype": dtype}
        with accelerator.autocast():
            out = model(
                hidden_states=torch.randn(2, 16, 64, 64, **kwargs),
                encoder_hidden_states=torch.randn(2, 333, 4096, **kwargs),
                pooled_projections=torch.randn(2, 2048, **kwargs),
                timestep=torch.tensor([500.0, 500.0], device=accelerator.device, dtype=dtype),
            ).sample
        loss = out.float().square().mean()
        accelerator.backward(loss)
        if engine == "fsdp2":
            clip_grad_norm(list(model.parameters()), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    torch.cuda.synchronize()
    result = {
        "losses": losses,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "seconds": time.perf_counter() - start,
        "processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
    }
    if accelerator.is_main_process:
        Path(result_file).write_text(json.dumps(result))
    accelerator.end_training()


def _launch(config: str, processes: int, arguments: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs" / "accelerate" / config),
        "--num_processes",
        str(processes),
        *arguments,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def check_engine(engine: str, processes: int) -> str:
    import importlib.util

    if engine != "fsdp2" and importlib.util.find_spec("deepspeed") is None:
        return "skipped: deepspeed is not installed (pip install deepspeed)"
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        args = [str(Path(__file__).resolve()), "--worker", engine, "--result", str(result_file)]
        done = _launch(ACCELERATE_CONFIGS[engine], processes, args)
        if done.returncode != 0:
            raise AssertionError(f"{engine} launch failed:\n{done.stderr[-2000:]}")
        result = json.loads(result_file.read_text())
    losses = result["losses"]
    if not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"{engine}: non-finite losses {losses}")
    return (
        f"{engine} ({result['distributed_type']}, {result['processes']} processes): losses "
        + ", ".join(f"{v:.4f}" for v in losses)
        + f"; peak {result['peak_gib']:.2f} GiB per GPU; {result['seconds']:.1f} s for 3 steps"
    )


def check_program(processes: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "align/pref_grpo.py",
            "--config",
            "configs/tiny/pref_grpo_fsdp.yaml",
            "--output_dir",
            tmp,
            "--train.mixed_precision",
            "bf16",
            "--rollout.prompts_per_step",
            str(processes),
            "--rollout.batch_size",
            "4",
            "--train.micro_batch_size",
            "4",
        ]
        done = _launch("fsdp.yaml", processes, args)
        if done.returncode != 0:
            raise AssertionError(f"pref_grpo under fsdp.yaml failed:\n{done.stderr[-2000:]}")
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        exported = Path(tmp) / "transformer" / "config.json"
        if not exported.is_file():
            raise AssertionError("pref_grpo under fsdp.yaml exported no transformer")
    grad_norms = ", ".join(f"{r['grad_norm']:.3g}" for r in rows)
    return f"pref_grpo (fsdp.yaml, bf16): {len(rows)} steps, grad norms {grad_norms}, transformer exported"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=CHECKS, help="run these checks only")
    parser.add_argument("--worker", choices=sorted(ACCELERATE_CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    require_gpu()
    if args.worker:
        _worker(args.worker, args.result)
        return
    import torch

    processes = torch.cuda.device_count()
    print(f"device_check on {processes} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    checks = {
        "xformers": check_xformers,
        "bf16": check_bf16,
        "fsdp2": lambda: check_engine("fsdp2", processes),
        "zero2": lambda: check_engine("zero2", processes),
        "zero3": lambda: check_engine("zero3", processes),
        "program": lambda: check_program(processes),
    }
    failed = []
    for name in args.only or CHECKS:
        start = time.perf_counter()
        try:
            message = checks[name]()
            status = "ok"
        except Exception as err:  # noqa: BLE001 - every check reports, then the exit status says whether all passed
            message, status = f"{type(err).__name__}: {err}", "FAILED"
            failed.append(name)
        print(f"[{status}] {name} ({time.perf_counter() - start:.0f} s): {message}", flush=True)
    print(f"device_check: {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
