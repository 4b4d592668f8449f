"""The reward server and its client: same scores as the local reward, micro-batching, bounds, bad input."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch
import uvicorn

import mmreward
from mmreward import media
from mmreward.errors import MMRewardError
from mmreward.media_codec import media_to_json
from mmreward.serve import create_app
from mmreward.testing import tiny_reward_preset


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
