"""Metrics logging for the training programs: JSONL always, TensorBoard or W&B when installed and asked for.

One :class:`Tracker` per run, used from the main process only. ``log(step, metrics)`` appends one JSON line to
``output_dir/metrics.jsonl`` (the file tests and plots read) and forwards the same numbers to the optional
backends.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from mmreward.errors import ConfigError

Backend = Literal["jsonl", "tensorboard", "wandb"]


class Tracker:
    def __init__(
        self,
        output_dir: str | Path,
        backends: list[str] | tuple[str, ...] = ("jsonl",),
        run_name: str = "run",
        config: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._writers: list[Any] = []
        unknown = sorted(set(backends) - {"jsonl", "tensorboard", "wandb"})
        if unknown:
            raise ConfigError(f"unknown logging backend(s) {unknown}; use jsonl, tensorboard, wandb")
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if "tensorboard" in backends:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ConfigError(
                    "logging to tensorboard needs the tensorboard package: pip install tensorboard"
                ) from err
            self._writers.append(("tensorboard", SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))))
        if "wandb" in backends:
            try:
                import wandb
            except ImportError as err:
                raise ConfigError("logging to wandb needs the wandb package: pip install wandb") from err
            self._writers.append(("wandb", wandb.init(name=run_name, config=config, dir=str(output_dir))))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in metrics.items()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        for kind, writer in self._writers:
            if kind == "tensorboard":
                for key, value in clean.items():
                    if value is not None:
                        writer.add_scalar(key, value, step)
            else:
                writer.log(clean, step=step)

    def close(self) -> None:
        for kind, writer in self._writers:
            writer.close() if kind == "tensorboard" else writer.finish()
        self._writers = []


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of ``output_dir/metrics.jsonl``."""
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
