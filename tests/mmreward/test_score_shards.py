"""The pieces of multi-process scoring: which items a process takes, the launch environment, row keys, part files
and their merge in input order (end to end with real processes: tests/mmreward/test_cli_processes.py)."""

from __future__ import annotations

import json

import pytest

from mmreward.errors import ConfigError
from mmreward.score_inputs import Item
from mmreward.score_shards import (
    PartWriter,
    Processes,
    batch_share,
    launched_processes,
    merged_rows,
    my_share,
    parts_dir,
    read_parts,
    remove_parts,
    row_key,
)


def test_shares_cover_the_missing_items_once():
    keys = [f"k{i}" for i in range(11)]
    done = {"k0", "k3", "k4"}
    shares = [my_share(keys, done, Processes(rank, 3)) for rank in range(3)]
    assert shares == [[1, 6, 9], [2, 7, 10], [5, 8]]
    assert my_share(keys, set(keys), Processes(0, 2)) == []


def test_launch_environment():
    assert launched_processes({}) == Processes(0, 1, 0)
    assert launched_processes({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Processes(3, 4, 1)
    with pytest.raises(ConfigError, match="RANK=4 does not fit WORLD_SIZE=4"):
        launched_processes({"WORLD_SIZE": "4", "RANK": "4"})


def test_row_keys_and_merge(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"1234")
    items = [Item(str(image), "a cat"), Item(str(image), "a dog"), Item("missing.png", None, error="no such file")]
    keys = [row_key(i, item) for i, item in enumerate(items)]
    assert json.loads(keys[0]) == [0, str(image), "a cat", 4] and json.loads(keys[2]) == [2, "missing.png", None, -1]
    directory = tmp_path / "parts"
    fingerprint = {"r": {"weight": 1.0}}
    for rank, positions in ((1, [2]), (0, [1, 0])):
        writer = PartWriter(directory, Processes(rank, 2), fingerprint)
        for position in positions:
            writer.write(keys[position], {"n": position})
        writer.close()
    assert [row["n"] for row in merged_rows(keys, directory, fingerprint)] == [0, 1, 2]
    assert len(read_parts(directory, fingerprint)) == 3
    with pytest.raises(ConfigError, match="1 items have no scored row"):
        list(merged_rows([*keys, "other"], directory, fingerprint))
    with pytest.raises(ConfigError, match="other rewards or options"):
        read_parts(directory, {"r": {"weight": 2.0}})


def test_batch_shares_give_whole_batches_round_robin():
    assert batch_share(7, 2, Processes(0, 2)) == [0, 1, 4, 5]
    assert batch_share(7, 2, Processes(1, 2)) == [2, 3, 6]
    assert batch_share(3, 4, Processes(1, 2)) == []
    assert batch_share(5, 2, Processes(0, 1)) == [0, 1, 2, 3, 4]


def test_parts_live_beside_the_output():
    assert parts_dir("runs/scores.jsonl").as_posix() == "runs/.scores.jsonl.parts"


def test_a_part_file_per_run_and_rank_and_cut_lines_are_skipped(tmp_path):
    first = PartWriter(tmp_path, Processes(1, 2), {"f": 1})
    first.write("a", {"n": 1})
    first.close()
    with first.path.open("a") as handle:
        handle.write('{"key": "b", "ro')
    second = PartWriter(tmp_path, Processes(1, 2), {"f": 1})
    second.close()
    assert [first.path.name, second.path.name] == ["part-000-rank00001.jsonl", "part-001-rank00001.jsonl"]
    assert read_parts(tmp_path, {"f": 1}) == {"a": {"n": 1}}


def test_the_launch_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launched_processes() == Processes(2, 3, 2)  # LOCAL_RANK defaults to RANK (one machine)
    with pytest.raises(ConfigError, match=r"RANK / WORLD_SIZE / LOCAL_RANK must be integers: .*'two'"):
        launched_processes({"WORLD_SIZE": "two"})


def test_row_keys_of_unreadable_items(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"1234")
    # a file that failed before scoring (e.g. a bad extension) and a file that vanished: size -1, not a stat
    assert json.loads(row_key(3, Item(str(image), None, error="unsupported")))[3] == -1
    assert json.loads(row_key(4, Item(str(tmp_path / "gone.png"), "p")))[3] == -1


def test_part_files_that_cannot_be_used(tmp_path):
    fingerprint = {"reward": {"weights": tmp_path / "weights"}}  # non-JSON values are written as text
    writer = PartWriter(tmp_path / "nested" / "parts", Processes(0, 1), fingerprint)
    writer.write("a", {"n": 1})
    writer.close()
    directory = writer.path.parent
    (directory / "part-000-rank00000.jsonl").rename(directory / "part-001-rank00000.jsonl")
    (directory / "part-000-rank00000.jsonl").write_text("")  # an empty file (stopped before its header)
    lines = (directory / "part-001-rank00000.jsonl").read_text().splitlines()
    lines.insert(1, '{"key": "cut')  # a damaged line does not hide the rows after it
    (directory / "part-001-rank00000.jsonl").write_text("\n".join(lines) + "\n")
    assert read_parts(directory, fingerprint) == {"a": {"n": 1}}
    (directory / "part-002-rank00000.jsonl").write_text("not json\n")
    message = (
        f"{directory / 'part-002-rank00000.jsonl'} holds rows scored with other rewards or options than this run's; "
        f"delete {directory} to score everything again, or run with the options it was started with"
    )
    with pytest.raises(ConfigError) as err:
        read_parts(directory, fingerprint)
    assert str(err.value) == message


def test_parts_are_removed_after_the_merge(tmp_path):
    PartWriter(tmp_path / "parts", Processes(0, 1), {}).close()
    remove_parts(tmp_path / "parts")
    assert not (tmp_path / "parts").exists()
    remove_parts(tmp_path / "parts")  # already gone (a rerun of a finished merge): nothing to do, no error
