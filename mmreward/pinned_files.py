"""Files published in public GitHub repositories, read at a pinned commit and verified, like weights.

A :class:`PinnedFile` names one file by repository, full commit hash, path and a digest of its bytes at that
commit: their sha256, or, for a file whose bytes were not at hand when it was pinned, its git blob id (the SHA-1 of
the header ``blob <size>`` and a NUL byte followed by the bytes; the commit's tree records it for every file, so any
clone shows it without the file's contents: ``git ls-tree <commit> <path>``). :func:`read_pinned` returns those bytes
from a cache under the Hugging Face home (``<cache_root>/<owner>/<repo>/<commit>/<path>``, so copying HF_HOME carries
them along with the weights), or downloads the raw file once and caches it. ``HF_HUB_OFFLINE`` is honoured. Bytes
whose digest differs from the pin are refused, never silently used: a commit cannot move, but a cached copy can be
edited and a mirror can differ.

Two kinds of file use this: a reward checkpoint's published prompt template (:mod:`mmreward.rewards.vlm.reference`,
cached under ``mmreward/templates``) and the prompt sets alignment recipes train on (:mod:`mmreward.data.prompts`,
cached under ``mmreward/data``). Each caller words its own errors, because each has its own fixes.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmreward.errors import ConfigError

# Raw file at a commit; a commit (not a branch) so that the bytes never change under a pinned sha256.
RAW_URL = "https://raw.githubusercontent.com/{repository}/{commit}/{path}"
_TIMEOUT_S = 30
_REPOSITORY = r"[A-Za-z0-9][\w.-]*/[\w.-]+"
# github:<owner>/<repo>@<commit>/<path>#sha256=<hex> (or #git-blob=<hex>), the one-string form a config or a
# command line carries.
SPEC_PREFIX = "github:"
_SPEC = re.compile(
    rf"github:(?P<repository>{_REPOSITORY})@(?P<commit>[^/]*)/(?P<path>[^#]+)#(?P<algorithm>sha256|git-blob)="
    r"(?P<digest>.*)"
)
# Hex digits of each digest: sha256, and git's SHA-1 object id.
DIGEST_LENGTHS = {"sha256": 64, "git-blob": 40}


def file_digest(data: bytes, algorithm: str) -> str:
    """``data``'s sha256, or its git blob id: SHA-1 over git's object header (``blob <size>`` and a NUL byte)
    followed by the bytes."""
    if algorithm == "git-blob":
        return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PinnedFile:
    """One published file: ``repository`` ("owner/name"), a full ``commit`` hash, the file's ``path`` in the
    repository and the ``digest`` of its bytes at that commit by ``algorithm`` (a key of :data:`DIGEST_LENGTHS`)."""

    repository: str
    commit: str
    path: str
    digest: str
    algorithm: str = "sha256"

    @property
    def url(self) -> str:
        return RAW_URL.format(repository=self.repository, commit=self.commit, path=self.path)

    def describe(self) -> str:
        return f"{self.repository}@{self.commit[:7]}:{self.path}"

    def spec(self) -> str:
        """The one-string form :func:`parse_spec` reads."""
        return f"{SPEC_PREFIX}{self.repository}@{self.commit}/{self.path}#{self.algorithm}={self.digest}"


def parse_mapping(raw: Any, where: str) -> PinnedFile:
    """Validate a ``{repository, commit, path, sha256}`` mapping (a template file's ``source`` entry)."""
    keys = {"repository", "commit", "path", "sha256"}
    if not isinstance(raw, dict) or set(raw) != keys or not all(isinstance(raw[k], str) for k in keys):
        raise ConfigError(f"{where} must map exactly {sorted(keys)} to strings, got {raw!r}")
    return _checked(raw["repository"], raw["commit"], raw["path"], raw["sha256"], where)


def is_spec(value: str | os.PathLike) -> bool:
    """Whether ``value`` is meant as a pinned file (``github:...``) rather than a local path."""
    return isinstance(value, str) and value.startswith(SPEC_PREFIX)


def parse_spec(spec: str, where: str) -> PinnedFile:
    """Read ``github:<owner>/<repo>@<40-digit commit>/<path>#sha256=<64 hex digits>``, or ``#git-blob=<40 hex
    digits>`` (the file's git blob id at that commit) in place of the sha256."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ConfigError(
            f"{where} {spec!r} is not a pinned file: write github:<owner>/<repo>@<full commit>/<path>#sha256=<hex> "
            "(sha256 of the file at that commit; or #git-blob=<its blob id>), or give a local path"
        )
    return _checked(match["repository"], match["commit"], match["path"], match["digest"], where, match["algorithm"])


def _checked(
    repository: str, commit: str, path: str, digest: str, where: str, algorithm: str = "sha256"
) -> PinnedFile:
    if not re.fullmatch(_REPOSITORY, repository):
        raise ConfigError(f"{where}: repository must be 'owner/name', got {repository!r}")
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ConfigError(f"{where}: commit must be a full 40-digit hash (a branch can move), got {commit!r}")
    length = DIGEST_LENGTHS[algorithm]
    if not re.fullmatch(rf"[0-9a-f]{{{length}}}", digest):
        raise ConfigError(f"{where}: {algorithm} must be {length} hex digits, got {digest!r}")
    if path.startswith("/") or ".." in Path(path).parts:
        raise ConfigError(f"{where}: path must be relative inside the repository, got {path!r}")
    return PinnedFile(repository, commit, path, digest, algorithm)


def cache_path(pinned: PinnedFile, cache_root: Path) -> Path:
    return cache_root / pinned.repository / pinned.commit / pinned.path


def hf_cache_root(kind: str) -> Path:
    """``$HF_HOME/mmreward/<kind>``: beside the hub cache."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mmreward" / kind


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 (the URL is built from RAW_URL)
        return response.read()


def verify(data: bytes, pinned: PinnedFile, origin: str, mismatch: Callable[[str, str], Exception]) -> bytes:
    """``data`` if its digest is the pinned one; else ``mismatch(digest, origin)`` is raised."""
    digest = file_digest(data, pinned.algorithm)
    if digest != pinned.digest:
        raise mismatch(digest, origin)
    return data


def read_pinned(
    pinned: PinnedFile,
    cache_root: Path,
    *,
    unavailable: Callable[[str], Exception],
    mismatch: Callable[[str, str], Exception],
) -> Path:
    """Path of the verified cached copy of ``pinned``, downloaded (and cached) first when there is none.

    Args:
        cache_root: where copies live, e.g. :func:`hf_cache_root` ``("data")``.
        unavailable: builds the error raised when there is no copy and none can be had, given the reason
            ("HF_HUB_OFFLINE is set, ..." or the download's failure).
        mismatch: builds the error raised for bytes with another digest, given it and where they came from.
    """
    cached = cache_path(pinned, cache_root)
    if cached.is_file():
        verify(cached.read_bytes(), pinned, str(cached), mismatch)
        return cached
    if offline():
        raise unavailable("HF_HUB_OFFLINE is set, so nothing is downloaded")
    try:
        data = _download(pinned.url)
    except OSError as err:  # URLError, HTTPError and timeouts are all OSErrors
        raise unavailable(f"downloading it failed ({type(err).__name__}: {err})") from err
    verify(data, pinned, pinned.url, mismatch)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(cached)  # atomic: a concurrent reader (another process of the run) sees the whole file or none
    return cached
