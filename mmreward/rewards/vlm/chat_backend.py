"""The chat judge backend: a judge's checkpoint served by vLLM or SGLang, asked through their OpenAI-compatible
chat completions API.

The checkpoint runs in a server (``vllm serve CodeGoat24/UnifiedReward-Think-qwen3vl-8b ...``); :class:`ChatBackend`
sends each question as a chat request and returns the written answer, which the judge's task reads with the same
templates and parsers as with the local backend, so both give the same verdict for the same text. Pairs,
presentation orders, win rates and failures behave exactly as with the local backend.

Transport, following the public UnifiedReward and Flow-GRPO clients but without their pitfalls:

- ``POST {endpoint}/chat/completions`` with JSON only; images as base64 JPEG data URLs (quality 95), videos as
  ``video_num_frames`` frames, each an image; greedy decoding (``temperature=0``) by default.
- async ``httpx`` with bounded concurrency (``max_concurrency`` requests in flight), a timeout per request, and
  retries with exponential backoff on connection errors, timeouts, HTTP 429 and 5xx; other HTTP errors fail the
  judgment at once with the server's message. A failed request fails its judgment, not the batch.
- the endpoint defaults to loopback (``http://127.0.0.1:8000/v1``); an API key is read from ``api_key`` or from
  the environment variable named by ``api_key_env``, never written into configs by mmreward.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import os
import random
import threading
from typing import Any, ClassVar
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from mmreward.errors import ConfigError
from mmreward.media import to_pil
from mmreward.rewards.vlm.judge_base import Completion, JudgeBackend, JudgePrompt
from mmreward.rewards.vlm.templates import MediaPart, TextPart

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class ChatClient:
    """An async OpenAI-compatible chat client with bounded concurrency, retries and timeouts.

    Args:
        endpoint: base URL of the API, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model name (vLLM's ``--served-model-name``).
        api_key: bearer token, if the server wants one.
        max_concurrency: requests in flight at once.
        timeout_s: per-request timeout in seconds.
        retries: extra attempts after a retryable failure; ``backoff_s`` doubles each time up to ``max_backoff_s``.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 10.0,
    ) -> None:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"endpoint must be an http(s) URL such as http://127.0.0.1:8000/v1, got {endpoint!r}")
        if max_concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise ConfigError("max_concurrency must be >= 1, retries >= 0 and timeout_s > 0")
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def complete(self, requests: list[dict[str, Any]]) -> list[Completion]:
        """Send chat requests (``messages`` plus sampling fields) and return one :class:`Completion` each."""
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._complete_all(requests))
        # Called from inside a running event loop (a notebook, an async trainer): run ours in a thread.
        result: list[Completion] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                result.extend(asyncio.run(self._complete_all(requests)))
            except BaseException as err:  # re-raised in the caller's thread
                error.append(err)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result

    async def _complete_all(self, requests: list[dict[str, Any]]) -> list[Completion]:
        import httpx

        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        semaphore = asyncio.Semaphore(self.max_concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self.headers) as client:
            return await asyncio.gather(*(self._complete_one(client, semaphore, r) for r in requests))

    async def _complete_one(self, client, semaphore: asyncio.Semaphore, request: dict[str, Any]) -> Completion:
        import httpx

        body = {"model": self.model, **request}
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (1 + 0.1 * random.random()))
            try:
                async with semaphore:
                    response = await client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s:g} s"
                continue
            except httpx.TransportError as err:
                last = f"connection error: {err!r}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                return Completion(None, error=f"HTTP {response.status_code} from {self.url}: {response.text[:300]}")
            return _read_completion(response)
        return Completion(None, error=f"{self.url} failed after {self.retries + 1} attempt(s); last: {last}")


def _read_completion(response) -> Completion:
    try:
        choice = response.json()["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        return Completion(None, error=f"malformed chat completion ({err!r}): {response.text[:200]}")
    if not isinstance(text, str):
        return Completion(None, error=f"chat completion has no text content: {response.text[:200]}")
    return Completion(text, truncated=choice.get("finish_reason") == "length")


def jpeg_data_url(image: torch.Tensor, quality: int = 95, max_pixels: int | None = None) -> str:
    """A ``(3, H, W)`` float image in [0, 1] as a base64 JPEG data URL, downscaled to ``max_pixels`` if larger."""
    height, width = image.shape[-2:]
    if max_pixels is not None and height * width > max_pixels:
        scale = math.sqrt(max_pixels / (height * width))
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        image = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class ChatBackend(JudgeBackend):
    """A judge's checkpoint behind an OpenAI-compatible server; answers are always written.

    Args:
        endpoint: API base URL (loopback by default); ``model``: the served model name.
        api_key / api_key_env: bearer token, or the name of the environment variable holding it.
        max_concurrency, timeout_s, retries: transport limits (see :class:`ChatClient`).
        jpeg_quality: JPEG quality of the images sent; image_max_pixels: downscale larger images first.
    """

    reads_logits: ClassVar[bool] = False

    def __init__(
        self,
        *,
        endpoint: str = "http://127.0.0.1:8000/v1",
        model: str,
        api_key: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        retries: int = 3,
        jpeg_quality: int = 95,
        image_max_pixels: int | None = None,
    ) -> None:
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if api_key is None:
                raise ConfigError(f"api_key_env={api_key_env!r} is set but the environment has no such variable")
        self.client = ChatClient(
            endpoint, model, api_key=api_key, max_concurrency=max_concurrency, timeout_s=timeout_s, retries=retries
        )
        self.jpeg_quality = jpeg_quality
        self.image_max_pixels = image_max_pixels
        self.weights_id = f"{model} @ {endpoint}"

    def prepare(self, frames: torch.Tensor) -> list[str]:
        return [jpeg_data_url(f, self.jpeg_quality, self.image_max_pixels) for f in frames.unbind(0)]

    def request(
        self, prompt: JudgePrompt, candidates: list[list[str]], max_new_tokens: int, temperature: float
    ) -> dict[str, Any]:
        """The chat request of one prompt: its text, each slot's images as data URLs, and the decoding fields."""
        content: list[dict[str, Any]] = []
        for part in prompt.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, MediaPart):
                urls = candidates[prompt.media[part.slot]]
                content.extend({"type": "image_url", "image_url": {"url": url}} for url in urls)
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if prompt.system:
            messages.insert(0, {"role": "system", "content": prompt.system})
        return {"messages": messages, "max_tokens": max_new_tokens, "temperature": temperature}

    def generate(
        self,
        candidates: list[Any],
        prompts: list[JudgePrompt],
        *,
        max_new_tokens: int,
        temperature: float,
        batch_size: int,
    ) -> list[Completion]:
        # batch_size does not apply: the server batches, and max_concurrency bounds the requests in flight.
        return self.client.complete([self.request(p, candidates, max_new_tokens, temperature) for p in prompts])
