"""Per-process memory of full fine-tuning under FSDP2 against DDP: bytes of parameters + gradients + AdamW state
that each of 2 processes holds after one optimizer step of a transformer, sharded the way the training programs
shard it (:func:`mmreward.train.sharding.shard_model`: ``fully_shard`` per block, then the root).

    python benchmarks/bench_sharding.py                 # SD3 MM-DiT, 8 layers, 8 heads x 64 (~74M parameters)
    python benchmarks/bench_sharding.py --layers 4 --heads 4
    python benchmarks/bench_sharding.py --smoke         # 2 layers, 2 heads x 16: checks that it runs

Two gloo processes on the CPU (the counts are the same on GPUs: they are tensor sizes, not allocator figures).
Each run takes one AdamW step on random inputs, then counts the bytes of the tensors the process holds: under DDP
the whole parameters, their gradients and both Adam moments; under FSDP2 each process's local shard of each
(``DTensor.to_local()``; FSDP2 pads dim 0 to a multiple of the process count, so shards may differ by a row).
Activations and communication buffers are not counted: they depend on the batch, not on the sharding of the
training state. The goal is ``<= 0.55x`` of DDP per process with 2 processes (ideal 0.5x; the root's small
tensors are sharded too, so the excess is the padding only).

Measured on the shared 2-core CPU machine, default size (~74M parameters; bytes are exact, not timed), per process:
DDP 282.0 MiB parameters + 282.0 gradients + 564.1 AdamW = 1128.1 MiB; FSDP2 141.0 + 141.0 + 282.0 = 564.1 MiB;
``fsdp2 / ddp per process (largest process): 0.500x``. ZeRO-3 is not measured here (DeepSpeed needs a GPU).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _transformer(layers: int, heads: int, head_dim: int):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    width = heads * head_dim
    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=width,
        caption_projection_dim=width,
        pooled_projection_dim=width,
        out_channels=4,
        pos_embed_max_size=16,
    )


def _local_bytes(tensor: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def _step_and_count(mode: str, layers: int, heads: int, head_dim: int) -> dict[str, int]:
    from torch.nn.parallel import DistributedDataParallel

    from mmreward.train.sharding import shard_model

    module = _transformer(layers, heads, head_dim)
    if mode == "fsdp2":
        shard_model(module)
        model = module
    else:
        model = DistributedDataParallel(module)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    width = heads * head_dim
    generator = torch.Generator().manual_seed(dist.get_rank())
    out = model(
        hidden_states=torch.randn(2, 4, 16, 16, generator=generator),
        encoder_hidden_states=torch.randn(2, 8, width, generator=generator),
        pooled_projections=torch.randn(2, width, generator=generator),
        timestep=torch.tensor([500.0, 500.0]),
    ).sample
    out.square().mean().backward()
    optimizer.step()
    params = list(module.parameters())
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {
        "parameters": sum(_local_bytes(p) for p in params),
        "gradients": sum(_local_bytes(p.grad) for p in params if p.grad is not None),
        "optimizer": sum(_local_bytes(t) for t in state),
    }


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, results: dict) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for mode in ("ddp", "fsdp2"):
            counts = _step_and_count(mode, args.layers, args.heads, args.head_dim)
            results[(mode, rank)] = counts
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="2 layers, 2 heads x 16: checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.layers, args.heads, args.head_dim = 2, 2, 16
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(world, _free_port(), args, results), nprocs=world, join=True)
        results = dict(results)
    mib = 2**20
    totals = {}
    print(f"full fine-tuning, SD3 MM-DiT {args.layers} layers x {args.heads} heads x {args.head_dim}, 2 processes")
    print(f"{'mode':6s} {'rank':>4s} {'params MiB':>11s} {'grads MiB':>10s} {'AdamW MiB':>10s} {'total MiB':>10s}")
    for mode in ("ddp", "fsdp2"):
        for rank in range(world):
            c = results[(mode, rank)]
            total = sum(c.values())
            totals[mode] = max(totals.get(mode, 0), total)
            row = [c["parameters"] / mib, c["gradients"] / mib, c["optimizer"] / mib, total / mib]
            print(f"{mode:6s} {rank:4d} " + " ".join(f"{v:10.2f}" for v in row))
    ratio = totals["fsdp2"] / totals["ddp"]
    print(f"fsdp2 / ddp per process (largest process): {ratio:.3f}x (goal <= 0.55x)")


if __name__ == "__main__":
    main()
