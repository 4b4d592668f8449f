"""The flat reward registry: preset names -> YAML presets -> reward classes.

A *preset* is a YAML file in ``configs/rewards/`` (shipped inside the package as ``mmreward/presets``): its
``type`` names a reward class in :data:`REWARD_TYPES` and every other key is a constructor argument (weights id,
dimensions, template, frame sampling). ``load_reward`` takes

- a preset name (``"pickscore"``; ``mmreward list`` shows them),
- a path to a preset YAML file (your own weights or settings),
- a directory holding ``mmreward_reward.yaml`` (what the training programs save), or
- ``"package.module:ClassName"`` for a reward class of your own,
- ``"http://host:port"`` for a reward served by ``mmreward serve``,

plus keyword overrides (``device``, ``dtype``, ``weights``, ...).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmreward.errors import ConfigError, UnknownRewardError
from mmreward.rewards.base import RewardModel

# Reward type -> "module:Class". Strings, so that `import mmreward` does not import open_clip or transformers.
REWARD_TYPES: dict[str, str] = {
    "clip-score": "mmreward.rewards.open_clip_rewards:ClipScore",
    "hpsv2": "mmreward.rewards.open_clip_rewards:HPSv2",
    "pickscore": "mmreward.rewards.hf_clip_rewards:PickScore",
    "laion-aesthetic": "mmreward.rewards.hf_clip_rewards:LaionAesthetic",
    "imagereward": "mmreward.rewards.image_reward:ImageReward",
    "ocr": "mmreward.rewards.ocr:OcrReward",
    "geneval": "mmreward.rewards.geneval:GenevalReward",
    "soft-tifa": "mmreward.rewards.soft_tifa:SoftTifaReward",
    "jpeg-compressibility": "mmreward.rewards.compressibility:JpegCompressibility",
    "jpeg-incompressibility": "mmreward.rewards.compressibility:JpegIncompressibility",
    "vlm-head": "mmreward.rewards.vlm.heads:VLMHeadReward",
    "videoscore2": "mmreward.rewards.vlm.videoscore2:VideoScore2Reward",
    "editreward": "mmreward.rewards.vlm.edit_reward:EditRewardModel",
    # Judges: a task class; the preset's `backend:` names the model behind it (local or chat).
    "pairwise-judge": "mmreward.rewards.vlm.pairwise:PairwiseJudge",
    "cot-judge": "mmreward.rewards.vlm.pairwise:ChainOfThoughtJudge",
    "flex-judge": "mmreward.rewards.vlm.flex:FlexJudge",
    "pointwise-judge": "mmreward.rewards.vlm.pointwise:PointwiseJudge",
    "checklist-judge": "mmreward.rewards.vlm.checklist:ChecklistJudge",
    "critique-judge": "mmreward.rewards.vlm.critique:RationalRewardsJudge",
    "edit-critique-judge": "mmreward.rewards.vlm.critique:RationalRewardsEditJudge",
    "edit-score-judge": "mmreward.rewards.vlm.edit_score:UnifiedRewardEditJudge",
    "edit-pairwise-judge": "mmreward.rewards.vlm.edit_score:UnifiedRewardEditPairwiseJudge",
}

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
# File a training program writes next to saved weights so that the directory loads with load_reward(path).
SAVED_REWARD_FILE = "mmreward_reward.yaml"


@dataclass(frozen=True)
class Preset:
    """A named reward configuration: a reward type and its constructor arguments."""

    name: str
    type: str
    kwargs: dict[str, Any]
    source: Path | None = None

    def reward_class(self) -> type[RewardModel]:
        if self.type not in REWARD_TYPES:
            where = f" in {self.source}" if self.source else ""
            raise ConfigError(f"unknown reward type {self.type!r}{where}; known types: {sorted(REWARD_TYPES)}")
        return import_class(REWARD_TYPES[self.type])

    def describe(self) -> dict[str, Any]:
        """What ``mmreward list`` prints, from the preset and the class, without loading any weights."""
        cls = self.reward_class()
        weights = next((self.kwargs[k] for k in ("weights", "pretrained") if k in self.kwargs), None)
        if self.type == "clip-score":
            weights = f"{self.kwargs.get('model', 'ViT-B-32')}/{self.kwargs.get('pretrained', 'openai')}"
        from mmreward.rewards.vlm.templates import describe_choice

        return {
            "name": self.name,
            "kind": cls.kind,
            "dims": list(self.kwargs.get("dims", cls.dims)),
            "weights": weights,
            "differentiable": cls.differentiable,
            "raw_range": cls.raw_range,
            "template": describe_choice(self.kwargs),
        }


def import_class(dotted: str) -> type:
    """``"package.module:ClassName"`` -> the class, with a clear error when either part is missing."""
    module_name, _, attr = dotted.partition(":")
    if not module_name or not attr:
        raise UnknownRewardError(f"{dotted!r} is not of the form 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UnknownRewardError(f"cannot import module {module_name!r} for reward {dotted!r}: {err}") from err
    if not hasattr(module, attr):
        raise UnknownRewardError(f"module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def read_preset(path: str | Path, name: str | None = None) -> Preset:
    """Read a preset YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read reward preset {str(path)!r}: {err}") from err
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(
            f"reward preset {str(path)!r} must be a mapping with a 'type' key (one of {sorted(REWARD_TYPES)})"
        )
    data = dict(data)
    kind = data.pop("type")
    return Preset(name=name or path.stem, type=kind, kwargs=data, source=path)


def list_rewards() -> list[str]:
    """Names of the shipped reward presets (``load_reward`` also takes files, directories and classes)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def find_preset(name: str) -> Preset | None:
    """The preset for a registry name, a YAML path or a saved-reward directory; None for ``module:Class``."""
    registered = PRESET_DIR / f"{name}.yaml"
    if "/" not in name and registered.is_file():
        return read_preset(registered)
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return read_preset(path)
    if path.is_dir() and (path / SAVED_REWARD_FILE).is_file():
        preset = read_preset(path / SAVED_REWARD_FILE, name=path.name)
        # Paths inside a saved directory are relative to it, so the directory can be moved.
        kwargs = {k: _relative_to(path, v) for k, v in preset.kwargs.items()}
        return Preset(preset.name, preset.type, kwargs, preset.source)
    return None


def _relative_to(directory: Path, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("./"):
        return str(directory / value[2:])
    return value


def resolve_reward(name: str) -> tuple[type[RewardModel], dict[str, Any], str]:
    """The reward class, preset arguments and display name for ``name``, without loading any weights.

    Raises:
        UnknownRewardError: the name matches nothing; the message lists the registered names.
    """
    if name.startswith(("http://", "https://")):
        return import_class("mmreward.rewards.remote:RemoteReward"), {"url": name}, name
    preset = find_preset(name)
    if preset is not None:
        return preset.reward_class(), dict(preset.kwargs), preset.name
    if ":" in name:
        cls = import_class(name)
        if not (isinstance(cls, type) and issubclass(cls, RewardModel)):
            raise UnknownRewardError(f"{name!r} is not a RewardModel subclass")
        return cls, {}, name
    raise UnknownRewardError(
        f"unknown reward {name!r}. Registered rewards: {', '.join(list_rewards())}. Also accepted: a preset "
        "YAML file, a directory saved by align/train_reward.py, 'package.module:ClassName', or the URL of an "
        "`mmreward serve` server"
    )


def load_reward(name: str, **overrides: Any) -> RewardModel:
    """Build a reward from a preset name, a preset file, a saved directory or a ``module:Class`` path.

    Keyword arguments override the preset's values (for example ``device="cuda"``, ``dtype="bfloat16"``,
    ``weights="/local/dir"``).

    Raises:
        UnknownRewardError: the name matches nothing; the message lists the registered names.
        ConfigError: an option the reward class does not take.
        WeightsNotFoundError: the weights cannot be found locally or on the hub.
    """
    cls, kwargs, display_name = resolve_reward(name)
    kwargs.update(overrides)
    valid = _init_params(cls)
    if hasattr(cls, "backend_options"):  # judges: the backend the preset names takes the rest of the options
        valid |= cls.backend_options(kwargs.get("backend"))
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for reward {name!r} ({cls.__name__}); valid: {sorted(valid)}")
    reward = cls(**kwargs)
    reward.name = display_name
    return reward


def _init_params(cls: type) -> set[str]:
    """Keyword arguments accepted by ``cls`` and the base classes its ``**kwargs`` pass through to."""
    params: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        signature = inspect.signature(init)
        params |= {
            p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params - {"self"}
