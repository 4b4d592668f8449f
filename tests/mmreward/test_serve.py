"""The reward server and its client: same scores as the local reward, micro-batching, bounds, bad input."""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

import mmreward
from mmreward import media
from mmreward.errors import ConfigError, MMRewardError
from mmreward.media_codec import media_to_json
from mmreward.rewards.base import RewardModel, RewardOutput
from mmreward.rewards.remote import RemoteReward
from mmreward.serve import create_app, output_to_json
from mmreward.testing import GreyAndPromptReward, tiny_reward_preset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a background thread, stopped on exit."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def local_reward(tiny_root):
    return mmreward.load_reward(str(tiny_reward_preset("clip-score", tiny_root)))


def test_remote_scores_equal_local_and_bad_items_fail_alone(local_reward, sample_images, sample_videos):
    app = create_app(local_reward, max_batch=8, max_wait_ms=5)
    with Server(app) as url:
        remote = mmreward.load_reward(url)
        assert remote.kind == "pointwise" and remote.dims == () and remote.uses_prompt
        batch = [sample_images[0], sample_images[1], sample_videos["carphone_distorted"]]
        prompts = ["an astronaut", "a brick wall", "a man on the phone"]
        torch.testing.assert_close(remote.score(prompts, batch).scores, local_reward.score(prompts, batch).scores)
        # An undecodable item sent directly fails on its own; its neighbour is scored.
        good = media_to_json(media.load_image(sample_images[0]))
        bad = {"image": base64.b64encode(b"not an image").decode()}
        reply = httpx.post(f"{url}/score", json={"prompts": ["a", "a"], "media": [good, bad]}).json()
        assert reply["failed"] == [False, True] and reply["scores"][1] is None
        assert "not a decodable image" in reply["errors"][1]


def test_concurrent_requests_are_micro_batched(local_reward, sample_images):
    app = create_app(local_reward, max_batch=8, max_wait_ms=200)
    item = media_to_json(media.load_image(sample_images[2]))

    async def many(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            replies = await asyncio.gather(
                *[client.post("/score", json={"prompts": ["a cat"], "media": [item]}) for _ in range(6)]
            )
        return [r.json()["scores"][0] for r in replies]

    with Server(app) as url:
        scores = asyncio.run(many(url))
    assert len(set(scores)) == 1  # same input, same score, whatever batch it ran in
    assert max(app.state.batcher.batch_sizes) > 1  # requests shared forward passes
    assert sum(app.state.batcher.batch_sizes) == 6


def test_bounds_and_malformed_requests(local_reward):
    app = create_app(local_reward, max_items=2, max_body_bytes=10_000)
    with Server(app) as url:
        too_many = {"prompts": ["a"] * 3, "media": [{"image": ""}] * 3}
        assert httpx.post(f"{url}/score", json=too_many).status_code == 413
        big = {"prompts": ["a"], "media": [{"image": "A" * 20_000}]}
        assert httpx.post(f"{url}/score", json=big).status_code == 413
        pickled = httpx.post(f"{url}/score", content=b"\x80\x04", headers={"content-type": "application/octet-stream"})
        assert pickled.status_code == 415
        assert httpx.post(f"{url}/score", json={"prompts": ["a"], "media": []}).status_code == 400
        assert httpx.post(f"{url}/score", json=["not", "an", "object"]).status_code == 400


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(MMRewardError, match=r"reward server http://127.0.0.1:\d+ is unreachable"):
        mmreward.load_reward(f"http://127.0.0.1:{free_port()}")


def test_serve_command_end_to_end(tiny_root, sample_images):
    port = free_port()
    preset = tiny_reward_preset("clip-score", tiny_root)
    process = subprocess.Popen(
        [sys.executable, "-m", "mmreward.cli", "serve", "--reward", str(preset), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"{url}/info").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.2)
        remote = mmreward.load_reward(url).score(["a photo"], [sample_images[0]]).scores
        local = mmreward.load_reward(str(preset)).score(["a photo"], [sample_images[0]]).scores
        torch.testing.assert_close(remote, local)
    finally:
        process.terminate()
        process.wait(timeout=30)


# ------------------------------------------------------------------------------- item identity and bad input


class GreyWithDim(RewardModel):
    """Score = grey level + prompt length (identifies the item and its prompt); dimension ``grey`` = grey level."""

    dims = ("grey",)
    raw_range = (0.0, 100.0)

    def score_prepared(self, prompts, inputs):
        grey = torch.stack([x.float().mean() for x in inputs])
        return grey + torch.tensor([float(len(p)) for p in prompts]), {"grey": grey}


@pytest.fixture(scope="module")
def grey_server():
    """A weight-free reward whose score identifies the item, served with at most 3 items per request."""
    reward = GreyWithDim()
    app = create_app(reward, max_batch=4, max_wait_ms=1, max_items=3)
    with Server(app) as url:
        yield reward, url, app


GREY_LEVELS = [0, 50, 100, 150, 200, 250]


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_remote_equals_local_item_by_item_with_failed_items_and_several_requests(grey_server, data):
    """Up to 10 items (more than the server's 3 per request): some already failed on the client, some the server
    cannot decode. Every score lands on its own item; failed items keep their place and their reason."""
    reward, url, _ = grey_server
    remote = mmreward.load_reward(url)
    size = data.draw(st.integers(1, 10))
    kinds = data.draw(st.lists(st.sampled_from(["ok", "ok", "client", "server"]), min_size=size, max_size=size))
    levels = data.draw(st.lists(st.sampled_from(GREY_LEVELS), min_size=size, max_size=size))
    prompts = data.draw(st.lists(st.text(max_size=5), min_size=size, max_size=size))
    images = [torch.full((3, 4, 4), level / 255) for level in levels]
    prepared = [
        {"image": "@@not base64"} if kind == "server" else remote.prepare(image)
        for kind, image in zip(kinds, images, strict=True)
    ]
    errors = ["decoding failed on the client" if kind == "client" else None for kind in kinds]
    out = remote.score_prepared_batch(prompts, prepared, errors)
    local = reward.score_prepared_batch(prompts, [reward.prepare(image) for image in images], [None] * size)
    for i, kind in enumerate(kinds):
        if kind == "ok":
            assert not out.failed[i] and out.errors[i] is None
            assert out.scores[i].item() == pytest.approx(local.scores[i].item(), abs=1e-6)
            assert out.scores[i].item() == pytest.approx(levels[i] / 255 + len(prompts[i]), abs=1e-6)
            assert out.dims["grey"][i].item() == pytest.approx(levels[i] / 255, abs=1e-6)
        else:
            assert out.failed[i] and math.isnan(out.scores[i]) and math.isnan(out.dims["grey"][i])
            expected = "decoding failed on the client" if kind == "client" else "server: invalid base64"
            assert out.errors[i].startswith(expected), out.errors[i]


def test_every_malformed_body_is_a_400_and_malformed_items_fail_alone(grey_server):
    _, url, _ = grey_server
    good = media_to_json(torch.full((3, 4, 4), 128 / 255))

    def post(body=None, **kwargs):
        return (
            httpx.post(f"{url}/score", json=body, **kwargs)
            if body is not None
            else httpx.post(f"{url}/score", **kwargs)
        )

    json_headers = {"content-type": "application/json"}
    assert post(content=b"{not json", headers=json_headers).status_code == 400
    nested = post(content=b"[" * 100_000 + b"]" * 100_000, headers=json_headers)
    assert nested.status_code == 400 and nested.json()["detail"] == "body is not valid JSON"
    assert post({"prompts": [1], "media": [good]}).status_code == 400
    assert post({"prompts": "a", "media": [good]}).status_code == 400
    assert post({"prompts": ["a"]}).status_code == 400
    items = [
        good,
        {"image": "%%%"},
        {"video": []},
        {"video": [123]},
        {"video": [good["image"], media_to_json(torch.full((3, 8, 8), 0.5))["image"]]},
        {"image": good["image"], "extra": 1},
    ]
    reply = post({"prompts": ["ab"] * len(items[:3]), "media": items[:3]}).json()
    assert reply["failed"] == [False, True, True] and reply["scores"][0] == pytest.approx(128 / 255 + 2, abs=1e-6)
    assert reply["errors"][1].startswith("invalid base64") and "a media item must be" in reply["errors"][2]
    reply = post({"prompts": ["ab"] * 3, "media": items[3:]}).json()
    assert reply["failed"] == [True, True, True]
    assert reply["errors"] == [
        "frames must be base64 strings",
        "video frames differ in size",
        'a media item must be {"image": <base64>} or {"video": [<base64 frame>, ...]}',
    ]


class Gate(GreyAndPromptReward):
    """Blocks every model call until ``release`` is set; the prompt "boom" raises as a broken model would."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def score_images(self, prompts, frames):
        self.entered.set()
        assert self.release.wait(30)
        if "boom" in prompts:
            raise RuntimeError("the model broke")
        return super().score_images(prompts, frames)


def test_full_queue_is_a_503_and_a_model_error_is_a_500_the_server_survives():
    gate = Gate()
    app = create_app(gate, max_batch=1, max_wait_ms=1, max_queue=1)
    body = {"prompts": ["x"], "media": [media_to_json(torch.full((3, 4, 4), 51 / 255))]}
    with Server(app) as url:
        replies = {}

        def send(name, payload):
            replies[name] = httpx.post(f"{url}/score", json=payload, timeout=60)

        first = threading.Thread(target=send, args=("first", {**body, "prompts": ["boom"]}))
        first.start()
        assert gate.entered.wait(30)  # the first request is in the model
        second = threading.Thread(target=send, args=("second", body))
        second.start()
        deadline = time.time() + 30
        while not app.state.batcher.full():  # the second waits in the queue of one
            assert time.time() < deadline
            time.sleep(0.01)
        third = httpx.post(f"{url}/score", json=body, timeout=60)
        assert third.status_code == 503 and "queue is full" in third.json()["detail"]
        gate.release.set()
        first.join(60)
        second.join(60)
        assert replies["first"].status_code == 500
        assert replies["first"].json()["detail"] == "scoring failed: RuntimeError: the model broke"
        assert replies["second"].status_code == 200
        assert replies["second"].json()["scores"][0] == pytest.approx(51 / 255 + 1, abs=1e-6)
        assert httpx.post(f"{url}/score", json=body).status_code == 200  # still serving


def test_serve_command_checks_its_limits_and_warns_on_a_public_host():
    from tests.cli_runs import run_cli

    for flag in ("--max-batch", "--max-queue", "--max-items"):
        result = run_cli("serve", "--reward", "jpeg-compressibility", flag, "0")
        assert result.returncode == 2 and f"{flag} must be >= 1, got 0" in result.stderr
    result = run_cli("serve", "--host", "0.0.0.0", "--reward", "no-such-reward")
    assert "warning: serving on 0.0.0.0, reachable beyond this machine" in result.stderr
    assert result.returncode == 2 and "no-such-reward" in result.stderr


def test_client_reads_the_servers_description_and_splits_requests_at_its_bound(grey_server):
    _, url, app = grey_server
    remote = mmreward.load_reward(url + "/")
    assert (remote.url, remote.timeout, remote.weights_id) == (url, 120.0, f"{url} (GreyWithDim)")
    assert (remote.dims, remote.raw_range, remote.uses_prompt, remote.max_items) == (("grey",), (0.0, 100.0), True, 3)
    before = len(app.state.batcher.batch_sizes)
    out = remote.score(["p"] * 7, [torch.full((3, 4, 4), 128 / 255)] * 7)
    assert out.scores.tolist() == pytest.approx([128 / 255 + 1] * 7, abs=1e-6)
    assert app.state.batcher.batch_sizes[before:] == [3, 3, 1]  # sequential requests of at most max_items


def test_client_errors_name_the_server_and_its_answer():
    class Pairwise(GreyAndPromptReward):
        kind = "pairwise"

    with Server(create_app(Pairwise())) as url:
        with pytest.raises(ConfigError) as raised:
            mmreward.load_reward(url)
    assert str(raised.value) == f"{url} serves a 'pairwise' reward; RemoteReward supports pointwise rewards"

    gate = Gate()
    gate.release.set()
    with Server(create_app(gate, max_wait_ms=1)) as url:
        remote = mmreward.load_reward(url)
        with pytest.raises(MMRewardError) as raised:
            remote.score(["boom"], [torch.zeros(3, 4, 4)])
        assert str(raised.value) == f"reward server {url} answered 500: scoring failed: RuntimeError: the model broke"
        gate.release.clear()
        slow = mmreward.load_reward(url, timeout=0.5)
        with pytest.raises(MMRewardError, match=rf"^reward server {url} is unreachable: ReadTimeout: "):
            slow.score(["x"], [torch.zeros(3, 4, 4)])
        gate.release.set()


def test_a_plain_text_error_is_quoted():
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()
    info = {"name": "t", "kind": "pointwise", "dims": [], "raw_range": None, "uses_prompt": False, "max_items": 4}
    app.get("/info")(lambda: info)
    app.post("/score")(lambda: PlainTextResponse("overloaded", status_code=502))
    with Server(app) as url:
        remote = mmreward.load_reward(url)
        assert remote.raw_range is None and remote.dims == ()
        with pytest.raises(MMRewardError) as raised:
            remote.score(["x"], [torch.zeros(3, 4, 4)])
    assert str(raised.value) == f"reward server {url} answered 502: overloaded"


def test_batches_close_when_full_and_every_job_gets_its_own_items():
    """Jobs of 1, 2, 1, 3 and 2 items arrive together under max_batch 4 and a long wait: a batch takes whole jobs
    until it holds at least 4 items (1 + 2 + 1 = 4, then 3 + 2 = 5), and each reply carries its own items' scores."""
    reward = GreyWithDim()
    app = create_app(reward, max_batch=4, max_wait_ms=2000)
    sizes = [1, 2, 1, 3, 2]
    jobs = [[(20 * (j + 1) + i) / 255 for i in range(n)] for j, n in enumerate(sizes)]

    async def send_all(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            replies = []
            for j, levels in enumerate(jobs):  # in order, without waiting for the answers
                body = {
                    "prompts": ["p" * j] * len(levels),
                    "media": [media_to_json(torch.full((3, 4, 4), v)) for v in levels],
                }
                replies.append(asyncio.create_task(client.post("/score", json=body)))
                await asyncio.sleep(0.05)
            return [(await r).json() for r in replies]

    with Server(app) as url:
        replies = asyncio.run(send_all(url))
    assert app.state.batcher.batch_sizes == [4, 5]
    for j, (levels, reply) in enumerate(zip(jobs, replies, strict=True)):
        assert reply["scores"] == pytest.approx([v + j for v in levels], abs=1e-6)
        assert reply["dims"]["grey"] == pytest.approx(levels, abs=1e-6) and reply["failed"] == [False] * len(levels)


def test_server_defaults_and_lifecycle(monkeypatch):
    from fastapi.testclient import TestClient

    import mmreward.serve as serve_module

    app = create_app(GreyWithDim())
    batcher = app.state.batcher
    assert app.title == "mmreward reward server"
    assert (batcher.max_batch, batcher.max_wait, batcher.queue.maxsize) == (32, 0.01, 256)
    with TestClient(app) as client:  # startup starts the batcher, shutdown cancels it without error
        assert client.get("/info").json()["max_items"] == 256
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    serve_module.serve(GreyWithDim(), host="127.0.0.2", port=8123, max_items=7, max_batch=3)
    [(served, kwargs)] = calls
    assert kwargs == {"host": "127.0.0.2", "port": 8123, "log_level": "info"}
    assert served.state.batcher.max_batch == 3 and TestClient(served).get("/info").json()["max_items"] == 7
    assert served.state.batcher.reward.name == "GreyWithDim"
    serve_module.serve(GreyWithDim())  # loopback on port 8000 unless told otherwise
    assert calls[1][1] == {"host": "127.0.0.1", "port": 8000, "log_level": "info"}


def test_the_default_body_bound_is_64_mib():
    """The declared length is checked before the body is read, so a 2-byte body that claims 64 MiB + 1 is refused."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(GreyWithDim()))
    headers = {"content-type": "application/json", "content-length": str(64 * 2**20 + 1)}
    reply = client.post("/score", content=b"{}", headers=headers)
    assert reply.status_code == 413
    assert reply.json()["detail"] == "request body of 67,108,865 bytes is over the server's 67,108,864"


# ------------------------------------------------------------------------ the client's codec, without a server

INFO = {"name": "t", "kind": "pointwise", "dims": ["grey"], "raw_range": [0, 1], "uses_prompt": True, "max_items": 4}


def mocked_remote(monkeypatch, url: str, answer_score, **kwargs) -> tuple[RemoteReward, list[dict], list]:
    """A RemoteReward whose HTTP client answers /info with INFO and /score with ``answer_score(request)``; returns
    it, the keyword arguments its client was made with, and the /score requests sent."""
    real_client, made, sent = httpx.Client, [], []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json=INFO)
        sent.append(request)
        return answer_score(request)

    monkeypatch.setattr(
        httpx, "Client", lambda **kw: made.append(kw) or real_client(transport=httpx.MockTransport(handler), **kw)
    )
    return RemoteReward(url, **kwargs), made, sent


def test_client_strips_only_the_trailing_slash_passes_its_timeout_and_quotes_a_bare_error(monkeypatch):
    """A host name may end in any letter; a 502 from a proxy may come without a content type."""
    remote, made, _ = mocked_remote(
        monkeypatch, "http://REWARDBOX/", lambda r: httpx.Response(502, content=b"down"), timeout=7.0
    )
    assert remote.url == "http://REWARDBOX" and made == [{"base_url": "http://REWARDBOX", "timeout": 7.0}]
    with pytest.raises(MMRewardError) as raised:
        remote.score(["x"], [torch.zeros(3, 4, 4)])
    assert str(raised.value) == "reward server http://REWARDBOX answered 502: down"


def test_a_non_finite_score_comes_back_as_nan_on_an_item_that_did_not_fail(monkeypatch):
    """The server writes a NaN score (a model's own NaN) as null: the client reads it back as NaN on an item that
    did not fail, as the local reward reports it; an item the server failed keeps its reason."""
    local = RewardOutput(
        scores=torch.tensor([0.25, math.nan, math.nan]),
        dims={"grey": torch.tensor([0.1, math.nan, math.nan])},
        failed=torch.tensor([False, False, True]),
        errors=[None, None, "bad frame"],
    )
    answer = lambda request: httpx.Response(200, json=output_to_json(local))  # noqa: E731
    remote, _, sent = mocked_remote(monkeypatch, "http://box", answer)
    out = remote.score_prepared_batch(["a", "b", "c"], [{}, {}, {}], [None] * 3)
    assert out.failed.tolist() == [False, False, True] and out.errors == [None, None, "server: bad frame"]
    assert out.scores[0].item() == 0.25 and out.scores[1:].isnan().all()
    assert out.dims["grey"][0].item() == pytest.approx(0.1) and out.dims["grey"][1:].isnan().all()
    empty = remote.score_prepared_batch([], [], [])
    assert len(sent) == 1 and empty.failed.dtype == torch.bool and empty.scores.shape == (0,)


def test_score_prepared_returns_scores_or_names_the_first_failed_item(grey_server):
    _, url, _ = grey_server
    remote = mmreward.load_reward(url)
    good = remote.prepare(torch.full((3, 4, 4), 128 / 255))
    scores, dims = remote.score_prepared(["p", "pp"], [good, good])
    assert scores.tolist() == pytest.approx([128 / 255 + 1, 128 / 255 + 2], abs=1e-6)
    assert dims["grey"].tolist() == pytest.approx([128 / 255] * 2, abs=1e-6)
    with pytest.raises(MMRewardError) as raised:
        remote.score_prepared(["p"] * 3, [good, {"image": "@@"}, {"image": "%%"}])
    assert str(raised.value).startswith(f"reward server {url} failed item 1: server: invalid base64")


class NaNForDark(GreyWithDim):
    """GreyWithDim, but a black image scores NaN (a model's own NaN, not a failed item)."""

    def score_prepared(self, prompts, inputs):
        scores, dims = super().score_prepared(prompts, inputs)
        return torch.where(dims["grey"] == 0, math.nan, scores), dims


def test_the_server_reports_a_models_nan_as_null_on_an_item_that_did_not_fail():
    """Failure is the item's error, never read back from a NaN score: only the undecodable item failed."""
    from fastapi.testclient import TestClient

    media = [media_to_json(torch.full((3, 4, 4), v)) for v in (0.0, 128 / 255)] + [{"image": "%%%"}]
    with TestClient(create_app(NaNForDark(), max_wait_ms=1)) as client:
        reply = client.post("/score", json={"prompts": ["a", "b", "c"], "media": media}).json()
    assert reply["failed"] == [False, False, True] and reply["errors"][:2] == [None, None]
    assert reply["scores"][0] is None and reply["scores"][1] == pytest.approx(128 / 255 + 1, abs=1e-6)
    assert reply["scores"][2] is None and reply["dims"]["grey"][:2] == pytest.approx([0.0, 128 / 255], abs=1e-6)
