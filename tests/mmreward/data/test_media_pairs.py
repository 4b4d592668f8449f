"""Pair tables for Flow-DPO (`mmreward.data.media_pairs.read_pair_table`): the preferred file is the one its
labels prefer, whichever column it stands in; a bad row is skipped alone with its reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmreward.data.media_pairs import read_pair_table
from mmreward.errors import ConfigError

DIMS = ["VQ", "MQ", "TA"]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    for name in ("x.mp4", "y.mp4"):
        (root / name).write_bytes(b"")
    return root


@settings(max_examples=40, deadline=None)
@given(
    x_in_a=st.booleans(),
    x_votes=st.lists(st.sampled_from(["x", "y", "same"]), min_size=3, max_size=3),
    decide=st.lists(st.sampled_from(DIMS), min_size=1, max_size=3, unique=True),
    suffix=st.sampled_from([".csv", ".jsonl"]),
)
def test_the_label_follows_the_file_whichever_column_it_is_in(media_dir, x_in_a, x_votes, decide, suffix):
    """Videos x and y, labels given as which file wins per dimension; written as A/B/same for the column order
    drawn. The chosen file is the majority winner over the deciding dimensions, a tie skips the row."""
    a, b = ("x.mp4", "y.mp4") if x_in_a else ("y.mp4", "x.mp4")
    letter = {a.removesuffix(".mp4"): "A", b.removesuffix(".mp4"): "B", "same": "same"}
    row = {"path_A": a, "path_B": b, "prompt": "a dog", **{d: letter[v] for d, v in zip(DIMS, x_votes, strict=True)}}
    table_path = media_dir / f"t{suffix}"
    if suffix == ".csv":
        table_path.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    else:
        table_path.write_text(json.dumps(row) + "\n")
    table = read_pair_table(table_path, label_columns=decide)
    votes = [x_votes[DIMS.index(d)] for d in decide]
    margin = votes.count("x") - votes.count("y")
    if margin == 0:
        assert table.pairs == [] and table.skipped[0].reason == f"tie on {', '.join(decide)}"
        return
    winner, loser = ("x.mp4", "y.mp4") if margin > 0 else ("y.mp4", "x.mp4")
    [pair] = table.pairs
    assert (pair.chosen, pair.rejected, pair.prompt) == (media_dir / winner, media_dir / loser, "a dog")


def test_chosen_rejected_layout_keeps_its_columns(media_dir):
    table_path = media_dir / "cr.csv"
    table_path.write_text("rejected,prompt,chosen\nx.mp4,p,y.mp4\n")
    [pair] = read_pair_table(table_path).pairs
    assert (pair.chosen.name, pair.rejected.name) == ("y.mp4", "x.mp4")


def test_spreadsheet_csv_with_byte_order_mark(media_dir):
    table_path = media_dir / "bom.csv"
    table_path.write_bytes("\ufeffprompt,chosen,rejected\np,x.mp4,y.mp4\n".encode())
    [pair] = read_pair_table(table_path).pairs
    assert pair.chosen.name == "x.mp4"


def test_bad_lines_and_rows_are_skipped_alone_with_their_reason(media_dir):
    table_path = media_dir / "mixed.jsonl"
    good = {"prompt": "p", "chosen": "x.mp4", "rejected": "y.mp4"}
    lines = [
        json.dumps(good),
        "{broken",
        json.dumps([1, 2]),
        json.dumps({"prompt": "p", "chosen": "x.mp4"}),
        json.dumps({**good, "rejected": "gone.mp4"}),
        json.dumps({**good, "prompt": " "}),
        json.dumps({**good, "chosen": "y.mp4", "rejected": "x.mp4"}),
    ]
    table_path.write_text("\n".join(lines) + "\n")
    table = read_pair_table(table_path)
    assert [(p.row, p.chosen.name) for p in table.pairs] == [(1, "x.mp4"), (7, "y.mp4")]
    reasons = {s.row: s.reason for s in table.skipped}
    assert reasons[2].startswith("line 2 is not JSON")
    assert reasons[3] == "line 3 is not a JSON object"
    assert reasons[4] == "no value for rejected"
    assert reasons[5] == f"missing file(s): {media_dir / 'gone.mp4'}"
    assert reasons[6] == "empty prompt"


def test_a_table_without_rows_is_a_config_error(media_dir):
    (media_dir / "empty.jsonl").write_text("{oops\n")
    with pytest.raises(ConfigError, match=r"has no rows \(line 1 is not JSON"):
        read_pair_table(media_dir / "empty.jsonl")
