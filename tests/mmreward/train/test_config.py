"""Shared training glue: typed configs, atomic checkpoints with exact resume, non-finite guard, tracking."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

from mmreward.errors import ConfigError
from mmreward.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mmreward.train.config import load_config, parse_config, require_positive, save_config
from mmreward.train.guards import NonFiniteGuard, NonFiniteLossError
from mmreward.train.tracking import Tracker, read_metrics


@dataclass
class OptimConfig:
    lr: float = 1e-4
    schedule: Literal["constant", "cosine"] = "constant"


@dataclass
class DemoConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    rewards: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


def test_config_layers_defaults_yaml_and_overrides(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("optim:\n  lr: 0.5\nrewards:\n  pickscore: 1.0\n")
    cfg = parse_config(DemoConfig, ["--config", str(yaml_file), "--optim.schedule", "cosine", "seed=3"])
    assert cfg == DemoConfig(OptimConfig(0.5, "cosine"), {"pickscore": 1.0}, 3)
    assert parse_config(DemoConfig, ["--optim.lr=2"]).optim.lr == 2.0


def test_config_errors_name_the_key_and_list_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*valid keys here: lr, schedule"):
        load_config(DemoConfig, overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"invalid value for 'optim.schedule'"):
        load_config(DemoConfig, overrides=["optim.schedule=linear"])
    with pytest.raises(ConfigError, match=r"invalid value for 'optim.lr'"):
        load_config(DemoConfig, overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match="seed must be >= 0"):  # __post_init__ runs
        load_config(DemoConfig, overrides=["seed=-1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DemoConfig, tmp_path / "missing.yaml")


def test_require_positive_names_the_first_bad_value():
    require_positive({"train.max_steps": 1, "loss.beta": 0.5})
    with pytest.raises(ConfigError, match=r"^train.save_every must be > 0, got 0$"):
        require_positive({"train.max_steps": 3, "train.save_every": 0, "lora.rank": -1})
    with pytest.raises(ConfigError, match=r"^lora.rank must be > 0, got -1$"):
        require_positive({"lora.rank": -1})


def test_save_config_round_trips(tmp_path):
    cfg = DemoConfig(OptimConfig(0.25, "cosine"), {"a": 2.0}, 7)
    path = save_config(cfg, tmp_path / "run")
    assert load_config(DemoConfig, path) == cfg


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    model[0].requires_grad_(False)  # frozen base, trainable head: only the head is saved
    return model


def _train(model, opt, steps):
    for _ in range(steps):
        x = torch.randn(16, 4) + float(np.random.rand()) + random.random()
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_checkpoint_resume_is_exact(tmp_path):
    """Train 3 steps, save, train 3 more; a fresh model resumed from the save must reach identical weights."""
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    model = _model()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    _train(model, opt, 3)
    save_checkpoint(tmp_path, 3, modules={"model": model}, states={"opt": opt}, extra={"epoch": 1})
    _train(model, opt, 3)
    reference = [p.detach().clone() for p in model.parameters()]

    resumed = _model()
    opt2 = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(99)  # RNG must come from the checkpoint, not from here
    state = load_checkpoint(latest_checkpoint(tmp_path), modules={"model": resumed}, states={"opt": opt2})
    assert state == {"step": 3, "epoch": 1}
    _train(resumed, opt2, 3)
    for a, b in zip(reference, resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_keeps_last_and_ignores_incomplete(tmp_path):
    model = _model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, modules={"model": model}, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002", "step-00000003"]
    (tmp_path / ".tmp-step-00000004").mkdir()  # an interrupted save is never picked up
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    with pytest.raises(Exception, match="lacks"):
        load_checkpoint(tmp_path / "step-00000003", modules={"model": nn.Linear(2, 2)})


def test_non_finite_guard_skips_then_stops():
    guard = NonFiniteGuard(max_skips=2)
    assert guard.ok(torch.tensor(1.0))
    assert not guard.ok(float("nan")) and not guard.ok(float("inf"))
    assert guard.ok(0.5) and guard.skipped == 2
    guard.ok(float("nan")), guard.ok(float("nan"))
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        guard.ok(float("nan"))


def test_tracker_writes_jsonl(tmp_path):
    tracker = Tracker(tmp_path, backends=["jsonl", "tensorboard"])
    tracker.log(1, {"loss": 0.5, "bad": float("nan")})
    tracker.close()
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 0.5, "bad": None}]
    assert any((tmp_path / "tensorboard").iterdir())


def test_editing_families_are_refused_by_programs_without_sources_and_source_area_by_text_families():
    from mmreward.train.sections import FlowModelConfig, check_media_kind

    check_media_kind(FlowModelConfig(family="qwenimage-edit", source_area=1024), editing=True)
    refused = "flux-kontext takes a source image per prompt; .*align/pref_grpo.py.*align/adv_grpo.py"
    with pytest.raises(ConfigError, match=refused):
        check_media_kind(FlowModelConfig(family="flux-kontext"))
    with pytest.raises(ConfigError, match="source_area is for editing families; sd3"):
        FlowModelConfig(family="sd3", source_area=1024)
    # Wan2.2 TI2V-5B takes first-frame images when asked to, in the programs that take source images only
    ti2v = FlowModelConfig(family="wan22ti2v", num_frames=5, image_to_video=True)
    assert ti2v.takes_sources() and not FlowModelConfig(family="wan22ti2v", num_frames=5).takes_sources()
    check_media_kind(ti2v, editing=True)
    with pytest.raises(ConfigError, match="wan22ti2v takes a source image per prompt; .*align/pref_grpo.py"):
        check_media_kind(ti2v)
    with pytest.raises(ConfigError, match="image_to_video turns wan22ti2v .*; wan-i2v always takes a source image"):
        FlowModelConfig(family="wan-i2v", num_frames=5, image_to_video=True)
    with pytest.raises(ConfigError, match="image_to_video turns wan22ti2v .*; wan takes no images"):
        FlowModelConfig(family="wan", num_frames=5, image_to_video=True)
    with pytest.raises(ConfigError, match="positive number of pixels, got 0"):
        FlowModelConfig(family="flux-kontext", source_area=0)
