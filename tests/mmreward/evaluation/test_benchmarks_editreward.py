"""TIGER-Lab's EditReward-Bench loader: the Hub layout (one row per pair) rebuilt into groups with their sources."""

from pathlib import Path

import pytest
from PIL import Image

from mmreward.evaluation.benchmarks import BenchmarkDataError, editreward_bench, load_benchmark
from mmreward.evaluation.benchmarks.editreward_bench import (
    PairRow,
    build_groups,
    parse_comparison,
    parse_verdict,
    ranking_from_labels,
)
from tests.eval_fixtures import EDITREWARD_GROUPS, write_editreward_bench_standin


def grey(path: Path) -> int:
    return Image.open(path).convert("L").getpixel((0, 0))


def test_loader_rebuilds_groups_candidates_rankings_and_sources(tmp_path):
    data = write_editreward_bench_standin(tmp_path / "data")
    bench = load_benchmark("tigerlab-editreward-bench", data)
    assert bench.protocol == "editreward" and bench.headline == "editreward_strict_accuracy"
    assert [g.id for g in bench.groups] == ["2pair/s1", "2pair/s2", "2pair/s3", "3pair/t1", "3pair/t2", "4pair/u1"]
    expected = {f"{k}pair/{gid}": (ranking, src, levels) for k, gid, ranking, src, levels in EDITREWARD_GROUPS}
    for group in bench.groups:
        ranking, source, levels = expected[group.id]
        # Every candidate is the image its letter names, whichever row (candidate_1 or _2) wrote it.
        assert [grey(p) for p in group.media] == list(levels)
        assert grey(Path(group.meta["source_image"])) == source
        assert group.prompt == f"brighten the scene ({group.id.split('/')[1]})"
        assert group.meta["models"] == [f"model-{x}" for x in "ABCD"[: len(levels)]]
    by_id = {g.id: g for g in bench.groups}
    assert by_id["2pair/s1"].meta["ranking"] == [0, 1] and by_id["2pair/s1"].ranks == (1.0, 2.0)
    assert by_id["2pair/s2"].meta["ranking"] == "tie" and by_id["2pair/s2"].meta["pair_labels"] == [0]
    assert by_id["3pair/t1"].meta["ranking"] == [2, 0, 1] and by_id["3pair/t1"].meta["pair_labels"] == [1, -1, -1]
    # The 4-candidate group's rows span two shards; its order D>B>A>C is rebuilt from the six pair verdicts.
    assert by_id["4pair/u1"].meta["ranking"] == [3, 1, 0, 2] and by_id["4pair/u1"].ranks == (3.0, 2.0, 4.0, 1.0)
    assert bench.subset_sizes == {"K=2": 3, "K=3": 2, "K=4": 1}
    notes = " ".join(bench.notes)
    assert "K=2: 3 groups (3 pair rows), 1 human ties" in notes
    assert "2 malformed rows or groups left out" in notes and "'AvsE'" in notes and "group t3: missing" in notes


def test_pair_verdicts_and_rankings_are_read_as_the_authors_write_them():
    assert parse_comparison(None, 2) == ("A", "B") and parse_comparison("BvsD", 4) == ("B", "D")
    with pytest.raises(ValueError, match="'CvsD'"):
        parse_comparison("CvsD", 3)
    assert [parse_verdict(v, "A", "B") for v in ("A>B", "B>A", "A<B", "A=B", "A=B=Good", "A=B=Bad")] == [
        1,
        -1,
        -1,
        0,
        0,
        0,
    ]
    assert parse_verdict("D>B", "B", "D") == -1
    with pytest.raises(ValueError, match="verdict on A and C"):
        parse_verdict("A=C", "A", "C")  # ties exist only in two-candidate groups
    assert ranking_from_labels(3, [1, 1, 1]) == (0, 1, 2)
    assert ranking_from_labels(3, [1, -1, 1]) is None  # A>B, C>A, B>C: a cycle
    assert ranking_from_labels(2, [0]) == "tie"


def test_missing_data_says_where_the_benchmark_lives(tmp_path, monkeypatch):
    with pytest.raises(BenchmarkDataError, match="TIGER-Lab/EditReward-Bench"):
        load_benchmark("tigerlab-editreward-bench", tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkDataError, match="no EditReward-Bench parquet file"):
        load_benchmark("tigerlab-editreward-bench", tmp_path / "empty")
    fetched = []
    monkeypatch.setattr(
        editreward_bench,
        "hub_download",
        lambda source, data_dir: fetched.append(source.files) or write_editreward_bench_standin(data_dir),
    )
    bench = load_benchmark("tigerlab-editreward-bench", tmp_path / "fetched", download=True)
    assert fetched == [("2pair/*.parquet", "3pair/*.parquet", "4pair/*.parquet")] and len(bench.groups) == 6


def test_a_group_with_a_repeated_or_missing_pair_is_left_out_with_its_reason():
    def row(row_id, first, second, label):
        return PairRow(
            row_id, "x", first, second, label, Path("s.png"), (Path("a"), Path("b")), (None,) * 2, (None,) * 2
        )

    rows = [row("g_0", "A", "B", 1), row("g_1", "A", "B", -1), row("g_2", "B", "C", 1), row("h_0", "A", "B", 1)]
    groups, bad = build_groups(rows, 3)
    assert groups == []
    assert bad == [
        "3pair group g: missing pairs ['AvsC'], repeated pairs ['AvsB']",
        "3pair group h: missing pairs ['AvsC', 'BvsC']",
    ]
