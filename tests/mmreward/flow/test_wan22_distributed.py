"""Wan2.2's experts under FSDP2 with 2 real CPU processes (gloo) whose batches reach different experts: process 0
holds only high-noise samples, process 1 only low-noise ones (Flow-DPO draws noise levels per sample). Each expert's
blocks gather their shards collectively, so both processes must call both experts or they wait on each other
forever; the gradients then reach both experts' LoRAs in both processes. Kept in a module with light imports:
every spawned process imports it. (About 15 s: two processes start, as the other distributed tests; the only check
of the collective-order rule of :class:`mmreward.flow.families.wan.WanExperts`.)"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    from mmreward.flow.families.wan import WanExperts
    from mmreward.flow.models import DEFAULT_LORA_TARGETS
    from mmreward.tiny_models import _tiny_wan_transformer
    from mmreward.train.lora import add_lora, trainable_parameters
    from mmreward.train.sharding import shard_model

    torch.manual_seed(0)  # the same experts in both processes
    experts = WanExperts(_tiny_wan_transformer(channels=4), _tiny_wan_transformer(channels=4), 875.0)
    add_lora(experts, rank=2, alpha=2, target_modules=DEFAULT_LORA_TARGETS)
    shard_model(experts)
    experts.lockstep = True  # what load_policy sets for sharded experts
    generator = torch.Generator().manual_seed(rank)
    latents = torch.randn(2, 4, 2, 4, 4, generator=generator)  # (B, C, t, h, w)
    text = torch.randn(2, 8, 32, generator=generator)  # (B, L, text_dim)
    timestep = torch.full((2,), 950.0 if rank == 0 else 300.0)  # boundary 875: one expert per process
    prediction = experts(hidden_states=latents, timestep=timestep, encoder_hidden_states=text)[0]
    prediction.pow(2).mean().backward()
    reached = {"transformer": False, "transformer_2": False}
    for name, param in trainable_parameters(experts).items():
        grad = param.grad.to_local() if hasattr(param.grad, "to_local") else param.grad
        reached[name.split(".")[0]] |= bool(grad.abs().sum() > 0)
    Path(out, f"{rank}.json").write_text(json.dumps(reached))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_sharded_experts_train_when_processes_hold_different_noise_levels(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    processes = mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240  # a deadlock (processes waiting on different experts) must fail, not hang
    while not processes.join(timeout=2):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail("the processes waited on each other: both must call the experts any of them needs")
    for rank in range(2):
        assert json.loads((tmp_path / f"{rank}.json").read_text()) == {"transformer": True, "transformer_2": True}
