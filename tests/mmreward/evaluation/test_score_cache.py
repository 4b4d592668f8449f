"""Score cache: exact keys and fingerprints (recomputed here with hashlib), the file layout, loading cut-off and
corrupted files, scoring/judging/checking into the cache with retries, stats, progress and every message."""

import hashlib
import json
import math
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tqdm import auto as tqdm_auto
from tqdm import std as tqdm_std

from mmreward.errors import ConfigError
from mmreward.evaluation import score_cache
from mmreward.evaluation.score_cache import (
    ChecklistItem,
    MediaItem,
    PairItem,
    ScoreCache,
    ScoringStats,
    cache_path,
    check_into_cache,
    checklist_key,
    finished_cache,
    judge_pairs_into_cache,
    mark_finished,
    media_key,
    pair_key,
    request_digest,
    reward_fingerprint,
    score_into_cache,
)
from mmreward.rewards.base import PairwiseOutput, RewardOutput
from mmreward.rewards.brightness import BrightnessDeltaReward
from mmreward.testing import GreyAndPromptReward


@pytest.fixture(autouse=True)
def private_progress_lock(monkeypatch):
    """Progress bars share one inter-process lock and a monitor thread by default. The mutation runner forks a child
    per mutant and kills the ones that run too long; a child killed while holding that lock would hang every later
    child, so each test gets its own in-process lock and no monitor thread."""
    for bar in (tqdm_std.tqdm, tqdm_auto.tqdm):  # a subclass that made its own lock keeps it, so patch both
        monkeypatch.setattr(bar, "_lock", threading.RLock(), raising=False)
        monkeypatch.setattr(bar, "monitor_interval", 0)


def sha1_json(text: str) -> str:
    """The digest of an already serialised JSON text (what ``_digest`` must produce for its value)."""
    return hashlib.sha1(text.encode()).hexdigest()


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class ScriptedReward:
    """A pointwise reward whose output each test scripts by file name: ``nan`` files score NaN, ``bad`` files fail
    (with a finite score, to show that a failed item's score is dropped), others score ``len(prompt) + file size``."""

    uses_source = False

    def __init__(self, batch_size: int = 2) -> None:
        self.name = "Scripted"
        self.batch_size = batch_size
        self.calls: list[list[str]] = []

    def score(self, prompts: list[str], paths: list[str]) -> RewardOutput:
        self.calls.append(list(paths))
        scores, vq, failed, errors = [], [], [], []
        for prompt, path in zip(prompts, paths, strict=True):
            stem = Path(path).stem
            value = float(len(prompt) + Path(path).stat().st_size) if Path(path).is_file() else 0.0
            scores.append(math.nan if stem.startswith("nan") else value)
            vq.append(math.inf if stem.startswith("infdim") else value / 2)
            failed.append(stem.startswith("bad"))
            errors.append(f"cannot read {stem}" if stem.startswith("bad") else None)
        return RewardOutput(
            scores=torch.tensor(scores, dtype=torch.float64),
            dims={"VQ": torch.tensor(vq, dtype=torch.float64)},
            failed=torch.tensor(failed),
            errors=errors,
        )


def items_for(tmp_path: Path, names: list[str], prompt: str = "pp") -> list[MediaItem]:
    items = []
    for name in names:
        path = tmp_path / "media" / f"{name}.png"
        if not path.exists():
            write_file(path, b"x" * (len(name) + 1))
        items.append(MediaItem(prompt, path, media_key(prompt, path, tmp_path)))
    return items


# -------------------------------------------------------------------------------------------------------- keys


def test_media_key_digests_version_prompt_relative_path_and_size(tmp_path):
    path = write_file(tmp_path / "d" / "a.png", b"12345")
    assert media_key("a cat", path, tmp_path) == sha1_json('[1, "a cat", "d/a.png", 5]')
    # Without a root, or a root the file is not under, the path is kept as given.
    assert media_key("a cat", path) == sha1_json(json.dumps([1, "a cat", str(path), 5]))
    assert media_key("a cat", path, tmp_path / "other") == sha1_json(json.dumps([1, "a cat", str(path), 5]))
    # A missing file has size -1; a string path is accepted.
    missing = tmp_path / "gone.png"
    assert media_key("p", str(missing), tmp_path) == sha1_json('[1, "p", "gone.png", -1]')
    # The data directory can move: the same relative layout gives the same key.
    moved = write_file(tmp_path / "moved" / "d" / "a.png", b"12345")
    assert media_key("a cat", moved, tmp_path / "moved") == media_key("a cat", path, tmp_path)
    # Prompt, size and name all change it.
    write_file(moved, b"123456")
    assert media_key("a cat", moved, tmp_path / "moved") != media_key("a cat", path, tmp_path)
    assert media_key("a dog", path, tmp_path) != media_key("a cat", path, tmp_path)
    # An edit's key also names its source file (relative path and size), appended last.
    source = write_file(tmp_path / "s" / "src.png", b"123")
    assert media_key("a cat", path, tmp_path, source) == sha1_json('[1, "a cat", "d/a.png", 5, "s/src.png", 3]')


def test_media_key_changes_with_the_cache_version(tmp_path, monkeypatch):
    path = write_file(tmp_path / "a.png", b"1")
    monkeypatch.setattr(score_cache, "CACHE_VERSION", 2)
    assert media_key("p", path, tmp_path) == sha1_json('[2, "p", "a.png", 1]')


def test_pair_and_checklist_keys():
    assert pair_key("p", "ka", "kb", "both") == sha1_json('[1, "p", "ka", "kb", "both"]')
    assert pair_key("p", "kb", "ka", "both") != pair_key("p", "ka", "kb", "both")
    path = Path("/nowhere/x.png")
    inner = media_key("p", path)
    assert checklist_key("p", [("color", "is it red"), ("count", "two cats")], path) == sha1_json(
        json.dumps([1, inner, [["color", "is it red"], ["count", "two cats"]]])
    )
    inner = sha1_json('[1, "p", "x.png", -1]')  # relative to the root given
    assert checklist_key("p", [("color", "red")], path, Path("/nowhere")) == sha1_json(
        json.dumps([1, inner, [["color", "red"]]])
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=6, unique=True), st.randoms(use_true_random=False))
def test_request_digest_ignores_the_order_of_the_keys(keys, rnd):
    shuffled = list(keys)
    rnd.shuffle(shuffled)
    assert request_digest("no-such-spec", {"b": 1}, keys) == request_digest("no-such-spec", {"b": 1}, shuffled)
    assert request_digest("no-such-spec", {"b": 1}, keys) != request_digest("no-such-spec", {"b": 1}, [*keys, "+"])


def test_request_digest_value_and_what_changes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(score_cache, "PRESET_DIR", tmp_path / "presets")
    keys_digest = sha1_json('["a", "b"]')
    expected = sha1_json(
        json.dumps([1, {"keys": keys_digest, "overrides": {"x": 1, "y": [2]}, "spec": "none"}], sort_keys=True)
    )
    assert request_digest("none", {"y": [2], "x": 1}, ["b", "a"]) == expected
    assert request_digest("none", {"x": 2}, ["a"]) != request_digest("none", {"x": 1}, ["a"])
    preset = write_file(tmp_path / "presets" / "mine.yaml", b"a: 1\n")
    before = request_digest("mine", {}, ["a"])
    preset.write_bytes(b"a: 2\n")
    assert request_digest("mine", {}, ["a"]) != before


# ------------------------------------------------------------------------------------------------ fingerprints


def test_reward_fingerprint_of_a_name_that_stands_for_nothing():
    reward = GreyAndPromptReward(batch_size=3, video_num_frames=None, video_fps=2.0, max_pixels=1000)
    reward.weights_id = "w@1"
    assert reward_fingerprint(reward, "no-such-reward") == {
        "spec": "no-such-reward",
        "class": "mmreward.testing.GreyAndPromptReward",
        "kind": "pointwise",
        "weights": "w@1",
        "dims": [],
        "dtype": "torch.float32",
        "video_fps": 2.0,
        "video_num_frames": None,
        "frame_rule": None,
        "max_pixels": 1000,
        "pairwise_scale": 1.0,
    }
    reward.frame_rule = "round"
    reward.dims = ("VQ", "TA")
    fingerprint = reward_fingerprint(reward, "no-such-reward")
    assert (fingerprint["frame_rule"], fingerprint["dims"]) == ("round", ["VQ", "TA"])


def test_registered_preset_local_file_and_directory_contents(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    monkeypatch.setattr(score_cache, "PRESET_DIR", presets)
    monkeypatch.chdir(tmp_path)
    reward = GreyAndPromptReward()
    # A registry name: its shipped preset's text, undecodable bytes replaced rather than refused.
    write_file(presets / "mine.yaml", b"name: grey\n\xff\n")
    text = "name: grey\n\ufffd\n"
    assert reward_fingerprint(reward, "mine")["spec_file"] == sha1_json(json.dumps(text))
    # A registry-like name with a slash is a path, not a preset (presets/sub/x.yaml is not consulted) ...
    write_file(presets / "sub" / "x.yaml", b"a")
    assert "spec_file" not in reward_fingerprint(reward, "sub/x")
    # ... and a path with a slash is read even though no preset has its name.
    write_file(tmp_path / "sub" / "y.yaml", b"b: 1")
    assert reward_fingerprint(reward, "sub/y.yaml")["spec_file"] == sha1_json('"b: 1"')
    # A bare name that is no preset but a file in the working directory is read as a file.
    write_file(tmp_path / "local.yaml", b"c")
    assert reward_fingerprint(reward, "local.yaml")["spec_file"] == sha1_json('"c"')
    # A saved directory: names, sizes and modification times, sorted.
    saved = tmp_path / "saved"
    b = write_file(saved / "b.bin", b"12")
    a = write_file(saved / "a.bin", b"1")
    os.utime(a, ns=(1, 1_000_000_001))
    os.utime(b, ns=(1, 2_000_000_002))
    fingerprint = reward_fingerprint(reward, str(saved))
    assert fingerprint["spec_dir"] == sha1_json('[["a.bin", 1, 1000000001], ["b.bin", 2, 2000000002]]')
    assert "spec_file" not in fingerprint
    os.utime(b, ns=(1, 3_000_000_003))  # retrained weights saved to the same place
    assert reward_fingerprint(reward, str(saved))["spec_dir"] != fingerprint["spec_dir"]


# ------------------------------------------------------------------------------------------------- file layout


def test_cache_path_slug_and_fingerprint_digest(tmp_path):
    fingerprint = {"z": 1, "a": Path("w")}  # unordered keys and a value JSON cannot hold as such
    digest = sha1_json('{"a": "w", "z": 1}')[:12]
    assert (
        cache_path(tmp_path, "  Big Model/v1.5 (fast)  ", fingerprint)
        == tmp_path / f"Big_Model_v1.5_fast-{digest}.jsonl"
    )
    assert cache_path(tmp_path, "__a__", fingerprint).name == f"a-{digest}.jsonl"
    assert cache_path(tmp_path, "!!!", fingerprint).name == f"reward-{digest}.jsonl"
    assert cache_path(tmp_path, "X_a_X", fingerprint).name == f"X_a_X-{digest}.jsonl"  # only underscores are trimmed
    assert cache_path(str(tmp_path), "b" * 70, fingerprint).name == f"{'b' * 60}-{digest}.jsonl"
    assert cache_path(tmp_path, "a", {"z": 2}) != cache_path(tmp_path, "a", {"z": 1})


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=80))
def test_cache_path_name_is_always_a_safe_file_name(name):
    stem = cache_path(Path("/c"), name, {}).stem
    slug, digest = stem.rsplit("-", 1)
    assert len(digest) == 12 and 1 <= len(slug) <= 60
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in slug)


# ------------------------------------------------------------------------------------------------------ ScoreCache


def test_new_cache_writes_its_header_in_nested_directories(tmp_path):
    cache = ScoreCache(tmp_path / "a" / "b", "r", {"k": "é"})
    assert cache.path.parent == tmp_path / "a" / "b"
    assert cache.path.read_bytes() == b'{"fingerprint": {"k": "\\u00e9"}}\n'
    assert (len(cache), cache.skipped_lines, cache.fingerprint, cache.get("x"), "x" in cache) == (
        0,
        0,
        {"k": "é"},
        None,
        False,
    )


def test_add_get_round_trip_and_reload(tmp_path):
    cache = ScoreCache(tmp_path, "r", {"k": 1})
    records = [{"key": "a", "score": 1.5}, {"key": "b", "score": None}]
    cache.add(iter(records))  # any iterable, consumed once
    assert (len(cache), cache.get("a"), "b" in cache, "c" in cache) == (2, records[0], True, False)
    assert cache.path.read_text().splitlines()[1:] == ['{"key": "a", "score": 1.5}', '{"key": "b", "score": null}']
    again = ScoreCache(tmp_path, "r", {"k": 1})
    assert (again.records, again.skipped_lines) == ({"a": records[0], "b": records[1]}, 0)
    # A well-formed file is left as it is (no blank line appended).
    assert again.path.read_text().count("\n") == 3
    cache.add([{"key": "a", "score": 2.0}])  # a later record of a key wins
    assert ScoreCache(tmp_path, "r", {"k": 1}).get("a") == {"key": "a", "score": 2.0}
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        cache.add([{"key": "n", "score": math.nan}])


def test_cut_off_and_corrupted_lines_are_skipped_and_not_glued(tmp_path):
    cache = ScoreCache(tmp_path, "r", {"k": 1})
    header = cache.path.read_text()
    cache.path.write_text(header + '{"key": "a"}\nnot json\n{"key": "b"}\n{"key": "c", "sco')
    loaded = ScoreCache(tmp_path, "r", {"k": 1})
    assert (sorted(loaded.records), loaded.skipped_lines) == (["a", "b"], 2)
    assert loaded.path.read_text().endswith('"sco\n')  # the partial line is closed once
    loaded.add([{"key": "c"}])
    reloaded = ScoreCache(tmp_path, "r", {"k": 1})
    assert (sorted(reloaded.records), reloaded.skipped_lines) == (["a", "b", "c"], 2)
    assert (
        reloaded.path.read_text() == header + '{"key": "a"}\nnot json\n{"key": "b"}\n{"key": "c", "sco\n{"key": "c"}\n'
    )


def test_header_that_only_serialises_the_same_is_accepted(tmp_path):
    fingerprint = {"dims": ("VQ",), "where": Path("w")}
    path = cache_path(tmp_path, "r", fingerprint)
    path.write_text('{"fingerprint": {"dims": ["VQ"], "where": "w"}}\n{"key": "a"}\n')
    assert ScoreCache(tmp_path, "r", fingerprint).get("a") == {"key": "a"}


@pytest.mark.parametrize("text", ["", "{not json\n", '{"fingerprint": {"k": 2}}\n', '{"other": 1}\n'])
def test_a_file_of_another_configuration_is_refused(tmp_path, text):
    path = cache_path(tmp_path, "r", {"k": 1})
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        ScoreCache(tmp_path, "r", {"k": 1})
    assert str(raised.value) == (
        f"score cache {str(path)!r} was written for another reward configuration; delete it or use another "
        "--output-dir"
    )
    assert path.read_text() == text


# ---------------------------------------------------------------------------------------------------- stats


def test_stats_count_failures_keeps_the_first_five_reasons():
    cache = SimpleNamespace(get=lambda key: {"error": None if key.startswith("ok") else f"bad {key}"})
    stats = ScoringStats(total=9, cached=2, scored=7)
    stats.count_failures(cache, [(f"k{i}", f"item{i}") for i in range(7)] + [("ok", "fine")])
    assert stats.to_dict() == {
        "total": 9,
        "from_cache": 2,
        "newly_scored": 7,
        "failed": 7,
        "errors": [f"item{i}: bad k{i}" for i in range(5)],
    }
    assert ScoringStats().to_dict() == {"total": 0, "from_cache": 0, "newly_scored": 0, "failed": 0, "errors": []}


# ---------------------------------------------------------------------------------------------- scoring items


def test_score_into_cache_records_scores_failures_and_resumes(tmp_path):
    reward = ScriptedReward(batch_size=2)
    items = items_for(tmp_path, ["a", "bad1", "nan1", "infdim", "a"])
    cache = ScoreCache(tmp_path / "cache", "r", {"k": 1})
    stats = score_into_cache(reward, items, cache, progress=False)
    media = tmp_path / "media"
    assert reward.calls == [
        [str(media / "a.png"), str(media / "bad1.png")],
        [str(media / "nan1.png"), str(media / "infdim.png")],
    ]
    assert stats.to_dict() == {
        "total": 4,
        "from_cache": 0,
        "newly_scored": 4,
        "failed": 2,
        "errors": [
            f"{media / 'bad1.png'}: cannot read bad1",
            f"{media / 'nan1.png'}: the reward returned a non-finite score",
        ],
    }
    assert cache.get(items[0].key) == {
        "key": items[0].key,
        "prompt": "pp",
        "path": str(media / "a.png"),
        "score": 4.0,
        "dims": {"VQ": 2.0},
        "error": None,
    }
    assert cache.get(items[1].key) == {
        "key": items[1].key,
        "prompt": "pp",
        "path": str(media / "bad1.png"),
        "score": None,
        "dims": {},
        "error": "cannot read bad1",
    }
    assert (cache.get(items[2].key)["score"], cache.get(items[2].key)["dims"]) == (None, {})
    assert cache.get(items[3].key)["dims"] == {"VQ": None} and cache.get(items[3].key)["score"] == 9.0
    # A rerun scores nothing; with retry_failed only the failed items are scored again.
    resumed = score_into_cache(reward, items, ScoreCache(tmp_path / "cache", "r", {"k": 1}), progress=False)
    assert (resumed.total, resumed.cached, resumed.scored, resumed.failed, len(reward.calls)) == (4, 4, 0, 2, 2)
    retried = score_into_cache(
        reward, items, ScoreCache(tmp_path / "cache", "r", {"k": 1}), retry_failed=True, progress=False
    )
    assert (retried.cached, retried.scored, retried.failed) == (2, 2, 2)
    assert reward.calls[-1] == [str(media / "bad1.png"), str(media / "nan1.png")]


@settings(max_examples=20, deadline=None)
@given(st.permutations(["a", "b", "c", "a", "b"]))
def test_distinct_items_are_scored_once_whatever_their_order(tmp_path_factory, names):
    tmp_path = tmp_path_factory.mktemp("order")
    reward = ScriptedReward(batch_size=10)
    items = items_for(tmp_path, names)
    cache = ScoreCache(tmp_path / "cache", "r", {"k": 1})
    stats = score_into_cache(reward, items, cache, progress=False)
    assert (stats.total, stats.scored, len(cache), len(reward.calls[0])) == (3, 3, 3, 3)
    assert all(cache.get(item.key)["path"] == str(item.path) for item in items)


def test_progress_bar_output(tmp_path, capsys):
    reward = ScriptedReward(batch_size=2)
    items = items_for(tmp_path, ["a", "b", "c"])
    score_into_cache(reward, items, ScoreCache(tmp_path / "c1", "r", {"k": 1}))  # progress is on by default
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[0].startswith("scoring with Scripted:   0%|") and lines[0].endswith("| 0/3 [00:00<?, ?item/s]")
    assert lines[-1].startswith("scoring with Scripted: 100%|") and "| 3/3 [" in lines[-1]
    assert lines[-1].endswith("item/s]") or lines[-1].endswith("s/item]")
    score_into_cache(reward, items[:1], ScoreCache(tmp_path / "c2", "r", {"k": 1}), progress=True)
    assert "| 1/1 [" in capsys.readouterr().err
    score_into_cache(reward, items, ScoreCache(tmp_path / "c3", "r", {"k": 1}), progress=False)
    score_into_cache(reward, items, ScoreCache(tmp_path / "c3", "r", {"k": 1}), progress=True)  # nothing to do
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- pairwise judges


class ScriptedJudge:
    def __init__(self) -> None:
        self.name = "Judge"
        self.batch_size = 2
        self.calls: list[tuple] = []

    def compare(self, prompts, media_a, media_b, *, orders):
        self.calls.append((list(prompts), list(media_a), list(media_b), orders))
        n = len(prompts)
        prob = [math.nan if "nan" in a else 0.25 for a in media_a]
        failed = ["bad" in a for a in media_a]
        return PairwiseOutput(
            prob_a=torch.tensor(prob, dtype=torch.float64),
            tie=torch.tensor([0.5] * n, dtype=torch.float64),
            consistent=torch.tensor([i % 2 == 0 for i in range(n)]),
            failed=torch.tensor(failed),
            errors=["unparsable" if f else None for f in failed],
        )


def test_judge_pairs_into_cache(tmp_path, capsys):
    judge = ScriptedJudge()
    pairs = [PairItem("p", Path(a), Path("/m/z.png"), f"k{a}") for a in ["/m/a.png", "/m/bad.png", "/m/nan.png"]]
    cache = ScoreCache(tmp_path, "j", {"k": 1})
    stats = judge_pairs_into_cache(judge, [*pairs, pairs[0]], cache, orders="ab")
    assert judge.calls[0] == (["p", "p"], ["/m/a.png", "/m/bad.png"], ["/m/z.png", "/m/z.png"], "ab")
    assert cache.get("k/m/a.png") == {
        "key": "k/m/a.png",
        "prompt": "p",
        "a": "/m/a.png",
        "b": "/m/z.png",
        "prob_a": 0.25,
        "tie": 0.5,
        "consistent": True,
        "error": None,
    }
    assert cache.get("k/m/bad.png")["prob_a"] is None and cache.get("k/m/bad.png")["consistent"] is False
    assert stats.to_dict() == {
        "total": 3,
        "from_cache": 0,
        "newly_scored": 3,
        "failed": 2,
        "errors": [
            "/m/bad.png vs /m/z.png: unparsable",
            "/m/nan.png vs /m/z.png: the judge returned a non-finite probability",
        ],
    }
    assert "judging with Judge: 100%|" in capsys.readouterr().err  # progress on by default
    judge_pairs_into_cache(judge, pairs, cache, retry_failed=True, progress=False)
    assert judge.calls[-1][1:] == (["/m/bad.png", "/m/nan.png"], ["/m/z.png", "/m/z.png"], "both")
    assert judge_pairs_into_cache(judge, pairs, cache).scored == 0 and capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- checklist judges


class ScriptedChecker:
    def __init__(self, rationales: bool = True) -> None:
        self.name = "Checker"
        self.batch_size = 3
        self.rationales = rationales
        self.calls: list[tuple] = []

    def check(self, prompts, paths, points):
        self.calls.append((list(prompts), list(paths), [list(p) for p in points]))
        p_yes = [None if "none" in p else [0.9, math.nan] if "nan" in p else [0.9, 0.5] for p in paths]
        failed = ["bad" in p for p in paths]
        return SimpleNamespace(
            p_yes=p_yes,
            failed=failed,
            # A reason on an item not marked failed is not a failure.
            errors=["no answer" if f else "a remark" for f in failed],
            rationales=[f"text {p}" for p in paths] if self.rationales else None,
        )


def test_check_into_cache(tmp_path, capsys):
    judge = ScriptedChecker()
    points = (("red", "is it red"), ("two", "two cats"))
    items = [ChecklistItem("p", Path(f"/m/{n}.png"), points, f"k{n}") for n in ["a", "bad", "nan", "none"]]
    cache = ScoreCache(tmp_path, "c", {"k": 1})
    stats = check_into_cache(judge, items, cache)
    assert judge.calls[0] == (["p"] * 3, ["/m/a.png", "/m/bad.png", "/m/nan.png"], [list(points)] * 3)
    assert cache.get("ka") == {
        "key": "ka",
        "prompt": "p",
        "path": "/m/a.png",
        "points": ["red", "two"],
        "p_yes": [0.9, 0.5],
        "passed": [True, False],
        "error": None,
        "text": "text /m/a.png",
    }
    assert cache.get("kbad")["p_yes"] is None and cache.get("kbad")["passed"] is None
    assert stats.to_dict()["errors"] == [
        "/m/bad.png: no answer",
        "/m/nan.png: the judge returned no finite verdicts",
        "/m/none.png: the judge returned no finite verdicts",
    ]
    assert "checking with Checker: 100%|" in capsys.readouterr().err
    quiet = ScriptedChecker(rationales=False)
    check_into_cache(quiet, items, cache, retry_failed=True, progress=False)
    assert quiet.calls[0][1] == ["/m/bad.png", "/m/nan.png", "/m/none.png"]
    assert cache.get("kbad")["text"] is None and capsys.readouterr().err == ""
    assert check_into_cache(quiet, items, cache).scored == 0 and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------- finished requests


def test_mark_finished_and_finished_cache(tmp_path):
    assert finished_cache(tmp_path, "req") is None  # no index yet
    cache = ScoreCache(tmp_path, "my-re-ward", {"k": 1})  # the name is what precedes the last dash
    cache.add([{"key": "a"}])
    mark_finished(tmp_path, "req", cache)
    mark_finished(tmp_path, "other", cache)
    index = tmp_path / "finished.json"
    assert index.read_text() == json.dumps({"other": cache.path.name, "req": cache.path.name}, indent=1) + "\n"
    assert not (tmp_path / "finished.json.partial").exists()
    found = finished_cache(tmp_path, "req")
    assert (found.path, found.records) == (cache.path, {"a": {"key": "a"}})
    assert finished_cache(tmp_path, "unknown") is None
    # A cache renamed by hand, or with an unreadable header, is scored again rather than trusted.
    renamed = cache.path.with_name("my-re-ward-000000000000.jsonl")
    renamed.write_text(cache.path.read_text())
    index.write_text(json.dumps({"req": renamed.name}))
    assert finished_cache(tmp_path, "req") is None
    for text in ["", "{bad\n", '{"no": 1}\n', "[1]\n"]:
        renamed.write_text(text)
        assert finished_cache(tmp_path, "req") is None
    index.write_text(json.dumps({"req": "missing.jsonl"}))
    assert finished_cache(tmp_path, "req") is None
    index.write_text("{cut")
    assert finished_cache(tmp_path, "req") is None
    mark_finished(tmp_path, "req", cache)  # an unreadable index is replaced
    assert json.loads(index.read_text()) == {"req": cache.path.name}


def test_a_source_reward_gets_each_items_source_and_refuses_items_without(tmp_path):
    dark, bright = tmp_path / "dark.png", tmp_path / "bright.png"
    Image.new("RGB", (8, 8), (51, 51, 51)).save(dark)
    Image.new("RGB", (8, 8), (204, 204, 204)).save(bright)
    reward = BrightnessDeltaReward()
    cache = ScoreCache(tmp_path / "cache", "delta", {"k": 1})
    # The same edit against two sources: two items, two keys, two scores.
    items = [MediaItem("p", bright, media_key("p", bright, tmp_path, src), src) for src in (dark, bright)]
    assert items[0].key != items[1].key != media_key("p", bright, tmp_path)
    stats = score_into_cache(reward, items, cache, progress=False)
    assert (stats.total, stats.scored, stats.failed) == (2, 2, 0)
    assert cache.get(items[0].key)["score"] == pytest.approx(0.6, abs=1e-6)
    assert cache.get(items[1].key)["score"] == pytest.approx(0.0, abs=1e-6)
    assert cache.get(items[0].key)["source"] == str(dark)
    with pytest.raises(ConfigError, match="1 of 2 items have none"):
        score_into_cache(reward, [items[0], MediaItem("p", bright, "k2")], cache, progress=False)


def test_rewards_that_use_the_source_get_each_items_source(tmp_path):
    from mmreward import media
    from mmreward.rewards.brightness import BrightnessDeltaReward

    files = {}
    for name, level in (("edit", 0.6), ("source_a", 0.2), ("source_b", 0.5)):
        files[name] = tmp_path / f"{name}.png"
        media.save_media(torch.full((3, 8, 8), level), files[name])
    items = [
        MediaItem("brighter", files["edit"], f"k{i}", source=files[src])
        for i, src in enumerate(("source_a", "source_b"))
    ]
    cache = ScoreCache(tmp_path / "cache", "delta", {"k": 1})
    score_into_cache(BrightnessDeltaReward(), items, cache, progress=False)
    # one edit, two sources: 0.6 - 0.2 and 0.6 - 0.5 (8-bit levels)
    assert cache.get("k0")["score"] == pytest.approx(round(0.6 * 255) / 255 - round(0.2 * 255) / 255, abs=1e-6)
    assert cache.get("k1")["score"] == pytest.approx(round(0.6 * 255) / 255 - round(0.5 * 255) / 255, abs=1e-6)
    with pytest.raises(ConfigError, match="compares each edit with its source image, but 1 of 1 items have none"):
        score_into_cache(BrightnessDeltaReward(), [MediaItem("x", files["edit"], "k2")], cache, progress=False)
