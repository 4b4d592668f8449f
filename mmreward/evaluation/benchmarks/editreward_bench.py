"""EditReward-Bench of TIGER-Lab (Wu et al. 2025, EditReward, arXiv 2509.26346): human rankings of K = 2, 3, 4 image
edits of one source image under one instruction.

Two benchmarks share the name. This is TIGER-Lab's, the Hugging Face dataset ``TIGER-Lab/EditReward-Bench`` of the
EditReward paper (484 groups: 186 with K = 2, 150 with K = 3, 148 with K = 4); ``EditScore/EditReward-Bench``
(VectorSpaceLab's EditScore, arXiv 2509.23909) is another benchmark with another layout and metric, not this one.

Released layout (the Hub repository; ``--data-dir`` must look the same)::

    DIR/2pair/train-00000-of-00001.parquet
    DIR/3pair/train-0000{0,1}-of-00002.parquet
    DIR/4pair/train-0000{0..3}-of-00004.parquet

one row per *pair* of a group: ``id, instruction, source_image, candidate_1, candidate_2, ranking,
comparison_type`` (and ``dataset, model_1, model_2, score_1, score_2``, kept for reports), images as embedded
``{bytes, path}`` structs. ``comparison_type`` ``"XvsY"`` names the candidates shown (``candidate_1`` is X,
``candidate_2`` Y; K = 2 rows are ``A`` vs ``B``), ``ranking`` the human verdict on them: ``"X>Y"`` / ``"Y>X"``
(``"A<B"`` too) or, for K = 2, a tie ``"A=B"`` (``"A=B=Good"`` / ``"A=B=Bad"`` in the authors' JSON files). The rows
of a K = 3, 4 group share the id prefix before the first ``_``, as the authors' scripts group them
(``inference_{3,4}pair_hf.py``: ``id.split('_')[0]``, or the first 10 characters of an id without ``_``); each
K = 2 row is its own group.

The loader writes every image once to ``DIR/media/<K>pair/`` (a candidate recurs in K - 1 rows), rebuilds each
group's candidates A, B, ... and the human ranking from its pairs (a strict order when the pair verdicts form one; a
tie for a tied K = 2 group; unreadable otherwise: such a group counts as wrong in the strict accuracy, as the
authors' ``get_gt_ranking`` returning None does). Groups whose pairs are missing or repeated, or whose rows are
malformed, are left out and named in the notes. Scoring: the instruction is the prompt, the source image goes to
rewards that use one (``uses_source``). Metric: :mod:`mmreward.evaluation.editreward_metric`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from mmreward.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    DatasetSource,
    RankedGroup,
    ReferenceResult,
    check_data_dir,
    check_media,
    hub_download,
)
from mmreward.evaluation.benchmarks.parquet_media import read_parquet_rows, write_image
from mmreward.evaluation.editreward_metric import TIE, Ranking

HUB_ID = "TIGER-Lab/EditReward-Bench"
SUBSETS = (2, 3, 4)
COLUMNS = ("id", "instruction", "source_image", "candidate_1", "candidate_2", "ranking")
TIE_VOTES = ("A=B", "A=B=Good", "A=B=Bad")
LETTERS = "ABCD"
_COMPARISON = re.compile(r"^([A-D])vs([A-D])$")
_VERDICT = re.compile(r"^([A-D])([<>])([A-D])$")
_SHOWN_BAD = 5

SOURCE = DatasetSource(
    hub_id=HUB_ID,
    files=tuple(f"{k}pair/*.parquet" for k in SUBSETS),
    layout="DIR/2pair/*.parquet, DIR/3pair/*.parquet, DIR/4pair/*.parquet as on the Hub (one row per pair of a "
    "group, images embedded); images are written to DIR/media/ on the first load",
    license="Apache-2.0 (dataset card)",
    paper="Wu et al. 2025, EditReward: A Human-Aligned Reward Model for Instruction-Guided Image Editing, "
    "arXiv 2509.26346 (TIGER-AI-Lab/EditReward; not EditScore's EditReward-Bench, arXiv 2509.23909)",
)

# TIGER-AI-Lab/EditReward README (commit edb027e), strict ranking accuracy in percent.
REFERENCES = (
    ReferenceResult("EditReward (Qwen2.5-VL-7B)", "K=2 strict", 56.99, "EditReward README"),
    ReferenceResult("EditReward (Qwen2.5-VL-7B)", "K=3 strict", 36.00, "EditReward README"),
    ReferenceResult("EditReward (Qwen2.5-VL-7B)", "K=4 strict", 10.81, "EditReward README"),
    ReferenceResult("EditReward (Qwen2.5-VL-7B)", "overall", 36.78, "EditReward README"),
    ReferenceResult("EditReward (MiMo-VL-7B)", "overall", 38.42, "EditReward README"),
    ReferenceResult("GPT-5 (judge)", "overall", 37.81, "EditReward README"),
    ReferenceResult("Random", "overall", 13.84, "EditReward README"),
)


@dataclass(frozen=True)
class PairRow:
    """One row reduced to what grouping needs, its images already written to files."""

    id: str
    instruction: str
    first: str  # letter of candidate_1
    second: str  # letter of candidate_2
    label: int  # +1 first ranked above second, -1 below, 0 tie
    source: Path
    images: tuple[Path, Path]
    models: tuple[Any, Any]
    human_scores: tuple[Any, Any]


@dataclass(frozen=True)
class EditGroup:
    """A group rebuilt from its pair rows: candidates in letter order, the pair labels over
    ``combinations(range(K), 2)``, and the human ranking."""

    id: str
    subset: int
    instruction: str
    source: Path
    candidates: tuple[Path, ...]
    pair_labels: tuple[int, ...]
    ranking: Ranking
    models: tuple[Any, ...]
    human_scores: tuple[Any, ...]


def group_id(row_id: str, subset: int) -> str:
    """The group a row belongs to, by the authors' rule (K = 2: the row itself)."""
    if subset == 2:
        return row_id
    return row_id.split("_")[0] if "_" in row_id else row_id[:10]


def parse_comparison(value: Any, subset: int) -> tuple[str, str]:
    """``"AvsC"`` -> ``("A", "C")``; K = 2 rows without one compare A with B. ValueError when unreadable."""
    if subset == 2 and value in (None, ""):
        return "A", "B"
    match = _COMPARISON.match(str(value).strip())
    if not match or match.group(1) == match.group(2) or LETTERS.index(match.group(2)) >= subset:
        raise ValueError(f"comparison_type is {value!r}, not 'XvsY' with X, Y among {list(LETTERS[:subset])}")
    return match.group(1), match.group(2)


def parse_verdict(value: Any, first: str, second: str) -> int:
    """The human label of (first, second) from a ranking string: +1, -1, or 0 for a K = 2 tie."""
    text = str(value).replace(" ", "")
    if (first, second) == ("A", "B") and text in TIE_VOTES:
        return 0
    match = _VERDICT.match(text)
    if not match or {match.group(1), match.group(3)} != {first, second}:
        raise ValueError(f"ranking is {value!r}, not a verdict on {first} and {second} ('{first}>{second}' ...)")
    winner = match.group(1) if match.group(2) == ">" else match.group(3)
    return 1 if winner == first else -1


def ranking_from_labels(k: int, labels: Sequence[int]) -> Ranking:
    """The human ranking of a group from its pair labels (over ``combinations(range(k), 2)``): the strict order
    the labels form, TIE for a tied pair of two, None when they form no strict order (ties among more, cycles)."""
    if k == 2 and labels[0] == 0:
        return TIE
    if any(label == 0 for label in labels):
        return None
    wins = [0] * k
    for (i, j), label in zip(combinations(range(k), 2), labels, strict=True):
        wins[i if label > 0 else j] += 1
    if sorted(wins) != list(range(k)):
        return None  # a cycle: no candidate order agrees with every pair
    return tuple(sorted(range(k), key=lambda i: -wins[i]))


def build_groups(rows: Sequence[PairRow], subset: int) -> tuple[list[EditGroup], list[str]]:
    """Groups of one subset from its rows, in order of first appearance; and messages for groups left out."""
    by_group: dict[str, list[PairRow]] = {}
    for row in rows:
        by_group.setdefault(group_id(row.id, subset), []).append(row)
    letters = LETTERS[:subset]
    pairs = list(combinations(range(subset), 2))
    groups, bad = [], []
    for gid, members in by_group.items():
        labels: dict[tuple[int, int], int] = {}
        image: dict[int, Path] = {}
        model: dict[int, Any] = {}
        human: dict[int, Any] = {}
        repeated = []
        for row in members:
            i, j = letters.index(row.first), letters.index(row.second)
            key, label = ((i, j), row.label) if i < j else ((j, i), -row.label)
            if key in labels:
                repeated.append(f"{letters[key[0]]}vs{letters[key[1]]}")
            labels[key] = label
            for index, path, name, score in zip((i, j), row.images, row.models, row.human_scores, strict=True):
                image.setdefault(index, path)
                model.setdefault(index, name)
                human.setdefault(index, score)
        missing = [f"{letters[i]}vs{letters[j]}" for i, j in pairs if (i, j) not in labels]
        if missing or repeated:
            problems = ([f"missing pairs {missing}"] if missing else []) + (
                [f"repeated pairs {repeated}"] if repeated else []
            )
            bad.append(f"{subset}pair group {gid}: {', '.join(problems)}")
            continue
        pair_labels = tuple(labels[p] for p in pairs)
        groups.append(
            EditGroup(
                id=gid,
                subset=subset,
                instruction=members[0].instruction,
                source=members[0].source,
                candidates=tuple(image[i] for i in range(subset)),
                pair_labels=pair_labels,
                ranking=ranking_from_labels(subset, pair_labels),
                models=tuple(model[i] for i in range(subset)),
                human_scores=tuple(human[i] for i in range(subset)),
            )
        )
    return groups, bad


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "group"


def _read_subset(data_dir: Path, subset: int) -> tuple[list[PairRow], list[str]]:
    """The rows of one subset's parquet files with their images written under ``DIR/media``; bad-row messages."""
    media = data_dir / "media" / f"{subset}pair"
    rows, bad = [], []
    # One file at a time: the shards hold the images (hundreds of MB each), only paths are kept.
    for path in sorted((data_dir / f"{subset}pair").glob("*.parquet")):
        for index, row in enumerate(read_parquet_rows([path], COLUMNS)):
            where = f"{path.name} row {index}"
            try:
                row_id = str(row["id"])
                first, second = parse_comparison(row.get("comparison_type"), subset)
                label = parse_verdict(row["ranking"], first, second)
            except ValueError as err:
                bad.append(f"{subset}pair {where}: {err}")
                continue
            stem = media / _file_stem(group_id(row_id, subset))
            rows.append(
                PairRow(
                    id=row_id,
                    instruction=str(row["instruction"]),
                    first=first,
                    second=second,
                    label=label,
                    source=write_image(row["source_image"], stem.with_name(stem.name + "_source"), where),
                    images=(
                        write_image(row["candidate_1"], stem.with_name(f"{stem.name}_{first}"), where),
                        write_image(row["candidate_2"], stem.with_name(f"{stem.name}_{second}"), where),
                    ),
                    models=(row.get("model_1"), row.get("model_2")),
                    human_scores=(row.get("score_1"), row.get("score_2")),
                )
            )
    return rows, bad


def _ranks(k: int, labels: Sequence[int]) -> tuple[float, ...]:
    """Rank of each candidate (lower is better): 1 + the number of candidates the humans put above it."""
    beaten = [0] * k
    for (i, j), label in zip(combinations(range(k), 2), labels, strict=True):
        if label > 0:
            beaten[j] += 1
        elif label < 0:
            beaten[i] += 1
    return tuple(1.0 + b for b in beaten)


def load(data_dir: str | Path, *, download_missing: bool = False) -> Benchmark:
    """Load EditReward-Bench from ``data_dir`` in the released layout (``download_missing`` fetches it first)."""
    data_dir = Path(data_dir).expanduser()
    if download_missing:
        hub_download(SOURCE, data_dir)
    data_dir = check_data_dir(data_dir, SOURCE)
    present = [k for k in SUBSETS if any((data_dir / f"{k}pair").glob("*.parquet"))]
    if not present:
        raise BenchmarkDataError(f"no EditReward-Bench parquet file under {str(data_dir)!r}. {SOURCE.how_to_get()}")
    groups: list[RankedGroup] = []
    notes, bad = [], []
    sizes = {}
    for k in present:
        rows, bad_rows = _read_subset(data_dir, k)
        subset_groups, bad_groups = build_groups(rows, k)
        bad += bad_rows + bad_groups
        sizes[f"K={k}"] = len(subset_groups)
        unreadable = sum(g.ranking is None for g in subset_groups)
        ties = sum(g.ranking == TIE for g in subset_groups)
        notes.append(
            f"K={k}: {len(subset_groups)} groups ({len(rows)} pair rows)"
            + (f", {ties} human ties" if ties else "")
            + (f", {unreadable} without a strict human order (counted wrong)" if unreadable else "")
        )
        groups += [
            RankedGroup(
                id=f"{k}pair/{g.id}",
                prompt=g.instruction,
                media=g.candidates,
                ranks=_ranks(k, g.pair_labels),
                meta={
                    "subset": k,
                    "source_image": str(g.source),
                    "pair_labels": list(g.pair_labels),
                    "ranking": g.ranking if g.ranking in (TIE, None) else list(g.ranking),
                    "models": list(g.models),
                    "human_scores": list(g.human_scores),
                },
            )
            for g in subset_groups
        ]
    absent = [f"{k}pair" for k in SUBSETS if k not in present]
    if absent:
        notes.append(f"subsets {absent} not found under the data directory: left out (the reference skips them too)")
    if bad:
        shown = "; ".join(bad[:_SHOWN_BAD]) + (
            f"; ... and {len(bad) - _SHOWN_BAD} more" if len(bad) > _SHOWN_BAD else ""
        )
        notes.append(f"{len(bad)} malformed rows or groups left out: {shown}")
    if not groups:
        raise BenchmarkDataError(f"no readable EditReward-Bench group under {str(data_dir)!r}: {'; '.join(notes)}")
    notes.append(
        "strict ranking accuracy per K and pooled (the columns of the EditReward README's EditReward-Bench table); "
        "pairwise accuracy with ties for K=2 and overall, without ties for K=3, 4, as the authors' "
        "evaluate_edit_reward_bench"
    )
    benchmark = Benchmark(
        name="tigerlab-editreward-bench",
        title="EditReward-Bench (TIGER-Lab)",
        media_kind="image",
        protocol="editreward",
        dims=("Overall",),
        source=SOURCE,
        headline="editreward_strict_accuracy",
        groups=groups,
        references=REFERENCES,
        notes=notes,
        subset_sizes=sizes,
    )
    check_media([*benchmark.media_paths(), *(Path(g.meta["source_image"]) for g in groups)], SOURCE, data_dir)
    return benchmark
