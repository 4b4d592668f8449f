"""A reward server: any mmreward reward behind HTTP/JSON, with micro-batching.

    mmreward serve --reward pickscore --device cuda --port 8000
    rm = mmreward.load_reward("http://127.0.0.1:8000")   # RemoteReward, the same contract as a local reward

Alignment loops often want the reward model on its own GPU or process. The server keeps the model loaded and
groups concurrent requests into batches of up to ``max_batch`` items, waiting at most ``max_wait_ms`` for a batch
to fill, so many small clients share large, efficient forward passes.

Safety by default: it binds to loopback (127.0.0.1); it accepts JSON only (never pickle, unlike the reward
servers in public alignment code); request bodies, items per request and the queue are bounded (413 and 503
answers say which bound was hit).

Protocol (JSON):

- ``GET /info`` -> ``{"name", "kind", "dims", "raw_range", "uses_prompt", "max_items"}``.
- ``POST /score`` with ``{"prompts": [str, ...], "media": [item, ...]}`` where an item is
  ``{"image": "<base64 PNG or JPEG>"}`` or ``{"video": ["<base64 frame>", ...]}`` ->
  ``{"scores": [float|null], "dims": {name: [float|null]}, "failed": [bool], "errors": [str|null]}``.
  An undecodable item fails on its own; the rest of the request is scored.
"""

# No `from __future__ import annotations`: FastAPI resolves the handlers' parameter annotations at runtime.

import asyncio
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from mmreward.errors import MediaError
from mmreward.media_codec import media_from_json
from mmreward.rewards.base import RewardModel, RewardOutput

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


def output_to_json(out: RewardOutput) -> dict[str, Any]:
    def values(tensor: torch.Tensor) -> list[float | None]:
        return [v if math.isfinite(v) else None for v in tensor.tolist()]

    return {
        "scores": values(out.scores),
        "dims": {name: values(t) for name, t in out.dims.items()},
        "failed": out.failed.tolist(),
        "errors": list(out.errors),
    }


@dataclass
class _Job:
    prompts: list[str]
    media: list[torch.Tensor | None]
    errors: list[str | None]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects concurrent jobs into batches of up to ``max_batch`` items and scores them in one worker thread.

    A batch is closed when it is full or ``max_wait_ms`` after its first job arrived. Jobs are never split, so a
    job larger than ``max_batch`` forms a batch of its own. ``batch_sizes`` records the size of every batch run.
    """

    def __init__(self, reward: RewardModel, *, max_batch: int, max_wait_ms: float, max_queue: int) -> None:
        self.reward = reward
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()  # one model call at a time, also against direct use of the reward

    def full(self) -> bool:
        return self.queue.full()

    async def submit(self, prompts: list[str], items: list[torch.Tensor | None], errors: list[str | None]):
        job = _Job(prompts, items, errors, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return await job.future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0].prompts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:  # a deadline already past times out at once, without taking a job from the queue
                    job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.prompts)
            try:
                out = await loop.run_in_executor(None, self._score, jobs)
            except Exception as err:  # a model error fails the batch's requests, not the server
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            start = 0
            for job in jobs:
                stop = start + len(job.prompts)
                part = RewardOutput(
                    scores=out.scores[start:stop],
                    dims={k: v[start:stop] for k, v in out.dims.items()},
                    failed=out.failed[start:stop],
                    errors=out.errors[start:stop],
                )
                if not job.future.done():
                    job.future.set_result(part)
                start = stop

    def _score(self, jobs: list[_Job]) -> RewardOutput:
        prompts = [p for job in jobs for p in job.prompts]
        errors = [e for job in jobs for e in job.errors]
        prepared = []
        for item, error in zip((m for job in jobs for m in job.media), errors, strict=True):
            prepared.append(None if error else self.reward.prepare(item))
        with self._lock:
            self.batch_sizes.append(len(prompts))
            return self.reward.score_prepared_batch(prompts, prepared, errors)


def create_app(
    reward: RewardModel,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 10.0,
    max_queue: int = 256,
    max_items: int = 256,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
):
    """The FastAPI application serving ``reward``. ``app.state.batcher`` exposes the micro-batcher."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    batcher = MicroBatcher(reward, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
    tasks: list[asyncio.Task] = []

    async def lifespan(app):
        tasks.append(asyncio.create_task(batcher.run()))
        yield
        tasks[0].cancel()

    app = FastAPI(title="mmreward reward server", lifespan=lifespan)
    app.state.batcher = batcher

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": message})

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "name": reward.name,
            "kind": reward.kind,
            "dims": list(reward.dims),
            "raw_range": reward.raw_range,
            "uses_prompt": reward.uses_prompt,
            "max_items": max_items,
        }

    @app.post("/score")
    async def score(request: Request):
        length = request.headers.get("content-length")
        if length is not None and int(length) > max_body_bytes:
            return error(413, f"request body of {int(length):,} bytes is over the server's {max_body_bytes:,}")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "send JSON (content-type: application/json)")
        body = await request.body()
        if len(body) > max_body_bytes:
            return error(413, f"request body of {len(body):,} bytes is over the server's {max_body_bytes:,}")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's recursion limit
            return error(400, "body is not valid JSON")
        prompts = payload.get("prompts") if isinstance(payload, dict) else None
        items = payload.get("media") if isinstance(payload, dict) else None
        if (
            not isinstance(prompts, list)
            or not isinstance(items, list)
            or not all(isinstance(p, str) for p in prompts)
        ):
            return error(400, 'body must be {"prompts": [str, ...], "media": [item, ...]}')
        if len(prompts) != len(items):
            return error(400, f"got {len(prompts)} prompts for {len(items)} media items")
        if len(items) > max_items:
            return error(413, f"{len(items)} items in one request; the server takes at most {max_items}")
        if batcher.full():
            return error(503, "the server's queue is full; retry shortly")
        decoded: list[torch.Tensor | None] = []
        errors: list[str | None] = []
        for item in items:
            try:
                decoded.append(media_from_json(item, reward.max_pixels))
                errors.append(None)
            except MediaError as err:
                decoded.append(None)
                errors.append(str(err))
        try:
            out = await batcher.submit(prompts, decoded, errors)
        except asyncio.QueueFull:
            return error(503, "the server's queue is full; retry shortly")
        except Exception as err:
            return error(500, f"scoring failed: {type(err).__name__}: {err}")
        return output_to_json(out)

    return app


def serve(reward: RewardModel, *, host: str = "127.0.0.1", port: int = 8000, **limits: Any) -> None:
    """Run the server in the foreground (``mmreward serve``)."""
    import uvicorn

    uvicorn.run(create_app(reward, **limits), host=host, port=port, log_level="info")
