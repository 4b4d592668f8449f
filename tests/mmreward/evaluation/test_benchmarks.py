"""Benchmark loaders on small fixtures in each benchmark's published file format (columns and fields as the
benchmarks' own code reads them; label files from data/ where mmreward ships them), including missing media,
wrong columns, wrong labels, another split, and --download without a reachable hub."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from mmreward.evaluation.benchmarks import (
    BenchmarkDataError,
    BenchmarkDownloadError,
    MissingMediaError,
    list_benchmarks,
    load_benchmark,
)
from mmreward.evaluation.benchmarks.base import SHIPPED_LABELS, extract_archive, unpack_once
from mmreward.testing import sample_images, sample_videos
from tests.eval_fixtures import (
    VIDEO_NAMES,
    jpeg_bytes,
    pickapic_rows,
    png_bytes,
    write_imagereward_fixture,
    write_parquet,
    write_videogen_fixture,
)

REPO = Path(__file__).resolve().parents[3]
SHIPPED_VOTES = json.loads((SHIPPED_LABELS / "genaibench_image_generation_votes.json").read_text())
MJ_RECORDS = json.loads((SHIPPED_LABELS / "mjbench_video_test.json").read_text())


def test_registry_lists_every_benchmark_of_the_issue():
    assert list_benchmarks() == [
        "genai-bench-edit",
        "genai-bench-image",
        "genai-bench-video",
        "hpdv2-test",
        "imagereward-test",
        "mjbench-video",
        "mmrb2",
        "pickapic-v2",
        "tigerlab-editreward-bench",
        "videogen-rewardbench",
    ]
    with pytest.raises(BenchmarkDataError, match="unknown benchmark 'nope'; available: genai-bench-edit"):
        load_benchmark("nope", "/tmp")


# ----------------------------------------------------------------------------------------- VideoGen-RewardBench


def test_videogen_rewardbench_loads_pairs(tmp_path):
    bench = load_benchmark("videogen-rewardbench", write_videogen_fixture(tmp_path))
    assert (bench.protocol, bench.dims, bench.media_kind, len(bench.pairs)) == (
        "pairwise",
        ("VQ", "MQ", "TA", "Overall"),
        "video",
        12,
    )
    first = bench.pairs[0]
    # Row 0: A=bigbuckbunny, B=bikes; labels cycle A, B, same, A, B from the dimension's offset.
    assert first.media_a == tmp_path / "videos" / "bigbuckbunny.mp4"
    assert first.media_b == tmp_path / "videos" / "bikes.mp4"  # "./videos/bikes.mp4" normalised
    assert first.labels == {"VQ": 1, "MQ": -1, "TA": 0, "Overall": 1}
    assert first.meta["A_model"] == "m1"
    assert len({(p.prompt, m) for p in bench.pairs for m in (p.media_a, p.media_b)}) == 8


def test_videogen_rewardbench_wrong_columns(tmp_path):
    # VideoAlign's training example CSV has the same layout but no Overall column.
    shutil.copyfile(REPO / "data" / "schemas" / "videoalign_train_example.csv", tmp_path / "videogen-rewardbench.csv")
    with pytest.raises(BenchmarkDataError, match=r"lacks column\(s\) \['Overall'\]; expected columns"):
        load_benchmark("videogen-rewardbench", tmp_path)


def test_videogen_rewardbench_bad_label_names_the_row(tmp_path):
    write_videogen_fixture(tmp_path)
    csv_path = tmp_path / "videogen-rewardbench.csv"
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",C"
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"row 4 has Overall='C'; labels must be one of \['A', 'B', 'same'\]"):
        load_benchmark("videogen-rewardbench", tmp_path)


def test_videogen_rewardbench_missing_media_say_where_the_data_live(tmp_path):
    write_videogen_fixture(tmp_path)
    (tmp_path / "videos" / "bikes.mp4").unlink()
    with pytest.raises(MissingMediaError) as info:
        load_benchmark("videogen-rewardbench", tmp_path)
    message = str(info.value)
    assert "1 media file(s)" in message and str(tmp_path / "videos" / "bikes.mp4") in message
    assert "KlingTeam/VideoGen-RewardBench" in message and "videos.zip" in message and "--download" in message


def test_download_without_hub_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkDownloadError) as info:
        load_benchmark("videogen-rewardbench", tmp_path / "new", download=True)
    message = str(info.value)
    assert "KlingTeam/VideoGen-RewardBench" in message and "HF_HUB_OFFLINE is set" in message
    assert "hf download" in message


# ------------------------------------------------------------------------------------------------ GenAI-Bench


def _image(photo: Path) -> dict:
    return {"bytes": png_bytes(photo), "path": f"{photo.stem}.png"}  # the struct of a datasets Image feature


def _genai_image_rows(count: int) -> list[dict]:
    photos = sample_images()
    return [
        {
            "prompt": vote["prompt"],
            "left_model": "SDXL",
            "left_image": _image(photos[2 * i]),
            "right_model": "PixArt",
            "right_image": _image(photos[2 * i + 1]),
            "vote_type": vote["human_vote"],
        }
        for i, vote in enumerate(SHIPPED_VOTES[:count])
    ]


def _votes(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "votes.json"
    path.write_text(json.dumps(SHIPPED_VOTES[:count]))
    return path


def test_genai_bench_image_loads_and_writes_images_once(tmp_path):
    data = tmp_path / "data"
    write_parquet(data / "image_generation" / "test_v1-00000-of-00001.parquet", _genai_image_rows(4))
    bench = load_benchmark("genai-bench-image", data, votes_file=_votes(tmp_path, 4))
    # The first four test_v1 votes: rightvote, leftvote, rightvote, leftvote.
    assert [p.labels for p in bench.pairs] == [{"Overall": -1}, {"Overall": 1}, {"Overall": -1}, {"Overall": 1}]
    assert bench.pairs[0].prompt == SHIPPED_VOTES[0]["prompt"]
    first = bench.pairs[0].media_a
    assert first == data / "media" / "image_generation" / "test_v1" / "00000_left.png"
    assert first.read_bytes() == png_bytes(sample_images()[0])
    stamp = first.stat().st_mtime_ns
    load_benchmark("genai-bench-image", data, votes_file=_votes(tmp_path, 4))
    assert first.stat().st_mtime_ns == stamp  # not written again


def test_genai_bench_rejects_another_split(tmp_path):
    data = tmp_path / "data"
    rows = _genai_image_rows(3)
    write_parquet(data / "image_generation" / "test_v1-00000-of-00001.parquet", rows)
    with pytest.raises(BenchmarkDataError, match="3 rows but 1735 test_v1 votes"):
        load_benchmark("genai-bench-image", data)  # checked against the shipped test_v1 votes
    rows[1]["vote_type"] = "tievote"
    write_parquet(data / "image_generation" / "test_v1-00000-of-00001.parquet", rows)
    with pytest.raises(BenchmarkDataError, match="row 1: vote 'tievote' differs from the reference"):
        load_benchmark("genai-bench-image", data, votes_file=_votes(tmp_path, 3))


def test_genai_bench_wrong_columns_and_missing_files(tmp_path):
    with pytest.raises(MissingMediaError, match=r"no test_v1 parquet file.*TIGER-Lab/GenAI-Bench"):
        load_benchmark("genai-bench-image", tmp_path)
    rows = [{("right_img" if k == "right_image" else k): v for k, v in r.items()} for r in _genai_image_rows(2)]
    write_parquet(tmp_path / "image_generation" / "test_v1-00000-of-00001.parquet", rows)
    with pytest.raises(BenchmarkDataError, match=r"lacks column\(s\) \['right_image'\]"):
        load_benchmark("genai-bench-image", tmp_path, votes_file=_votes(tmp_path, 2))


def test_genai_bench_edit_scores_the_target_caption(tmp_path):
    photos = sample_images()
    rows = [
        {
            "source_prompt": "a cat",
            "target_prompt": "a cat wearing a hat",
            "instruct_prompt": "add a hat",
            "source_image": _image(photos[0]),
            "left_model": "m1",
            "left_output_image": _image(photos[1]),
            "right_model": "m2",
            "right_output_image": _image(photos[2]),
            "vote_type": "bothbad_vote",
        }
    ]
    write_parquet(tmp_path / "data" / "image_edition" / "test_v1" / "0000.parquet", rows)
    votes = tmp_path / "votes.json"
    votes.write_text(json.dumps([{"idx": 0, "human_vote": "bothbad_vote"}]))
    pair = load_benchmark("genai-bench-edit", tmp_path / "data", votes_file=votes).pairs[0]
    assert (pair.prompt, pair.labels) == ("a cat wearing a hat", {"Overall": 0})
    assert pair.meta["instruct_prompt"] == "add a hat"
    assert Path(pair.meta["source_image"]).is_file()


def test_genai_bench_video_lists_missing_urls_then_loads(tmp_path):
    base = "https://huggingface.co/datasets/org/arena-videos/resolve/main/videos"
    rows = [
        {
            "prompt": "a dog",
            "left_model": "m1",
            "left_video": f"{base}/a1.mp4",
            "right_model": "m2",
            "right_video": f"{base}/b1.mp4",
            "vote_type": "tievote",
        },
    ]
    write_parquet(tmp_path / "video_generation" / "test_v1-00000-of-00001.parquet", rows)
    votes = tmp_path / "votes.json"
    votes.write_text(json.dumps([{"idx": 0, "prompt": "a dog", "human_vote": "tievote"}]))
    with pytest.raises(MissingMediaError, match="2 GenAI-Bench video"):
        load_benchmark("genai-bench-video", tmp_path, votes_file=votes)
    listing = tmp_path / "video_generation" / "videos" / "missing_video_urls.txt"
    assert listing.read_text().split() == [f"{base}/a1.mp4", f"{base}/b1.mp4"]
    with pytest.raises(BenchmarkDownloadError, match="cannot download"):  # the hub is offline in tests
        load_benchmark("genai-bench-video", tmp_path, votes_file=votes, download=True)
    for name in ("a1", "b1"):
        target = tmp_path / "video_generation" / "videos" / f"{name}.mp4"
        shutil.copyfile(sample_videos()["carphone_distorted"], target)
    pair = load_benchmark("genai-bench-video", tmp_path, votes_file=votes).pairs[0]
    assert (pair.media_a.name, pair.labels) == ("a1.mp4", {"Overall": 0})


# ------------------------------------------------------------------------------------------------- Pick-a-Pic


def test_pickapic_loads_test_and_validation(tmp_path):
    write_parquet(tmp_path / "data" / "test_unique-00000-of-00001-abc.parquet", pickapic_rows([1.0, 0.0, 0.5], 0))
    write_parquet(tmp_path / "data" / "validation_unique-00000-of-00001-def.parquet", pickapic_rows([0.5, 1.0], 10))
    bench = load_benchmark("pickapic-v2", tmp_path)
    assert bench.protocol == "pickscore" and bench.headline == "pickscore_accuracy"
    assert [p.labels["Overall"] for p in bench.pairs] == [1, -1, 0]
    assert [p.labels["Overall"] for p in bench.validation_pairs] == [0, 1]
    assert bench.pairs[0].media_a == tmp_path / "media" / "test_unique" / "uid-0-0.jpg"
    assert bench.pairs[0].media_a.read_bytes() == jpeg_bytes(sample_images()[0])


def test_pickapic_errors(tmp_path):
    write_parquet(tmp_path / "data" / "test_unique-00000-of-00001-abc.parquet", pickapic_rows([1.0], 0))
    with pytest.raises(MissingMediaError, match="no validation_unique parquet file"):
        load_benchmark("pickapic-v2", tmp_path)
    write_parquet(tmp_path / "data" / "validation_unique-00000-of-00001-def.parquet", pickapic_rows([0.3], 10))
    with pytest.raises(BenchmarkDataError, match="label_0 is 0.3; expected 1, 0, 0.5"):
        load_benchmark("pickapic-v2", tmp_path)


# -------------------------------------------------------------------------------------------- ranking benchmarks


def test_imagereward_local_labels_and_name_matching(tmp_path):
    write_imagereward_fixture(tmp_path)
    bench = load_benchmark("imagereward-test", tmp_path)
    assert bench.protocol == "ranking" and [len(g.media) for g in bench.groups] == [4, 4, 3]
    assert bench.groups[1].ranks == (2.0, 1.0, 1.0, 3.0) and bench.groups[0].id == "000000-0001"
    # Images unpacked into another folder layout are found by their (unique) file names.
    shutil.move(tmp_path / "test_images", tmp_path / "from_hub")
    moved = load_benchmark("imagereward-test", tmp_path)
    assert moved.groups[0].media[0] == tmp_path / "from_hub" / "part-000001" / "images" / "0000" / "astronaut.png"


def test_imagereward_uses_shipped_labels(tmp_path):
    with pytest.raises(MissingMediaError, match=r"(?s)2720 media file\(s\).*THUDM/ImageRewardDB"):
        load_benchmark("imagereward-test", tmp_path)


def test_hpdv2_loads_rankings_and_checks_fields(tmp_path):
    photos = sample_images()[:6]
    (tmp_path / "test").mkdir()
    for photo in photos:
        shutil.copyfile(photo, tmp_path / "test" / photo.name)
    records = [
        {"prompt": "p0", "image_path": [p.name for p in photos[:3]], "rank": [2.5, 1.0, 2.5], "raw_annotations": []},
        {"prompt": "p1", "image_path": [p.name for p in photos[3:]], "rank": [1, 2, 3], "raw_annotations": []},
    ]
    (tmp_path / "test.json").write_text(json.dumps(records))
    bench = load_benchmark("hpdv2-test", tmp_path)
    assert bench.headline == "inversion_accuracy"
    assert bench.groups[0].ranks == (2.5, 1.0, 2.5) and bench.groups[0].media[1] == tmp_path / "test" / photos[1].name
    records[1]["ranks"] = records[1].pop("rank")
    (tmp_path / "test.json").write_text(json.dumps(records))
    with pytest.raises(BenchmarkDataError, match=r"record 1 lacks field\(s\) \['rank'\]"):
        load_benchmark("hpdv2-test", tmp_path)
    records[1]["rank"] = [1, 2]
    (tmp_path / "test.json").write_text(json.dumps(records))
    with pytest.raises(BenchmarkDataError, match="must be lists of the same length"):
        load_benchmark("hpdv2-test", tmp_path)


# ---------------------------------------------------------------------------------------------- MJ-Bench-Video


def test_mjbench_video_from_real_records(tmp_path):
    # Real records of the shipped test.json: "Video 1 better", "Video 2 better", "Video 1 Better", "Same",
    # "Hard to judge" (whose aspects still have labels).
    picked = [MJ_RECORDS[i] for i in (4, 11, 35, 0, 121)]
    (tmp_path / "test.json").write_text(json.dumps(picked))
    for record, name in zip(picked, VIDEO_NAMES + ("bikes",), strict=True):
        for key in ("video_0_path", "video_1_path"):
            target = tmp_path / "videos" / record[key]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample_videos()[name], target)
    bench = load_benchmark("mjbench-video", tmp_path)
    assert [p.labels.get("Overall") for p in bench.pairs] == [1, -1, 1, 0, None]
    hard = bench.pairs[4]
    assert hard.labels == {"Alignment": 1, "Safety": 0, "Fineness": -1, "Coherence & Consistency": -1, "Bias": 0}
    assert bench.pairs[0].media_a == tmp_path / "videos" / "test" / "4_0.mp4"
    assert "1 pair(s) marked 'Hard to judge'" in bench.notes[0]
    picked[0]["overall_preference"] = "Video 3 better"
    (tmp_path / "test.json").write_text(json.dumps(picked))
    with pytest.raises(BenchmarkDataError, match="record 0 Overall preference is 'Video 3 better'"):
        load_benchmark("mjbench-video", tmp_path)


def test_mjbench_video_shipped_labels_need_videos(tmp_path):
    expected = r"(?s)2170 media file\(s\).*videos/test/0_0\.mp4.*MJ-Bench/MJ-BENCH-VIDEO"
    with pytest.raises(MissingMediaError, match=expected):
        load_benchmark("mjbench-video", tmp_path)


# ------------------------------------------------------------------------------------------------------- misc


def test_limit_and_missing_data_dir(tmp_path):
    bench = load_benchmark("videogen-rewardbench", write_videogen_fixture(tmp_path / "vg"))
    short = bench.limited(5)
    assert len(short.pairs) == 5 and "not the full benchmark" in short.notes[-1]
    with pytest.raises(BenchmarkDataError, match=r"does not exist\. The dataset is on the Hugging Face Hub as ymhao"):
        load_benchmark("hpdv2-test", tmp_path / "nowhere")


def test_archives_cannot_write_outside_the_data_dir(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(BenchmarkDataError, match="member outside its folder"):
        extract_archive(archive, tmp_path / "target")
    assert not (tmp_path / "outside.txt").exists()


def test_archives_are_unpacked_once(tmp_path):
    archive, target, marker = tmp_path / "videos.zip", tmp_path / "data", tmp_path / ".videos-unpacked"
    unpack_once(archive, target, marker)  # not downloaded: nothing to do, no marker
    assert not marker.exists()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "x")
    unpack_once(archive, target, marker)
    assert (target / "a.txt").read_text() == "x" and marker.exists()
    (target / "a.txt").unlink()
    unpack_once(archive, target, marker)  # the marker says it was done: not extracted again
    assert not (target / "a.txt").exists()
