"""Typed program configs: a dataclass tree is the schema, YAML gives values, the command line overrides them.

    cfg = parse_config(FlowDPOConfig, ["--config", "configs/align/flow_dpo_sd3.yaml", "--train.lr", "1e-4"])

- Values come from the dataclass defaults, then the YAML file (``--config``), then overrides given as
  ``--section.key value``, ``--section.key=value`` or ``section.key=value``.
- Unknown keys are errors that list the valid keys at that level; values are type-checked (OmegaConf structured
  configs, including ``Literal`` choices); dataclass ``__post_init__`` methods then check cross-field rules.
- :func:`save_config` writes the resolved config to ``output_dir/config.yaml`` so every run records what it ran.

Dict-valued fields (for example a reward mix) merge key by key with their defaults, so give them empty
defaults and set their contents in YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from mmreward.errors import ConfigError

T = TypeVar("T")


def _fields_at(schema: type, dotted: str) -> list[str]:
    """Field names of the dataclass reached by following ``dotted`` (all but the last part) from ``schema``."""
    node: Any = schema
    for part in dotted.split(".")[:-1]:
        if not dataclasses.is_dataclass(node):
            return []
        hints = typing.get_type_hints(node)  # resolves postponed (string) annotations
        if part not in hints:
            return sorted(f.name for f in dataclasses.fields(node))
        node = hints[part]
    return sorted(f.name for f in dataclasses.fields(node)) if dataclasses.is_dataclass(node) else []


def _to_dotlist(tokens: list[str]) -> list[str]:
    """``["--a.b", "1", "--c=2", "d.e=3"]`` -> ``["a.b=1", "c=2", "d.e=3"]``."""
    dotlist = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        key = token[2:] if token.startswith("--") else token
        if "=" in key:
            dotlist.append(key)
            i += 1
        elif token.startswith("--") and i + 1 < len(tokens):
            dotlist.append(f"{key}={tokens[i + 1]}")
            i += 2
        else:
            raise ConfigError(f"cannot read override {token!r}; write --section.key value or section.key=value")
    return dotlist


def _explain(schema: type, err: OmegaConfBaseException, origin: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, ConfigKeyError):
        valid = _fields_at(schema, key) if key else []
        hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
        return ConfigError(f"unknown config key {key!r} (from {origin}){hint}")
    message = str(err).splitlines()[0]
    return ConfigError(f"invalid value for {key!r} (from {origin}): {message}")


def load_config(schema: type[T], config_file: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a ``schema`` instance from defaults, an optional YAML file and dot-list overrides."""
    merged = OmegaConf.structured(schema)
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        except OmegaConfBaseException as err:
            raise _explain(schema, err, str(path)) from err
    for item in overrides or []:
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise _explain(schema, err, f"override {item!r}") from err
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _explain(schema, err, "the merged config") from err


def parse_config(
    schema: type[T],
    argv: list[str] | None = None,
    *,
    description: str | None = None,
    switches: dict[str, tuple[str, str]] | None = None,
) -> T:
    """Parse ``--config FILE`` and overrides from ``argv`` (default ``sys.argv[1:]``) into a ``schema`` instance.

    ``--print-config`` prints the resolved config as YAML and exits. ``switches`` adds flags that take no value,
    each setting a boolean config key to true: ``{"--check-on-policy": ("check_on_policy", "help text")}``.
    """
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Override any config value with --section.key value (e.g. --train.learning_rate 1e-4).",
    )
    parser.add_argument("--config", help="YAML file with config values")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    for flag, (_, help_text) in (switches or {}).items():
        parser.add_argument(flag, action="store_true", help=help_text)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = _to_dotlist(rest)
    for flag, (key, _) in (switches or {}).items():
        if getattr(args, flag.lstrip("-").replace("-", "_")):
            overrides.append(f"{key}=true")
    cfg = load_config(schema, args.config, overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        raise SystemExit(0)
    return cfg


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, output_dir: str | Path) -> Path:
    """Write the resolved config to ``output_dir/config.yaml`` (atomically) and return the path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / "config.yaml"
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(to_yaml(cfg), encoding="utf-8")
    tmp.replace(target)
    return target


def require_positive(values: dict[str, float]) -> None:
    """Refuse the first of ``values`` (``{"section.key": value}``) that is not > 0, naming the key and the value."""
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
