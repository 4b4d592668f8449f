"""Score each distinct (prompt, media file) once and keep the results on disk, so interrupted runs resume.

Benchmarks reuse media across pairs (a video appears in several pairs of VideoGen-RewardBench, an image in up to
36 pairs of an ImageReward prompt), so a pointwise reward scores distinct ``(prompt, file)`` items, not pairs.
Pairwise judges are asked once per ``(prompt, file A, file B)``. Results are appended to a JSON-lines file per
reward configuration after every batch; a rerun with the same output directory loads them and scores only what is
missing. A line cut short by an interruption is ignored (and its item scored again).

Used by ``eval/reward_bench.py``; written for any program that scores files with rewards (generator benchmarks
score the images they generate the same way).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmreward.errors import ConfigError
from mmreward.rewards.base import PairwiseOutput, RewardModel, RewardOutput
from mmreward.rewards.registry import PRESET_DIR

CACHE_VERSION = 1
_SHOWN_ERRORS = 5


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _spec_contents(spec: str) -> dict[str, str]:
    """A digest of what a reward's name stands for: a preset file's text (a registry name's shipped preset
    included, so scores cached before a preset changed are not reused), or a saved directory's file names, sizes and
    modification times."""
    registered = PRESET_DIR / f"{spec}.yaml"
    path = registered if "/" not in spec and registered.is_file() else Path(spec).expanduser()
    if path.is_file():
        return {"spec_file": _digest(path.read_text(encoding="utf-8", errors="replace"))}
    if path.is_dir():
        return {"spec_dir": _digest(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()))}
    return {}


def reward_fingerprint(reward: RewardModel, spec: str) -> dict[str, Any]:
    """What makes a reward's scores reproducible: how it was named, its class, settings and weights.

    For a preset file or a saved directory the file contents and modification times are part of it, so scores of
    retrained weights saved to the same place are not mixed with old ones.
    """
    return {
        "spec": spec,
        "class": f"{type(reward).__module__}.{type(reward).__qualname__}",
        "kind": reward.kind,
        "weights": reward.weights_id,
        "dims": list(reward.dims),
        "dtype": str(reward.dtype),
        "video_fps": reward.video_fps,
        "video_num_frames": reward.video_num_frames,
        # Judges choose their video frames by a rule (other rewards have none).
        "frame_rule": getattr(reward, "frame_rule", None),
        "max_pixels": reward.max_pixels,
        "pairwise_scale": reward.pairwise_scale,
        **_spec_contents(spec),
    }


@dataclass(frozen=True)
class MediaItem:
    """One thing to score: a prompt and a media file, with its cache key; for an edit, the source image file it was
    edited from (given to rewards that declare ``uses_source``)."""

    prompt: str
    path: Path
    key: str
    source: Path | None = None


def media_key(prompt: str, path: Path, root: Path | None = None, source_digest: str | None = None) -> str:
    """Cache key of (prompt, file): the file's path relative to ``root`` (so data directories can move), its size,
    and the prompt. Scores depend on both the pixels and the prompt, and an edit's on its source's pixels too
    (``source_digest``, e.g. the source file's sha256)."""
    path = Path(path)
    shown = path.relative_to(root).as_posix() if root is not None and path.is_relative_to(root) else str(path)
    size = path.stat().st_size if path.is_file() else -1
    parts = [CACHE_VERSION, prompt, shown, size] + ([source_digest] if source_digest is not None else [])
    return _digest(parts)


def pair_key(prompt: str, key_a: str, key_b: str, orders: str) -> str:
    """Cache key of a judge's verdict on (prompt, A, B) in the given presentation orders."""
    return _digest([CACHE_VERSION, prompt, key_a, key_b, orders])


def cache_path(directory: Path, name: str, fingerprint: dict[str, Any]) -> Path:
    """Where the cache of a reward configuration lives: ``<name>-<fingerprint digest>.jsonl``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:60] or "reward"
    return Path(directory) / f"{slug}-{_digest(fingerprint)[:12]}.jsonl"


class ScoreCache:
    """Append-only JSON-lines store of per-item results for one reward configuration.

    The first line is a header with the reward's fingerprint; each other line is one record with a ``key``.
    """

    def __init__(self, directory: Path, name: str, fingerprint: dict[str, Any]) -> None:
        self.path = cache_path(directory, name, fingerprint)
        self.fingerprint = fingerprint
        self.records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.is_file():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("fingerprint") != json.loads(json.dumps(self.fingerprint, default=str)):
            raise ConfigError(
                f"score cache {str(self.path)!r} was written for another reward configuration; delete it or use "
                "another --output-dir"
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                self.skipped_lines += 1  # a line cut short when a run was interrupted: its item is scored again
                continue
            self.records[record["key"]] = record
        with self.path.open("rb") as handle:
            handle.seek(-1, 2)
            ends_with_newline = handle.read(1) == b"\n"
        if not ends_with_newline:  # new records must not be glued to a partial last line
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("\n")

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records and flush, so that they survive an interruption right after."""
        records = list(records)
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, allow_nan=False) + "\n")
        for record in records:
            self.records[record["key"]] = record


@dataclass
class ScoringStats:
    """How a scoring pass went: items in all, found in the cache, newly scored, failed (with the first reasons)."""

    total: int = 0
    cached: int = 0
    scored: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def count_failures(self, cache: ScoreCache, entries: Iterable[tuple[str, str]]) -> None:
        """Count the ``(cache key, label)`` entries whose cached record holds an error; keep the first reasons."""
        for key, label in entries:
            error = cache.get(key)["error"]
            if error is not None:
                self.failed += 1
                if len(self.errors) < _SHOWN_ERRORS:
                    self.errors.append(f"{label}: {error}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "from_cache": self.cached,
            "newly_scored": self.scored,
            "failed": self.failed,
            "errors": self.errors,
        }


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _item_error(out: Any, i: int, valid: bool, invalid_reason: str) -> str | None:
    """Why item ``i`` of a model's output failed: the model's reason where it marked the item failed, else
    ``invalid_reason`` where its value is unusable (NaN, missing), else None."""
    error = out.errors[i] if bool(out.failed[i]) else None
    return error if error is not None or valid else invalid_reason


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled or total == 0, dynamic_ncols=True)


class _Keyed(Protocol):
    key: str


def _fill_cache(
    cache: ScoreCache,
    items: Sequence[_Keyed],
    run: Callable[[list[Any]], Any],
    record: Callable[[Any, int, Any], dict[str, Any]],
    *,
    batch_size: int,
    desc: str,
    label: Callable[[Any], str],
    retry_failed: bool,
    progress: bool,
) -> ScoringStats:
    """Call the model (``run(batch) -> output``) on the distinct items (by ``key``) missing from ``cache``,
    ``batch_size`` at a time, and append ``record(output, i, item)`` for each item ``i`` of the batch as soon as the
    batch is done; with ``retry_failed`` also the items whose record holds an error. Failures are counted over every
    distinct item and shown as ``label(item): error``."""
    unique = list({item.key: item for item in items}.values())
    todo = [
        item for item in unique if item.key not in cache or (retry_failed and cache.get(item.key)["error"] is not None)
    ]
    stats = ScoringStats(total=len(unique), cached=len(unique) - len(todo))
    with _progress(len(todo), desc, progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            out = run(batch)
            cache.add(record(out, i, item) for i, item in enumerate(batch))
            stats.scored += len(batch)
            bar.update(len(batch))
    stats.count_failures(cache, [(item.key, label(item)) for item in unique])
    return stats


def score_into_cache(
    reward: RewardModel,
    items: Sequence[MediaItem],
    cache: ScoreCache,
    *,
    retry_failed: bool = False,
    progress: bool = True,
) -> ScoringStats:
    """Score the items missing from ``cache`` (each distinct key once) in batches of ``reward.batch_size``.

    Per-item failures (unreadable media) are recorded with their reason and count as scored; with
    ``retry_failed`` they are attempted again. Records: ``{key, prompt, path, score, dims, error}``, with ``score``
    None when the item failed. A reward with ``uses_source`` gets each item's ``source`` (every item needs one).
    """
    if reward.uses_source:
        missing = [str(item.path) for item in items if item.source is None]
        if missing:
            raise ConfigError(
                f"{reward.name} compares an edit with its source image, but {len(missing)} item(s) have none (e.g. "
                f"{missing[0]}); score edits of an editing prompt set, or use a reward that judges media alone"
            )

    def run(batch: list[MediaItem]) -> RewardOutput:
        prompts, media = [item.prompt for item in batch], [str(item.path) for item in batch]
        if reward.uses_source:
            return reward.score(prompts, media, sources=[str(item.source) for item in batch])
        return reward.score(prompts, media)

    def record(out: RewardOutput, i: int, item: MediaItem) -> dict[str, Any]:
        score = _finite(out.scores[i])
        error = _item_error(out, i, score is not None, "the reward returned a non-finite score")
        return {
            "key": item.key,
            "prompt": item.prompt,
            "path": str(item.path),
            "score": None if error else score,
            "dims": {} if error else {name: _finite(v[i]) for name, v in out.dims.items()},
            "error": error,
        }

    return _fill_cache(
        cache,
        items,
        run,
        record,
        batch_size=reward.batch_size,
        desc=f"scoring with {reward.name}",
        label=lambda item: str(item.path),
        retry_failed=retry_failed,
        progress=progress,
    )


@dataclass(frozen=True)
class PairItem:
    """One verdict to ask a pairwise judge for."""

    prompt: str
    media_a: Path
    media_b: Path
    key: str


def judge_pairs_into_cache(
    judge: RewardModel,
    pairs: Sequence[PairItem],
    cache: ScoreCache,
    *,
    orders: str = "both",
    retry_failed: bool = False,
    progress: bool = True,
) -> ScoringStats:
    """Ask a pairwise judge for the pairs missing from ``cache``, in batches of ``judge.batch_size``.

    Records: ``{key, prompt, a, b, prob_a, tie, consistent, error}``; ``prob_a`` is P(A better) averaged over the
    presentation orders, ``consistent`` whether the orders agreed.
    """

    def run(batch: list[PairItem]) -> PairwiseOutput:
        prompts = [p.prompt for p in batch]
        return judge.compare(prompts, [str(p.media_a) for p in batch], [str(p.media_b) for p in batch], orders=orders)

    def record(out: PairwiseOutput, i: int, pair: PairItem) -> dict[str, Any]:
        prob_a = _finite(out.prob_a[i])
        error = _item_error(out, i, prob_a is not None, "the judge returned a non-finite probability")
        return {
            "key": pair.key,
            "prompt": pair.prompt,
            "a": str(pair.media_a),
            "b": str(pair.media_b),
            "prob_a": None if error else prob_a,
            "tie": _finite(out.tie[i]),
            "consistent": bool(out.consistent[i]),
            "error": error,
        }

    return _fill_cache(
        cache,
        pairs,
        run,
        record,
        batch_size=judge.batch_size,
        desc=f"judging with {judge.name}",
        label=lambda pair: f"{pair.media_a} vs {pair.media_b}",
        retry_failed=retry_failed,
        progress=progress,
    )


# -------------------------------------------------------------------------------------------- checklist judges


@dataclass(frozen=True)
class ChecklistItem:
    """One image (or video) to check against its prompt's test points, with its cache key."""

    prompt: str
    path: Path
    points: tuple[tuple[str, str], ...]  # (test-point name, description)
    key: str


def checklist_key(prompt: str, points: Sequence[tuple[str, str]], path: Path, root: Path | None = None) -> str:
    """Cache key of a checklist verdict: the media key of (prompt, file) and the test points asked."""
    return _digest([CACHE_VERSION, media_key(prompt, path, root), [list(p) for p in points]])


def check_into_cache(
    judge: Any,
    items: Sequence[ChecklistItem],
    cache: ScoreCache,
    *,
    retry_failed: bool = False,
    progress: bool = True,
) -> ScoringStats:
    """Ask a checklist judge (:class:`~mmreward.rewards.vlm.checklist.ChecklistJudge`) about the items missing
    from ``cache``, ``judge.batch_size`` items per call.

    Records: ``{key, prompt, path, points, p_yes, passed, error, text}``; ``p_yes``/``passed`` are per test point, None
    when the judge's answer failed (its reason in ``error``, its text in ``text``).
    """

    def run(batch: list[ChecklistItem]) -> Any:
        return judge.check(
            [item.prompt for item in batch], [str(item.path) for item in batch], [list(i.points) for i in batch]
        )

    def record(out: Any, i: int, item: ChecklistItem) -> dict[str, Any]:
        p_yes = out.p_yes[i]
        finite = p_yes is not None and all(math.isfinite(p) for p in p_yes)
        error = _item_error(out, i, finite, "the judge returned no finite verdicts")
        return {
            "key": item.key,
            "prompt": item.prompt,
            "path": str(item.path),
            "points": [name for name, _ in item.points],
            "p_yes": None if error else [float(p) for p in p_yes],
            "passed": None if error else [bool(p > 0.5) for p in p_yes],
            "error": error,
            "text": out.rationales[i] if out.rationales is not None else None,
        }

    return _fill_cache(
        cache,
        items,
        run,
        record,
        batch_size=judge.batch_size,
        desc=f"checking with {judge.name}",
        label=lambda item: str(item.path),
        retry_failed=retry_failed,
        progress=progress,
    )


# ------------------------------------------------------------------------------- finished scoring, without models


def request_digest(spec: str, overrides: dict[str, Any], keys: Iterable[str]) -> str:
    """What a scoring request is, computable before any model loads: the reward as named (with the contents of a
    preset file or saved directory), the overrides, and the items (their keys include file sizes)."""
    fingerprint = {"spec": spec, "overrides": overrides, "keys": _digest(sorted(keys)), **_spec_contents(spec)}
    return _digest([CACHE_VERSION, fingerprint])


def finished_cache(directory: Path, request: str) -> ScoreCache | None:
    """The cache that already holds every result of ``request`` (see :func:`mark_finished`), or None.

    A rerun of a finished evaluation then needs no model at all.
    """
    index = Path(directory) / "finished.json"
    if not index.is_file():
        return None
    try:
        entry = json.loads(index.read_text(encoding="utf-8")).get(request)
    except json.JSONDecodeError:
        return None
    path = Path(directory) / entry if entry else None
    if path is None or not path.is_file():
        return None
    try:
        fingerprint = json.loads(path.read_text(encoding="utf-8").splitlines()[0])["fingerprint"]
    except (IndexError, KeyError, TypeError, json.JSONDecodeError):
        return None
    name = path.stem.rsplit("-", 1)[0]
    if cache_path(path.parent, name, fingerprint) != path:
        return None  # renamed or edited by hand: score again rather than trust it
    return ScoreCache(path.parent, name, fingerprint)


def mark_finished(directory: Path, request: str, cache: ScoreCache) -> None:
    """Record that ``cache`` holds every result of ``request``."""
    index = Path(directory) / "finished.json"
    try:
        entries = json.loads(index.read_text(encoding="utf-8")) if index.is_file() else {}
    except json.JSONDecodeError:
        entries = {}
    entries[request] = cache.path.name
    partial = index.with_name(index.name + ".partial")
    partial.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, index)
