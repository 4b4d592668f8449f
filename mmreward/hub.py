"""Find model weights: a local path as given, or a Hugging Face hub id through the local cache.

Weights are named exactly as users pass them to transformers or open_clip (``"org/name"`` or a path). When
they cannot be had (offline, typo, missing file) the error names the id, the cache looked in, and how to point
at local weights, instead of a long retry loop and a stack trace from deep inside a download client.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmreward.errors import WeightsNotFoundError

# Files needed to load a transformers model or processor directory. Weights come as safetensors where the repo
# has them; pytorch_model.bin is fetched only for repos without safetensors.
_MODEL_DIR_PATTERNS = ["*.json", "*.txt", "*.model", "*.jinja", "*.safetensors", "merges.txt", "vocab.*"]


def _looks_like_hub_id(name: str) -> bool:
    # "org/name" with no leading "/", "." or "~" and exactly one slash.
    return (
        name.count("/") == 1
        and not name.startswith(("/", ".", "~"))
        and all(part and part.strip() == part for part in name.split("/"))
    )


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _not_found(what: str, name: str, filename: str | None, reason: str, hint: str) -> WeightsNotFoundError:
    target = f"{name!r}" + (f" (file {filename!r})" if filename else "")
    offline = " HF_HUB_OFFLINE is set, so nothing is downloaded." if os.environ.get("HF_HUB_OFFLINE") else ""
    return WeightsNotFoundError(
        f"{what} weights {target} are not available: {reason}.{offline} Looked in the Hugging Face cache "
        f"{_cache_dir()}. To use them offline, download once where the hub is reachable "
        f"(`hf download {name}{' ' + filename if filename else ''}`) and copy the cache directory (HF_HOME), "
        f"or point at local weights: {hint}"
    )


def resolve_file(name: str, filename: str, *, what: str, hint: str) -> Path:
    """Local path of one weights file.

    Args:
        name: a local file, a local directory holding ``filename``, or a hub id ``"org/repo"``.
        filename: the file inside the directory or repo.
        what: the model's name, for messages.
        hint: how to point at local weights, e.g. ``"load_reward('hpsv2', weights='/path/HPS_v2_compressed.pt')"``.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        raise _not_found(what, name, filename, f"directory {str(path)!r} has no file {filename!r}", hint)
    if not _looks_like_hub_id(name):
        raise _not_found(what, name, filename, "no such local file or directory, and not a hub id", hint)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name, filename))
    except Exception as err:  # offline, unknown repo or file, network: all mean "not available"
        raise _not_found(what, name, filename, _reason(err), hint) from err


def resolve_dir(
    name: str, *, what: str, hint: str, need_weights: bool = True, extra_patterns: tuple[str, ...] = ()
) -> Path:
    """Local directory of a transformers-style model or processor (hub id or local directory).

    With ``need_weights=False`` (a processor or tokenizer only) no weight files are downloaded.
    ``extra_patterns`` adds file patterns to fetch from the hub (e.g. ``("*.pth",)`` for checkpoints that keep
    some tensors in pickles).
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not _looks_like_hub_id(name):
        raise _not_found(what, name, None, "no such local directory, and not a hub id", hint)
    from huggingface_hub import snapshot_download

    try:
        patterns = _MODEL_DIR_PATTERNS if need_weights else [p for p in _MODEL_DIR_PATTERNS if "safetensors" not in p]
        patterns = [*patterns, *extra_patterns]
        local = Path(snapshot_download(name, allow_patterns=patterns))
        if need_weights and not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(name, allow_patterns=[*patterns, "*.bin"]))
    except Exception as err:
        raise _not_found(what, name, None, _reason(err), hint) from err
    return local


def _reason(err: Exception) -> str:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__
