"""The ``mmreward_reward.yaml`` entries a trained reward model's directory shares with its training config: the
prompt template and the image pixel bounds, with paths inside the directory written relative to it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def relative_to_output(path: str, directory: Path) -> str:
    """``"./sub"`` for a path inside ``directory`` (a saved directory can then be moved; see find_preset)."""
    try:
        return "./" + Path(path).resolve().relative_to(directory.resolve()).as_posix()
    except (ValueError, OSError):
        return path


def template_and_pixels(cfg: Any, out: Path) -> dict[str, Any]:
    """Preset entries for the config's template (a template file is copied into ``out``) and image pixel bounds."""
    preset: dict[str, Any] = {}
    if cfg.model.template_file:
        shutil.copy(cfg.model.template_file, out / "template.yaml")
        preset["template_file"] = "./template.yaml"
    else:
        preset["template"] = cfg.model.template
    if cfg.data.image_min_pixels is not None:
        preset["image_min_pixels"] = cfg.data.image_min_pixels
    if cfg.data.image_max_pixels is not None:
        preset["image_max_pixels"] = cfg.data.image_max_pixels
    return preset
