"""Remote judges against a small local OpenAI-compatible server (FastAPI + uvicorn in a thread) that answers
with canned texts: the same verdicts as the local parser, bounded concurrency, retries, timeouts, failures."""

import asyncio
import base64
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

import mmreward
from mmreward.errors import ConfigError
from mmreward.rewards.vlm.parsing import parse_scores
from mmreward.rewards.vlm.templates import load_template

COT = (
    "<think>\nSemantic consistency: Image 1 8/10, Image 2 5/10 - on topic\nAesthetics: Image 1 6/10, Image 2 7/10\n"
    "</think>\n<answer>Image 1 is better</answer>"
)


class FakeServer:
    """Replies by the caption: "brightness" -> the brighter image wins; other captions map to canned texts."""

    def __init__(self):
        self.app = FastAPI()
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: dict[str, int] = {}
        self.headers: list[str | None] = []
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request):
        body = await request.json()
        self.headers.append(request.headers.get("authorization"))
        content = body["messages"][-1]["content"]
        text = " ".join(c["text"] for c in content if c["type"] == "text")
        images = [_decode(c["image_url"]["url"]) for c in content if c["type"] == "image_url"]
        caption = text.split('caption: "')[1].split('"')[0] if 'caption: "' in text else ""
        self.attempts[caption] = self.attempts.get(caption, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            return self._reply(caption, images, body)
        finally:
            self.in_flight -= 1

    def _reply(self, caption, images, body):
        if caption == "flaky" and self.attempts[caption] == 1:
            return JSONResponse({"error": "overloaded"}, status_code=503)
        if caption == "broken":
            return JSONResponse({"error": "internal"}, status_code=500)
        if caption == "bad request":
            return JSONResponse({"error": "too many images"}, status_code=400)
        if caption == "cut":
            return _completion("The first image shows", finish="length")
        if caption == "scores":
            return _completion("Alignment Score (1-5): 4\nCoherence Score (1-5): 2.5\nStyle Score (1-5): 3")
        if caption == "think":
            return _completion(COT)
        if caption == "garbage":
            return _completion("我认为第一张图更好")
        if caption.startswith("echo:"):
            return _completion(caption.removeprefix("echo:"))
        text = " ".join(c["text"] for c in body["messages"][-1]["content"] if c["type"] == "text")
        if "[editing success, over-editing]" in text or "[naturalness, artifacts]" in text:
            # UnifiedReward-Edit's questions (our wording): the last image's brightness and how many were shown.
            brightness = float(np.asarray(images[-1]).mean()) / 255
            return _completion(json.dumps({"reasoning": "canned", "score": [round(25 * brightness), len(images)]}))
        first, second = (float(np.asarray(im).mean()) for im in images[:2])
        return _completion("Image 1 is better." if first > second else "Image 2 is better.")


def _decode(url: str) -> Image.Image:
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def _completion(text: str, finish: str = "stop"):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}


@pytest.fixture(scope="module")
def server():
    fake = FakeServer()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not runner.started and time.time() < deadline:
        time.sleep(0.02)
    fake.url = f"http://127.0.0.1:{port}/v1"
    yield fake
    runner.should_exit = True
    thread.join(timeout=5)


def _gray(value: float, size: int = 32) -> torch.Tensor:
    return torch.full((3, size, size), value)


def test_verdicts_match_the_local_parser_and_concurrency_is_bounded(server):
    judge = mmreward.load_reward(
        "unifiedreward-pairwise-remote", template="ours", endpoint=server.url, max_concurrency=3
    )
    server.max_in_flight = 0
    values = [0.2, 0.8, 0.5, 0.3, 0.9, 0.1]
    out = judge.compare(["brightness"] * 3, [_gray(v) for v in values[:3]], [_gray(v) for v in values[3:]])
    # Pair 0: 0.2 vs 0.3 -> B; pair 1: 0.8 vs 0.9 -> B; pair 2: 0.5 vs 0.1 -> A; both orders agree.
    assert out.prob_a.tolist() == [0.0, 0.0, 1.0] and out.consistent.all()
    assert 1 <= server.max_in_flight <= 3
    # The same text gives the same judgment locally (the local judge's generate mode) and remotely.
    section = load_template("unifiedreward-pairwise", kind="pairwise").section("image")
    texts = ["Image 1 is better.", "So: **Image 2 is better**", "Both images are equally good", "no idea"]
    remote = judge.compare([f"echo:{t}" for t in texts], [_gray(0.5)] * 4, [_gray(0.6)] * 4, orders="ab")
    for k, text in enumerate(texts):
        local = judge.judgment_from_text(section, text, False)  # what the local backend's answers go through
        assert bool(remote.failed[k]) == local.failed and remote.rationales[k] == text
        if local.failed:
            assert remote.errors[k] == local.error
        else:
            assert (float(remote.prob_a[k]), float(remote.tie[k])) == (local.probs[0], local.probs[2])
    rates = mmreward.win_rate(judge, "brightness", [_gray(v) for v in (0.1, 0.6, 0.3, 0.9)])
    torch.testing.assert_close(rates, torch.tensor([0.0, 2 / 3, 1 / 3, 1.0]))


def test_retries_failures_and_truncation(server):
    judge = mmreward.load_reward(
        "unifiedreward-pairwise-remote", template="ours", endpoint=server.url, retries=2, api_key="t0k"
    )
    judge.backend.client.backoff_s = 0.01
    server.attempts.clear()
    out = judge.compare(
        ["flaky", "broken", "bad request", "cut", "garbage"],
        [_gray(0.8)] * 5,
        [_gray(0.2)] * 5,
        orders="ab",
    )
    assert out.failed.tolist() == [False, True, True, True, True]
    assert float(out.prob_a[0]) == 1.0 and server.attempts["flaky"] == 2  # one 503, then success
    assert "failed after 3 attempt(s)" in out.errors[1] and "HTTP 500" in out.errors[1]
    assert server.attempts["bad request"] == 1 and "HTTP 400" in out.errors[2]  # client errors are not retried
    assert "max_new_tokens=64" in out.errors[3] and out.rationales[3] == "The first image shows"
    assert "no verdict" in out.errors[4] and out.rationales[4] == "我认为第一张图更好"
    assert "Bearer t0k" in server.headers


def test_pointwise_and_chain_of_thought(server):
    pointwise = mmreward.load_reward("unifiedreward-pointwise-remote", template="ours", endpoint=server.url)
    out = pointwise.score(["scores", "garbage"], [_gray(0.5), _gray(0.5)])
    assert out.failed.tolist() == [False, True]
    assert (
        out.dims["Alignment"][0] == 4.0 and out.dims["Coherence"][0] == 2.5 and out.scores[0] == pytest.approx(9.5 / 3)
    )
    section = load_template("unifiedreward-pointwise", kind="pointwise").section("image")
    text = "Alignment Score (1-5): 4\nCoherence Score (1-5): 2.5\nStyle Score (1-5): 3"
    assert parse_scores(text, section.dims, section.score_line, (1, 5)) == {
        "Alignment": 4.0,
        "Coherence": 2.5,
        "Style": 3.0,
    }
    cot = mmreward.load_reward("unifiedreward-think-remote", template="ours", endpoint=server.url)
    pair = cot.compare(["think"], [_gray(0.5)], [_gray(0.5)])
    # Both orders get the same canned text ("Image 1 is better"): the first slot always wins, so A's P is 1/2.
    assert float(pair.prob_a[0]) == 0.5 and not bool(pair.consistent[0])
    assert pair.dims["Semantic consistency"][0] == 0.5 and pair.rationales[0].count("<answer>") == 2


def test_edit_judge_asks_both_questions_with_their_images(server):
    judge = mmreward.load_reward("unifiedreward-edit-remote", template="ours", endpoint=server.url)
    out = judge.score(["make it brighter"] * 2, [_gray(0.8), _gray(0.2)], sources=[_gray(0.2), _gray(0.8)])
    assert not out.failed.any(), out.errors
    # The edit is the last image of both questions; the instruction-following one also shows the source.
    assert out.dims["edit_success"].tolist() == [20.0, 5.0] and out.dims["overediting"].tolist() == [2.0, 2.0]
    assert out.dims["naturalness"].tolist() == [20.0, 5.0] and out.dims["artifacts"].tolist() == [1.0, 1.0]
    assert out.scores.tolist() == [(11.0 + 10.5) / 2, (3.5 + 3.0) / 2]


def test_timeouts_and_bad_configuration(server):
    judge = mmreward.load_reward(
        "unifiedreward-pairwise-remote", template="ours", endpoint=server.url, timeout_s=0.01, retries=0
    )
    out = judge.compare(["brightness"], [_gray(0.5)], [_gray(0.4)], orders="ab")
    assert bool(out.failed[0]) and "timed out" in out.errors[0]
    with pytest.raises(ConfigError, match="http"):
        mmreward.load_reward("unifiedreward-pairwise-remote", template="ours", endpoint="127.0.0.1:8000")
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VARIABLE"):
        mmreward.load_reward(
            "unifiedreward-pairwise-remote", template="ours", endpoint=server.url, api_key_env="NO_SUCH_KEY_VARIABLE"
        )
    with pytest.raises(ConfigError, match="max_images=16"):
        mmreward.load_reward("unifiedreward-think-remote", template="ours", endpoint=server.url, video_num_frames=12)
