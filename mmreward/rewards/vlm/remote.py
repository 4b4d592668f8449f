"""Generative judges served by vLLM or SGLang, through their OpenAI-compatible chat completions API.

The judge's checkpoint runs in a server (``vllm serve CodeGoat24/UnifiedReward-Think-qwen3vl-8b ...``); these
classes send each judgment as a chat request and read the written answer with the same templates and parsers
as the local judges (:mod:`mmreward.rewards.vlm.judging`), so local and remote judges give the same verdict for
the same text. Pairs, presentation orders, win rates and failures behave exactly as for local judges.

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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from PIL import Image

from mmreward.errors import ConfigError
from mmreward.rewards.vlm.judging import (
    Candidate,
    IfShort,
    Judgment,
    PairwiseJudgeBase,
    PointwiseJudgeBase,
    Request,
    judgment_from_text,
    scores_from_text,
)
from mmreward.rewards.vlm.templates import MediaKind, MediaPart, TemplateKind, TemplateSection, TextPart

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass
class Completion:
    """One chat completion: the text and whether it was cut by ``max_tokens``, or the error."""

    text: str | None
    truncated: bool = False
    error: str | None = None


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
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class _RemoteJudge:
    """Client setup, image encoding and chat messages shared by the remote judges."""

    template_kind: TemplateKind

    def _setup_remote(
        self,
        endpoint: str,
        model: str,
        api_key: str | None,
        api_key_env: str | None,
        max_concurrency: int,
        timeout_s: float,
        retries: int,
        max_new_tokens: int,
        temperature: float,
        jpeg_quality: int,
        image_max_pixels: int | None,
    ) -> None:
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if api_key is None:
                raise ConfigError(f"api_key_env={api_key_env!r} is set but the environment has no such variable")
        self.client = ChatClient(
            endpoint, model, api_key=api_key, max_concurrency=max_concurrency, timeout_s=timeout_s, retries=retries
        )
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.jpeg_quality = jpeg_quality
        self.image_max_pixels = image_max_pixels
        self.weights_id = f"{model} @ {endpoint}"

    def prepare_candidate(self, kind: MediaKind, frames: torch.Tensor) -> list[str]:
        return [jpeg_data_url(f, self.jpeg_quality, self.image_max_pixels) for f in frames.unbind(0)]

    def _request(
        self, section: TemplateSection, prompt: str, slots: dict[str, list[str]], **fields: Any
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in section.render(prompt, num_frames=self.video_num_frames, **fields):
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, MediaPart):
                content.extend({"type": "image_url", "image_url": {"url": url}} for url in slots[part.slot])
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if section.system:
            messages.insert(0, {"role": "system", "content": section.system})
        return {"messages": messages, "max_tokens": self.max_new_tokens, "temperature": self.temperature}


class RemotePairwiseJudge(_RemoteJudge, PairwiseJudgeBase):
    """A pairwise judge behind an OpenAI-compatible server; verdicts are parsed from the written answer.

    Args:
        endpoint: API base URL (loopback by default); ``model``: the served model name.
        api_key / api_key_env: bearer token, or the name of the environment variable holding it.
        template / template_file: as for local judges.
        max_new_tokens, temperature: decoding (greedy by default).
        max_concurrency, timeout_s, retries: transport limits (see :class:`ChatClient`).
        jpeg_quality: JPEG quality of the images sent; image_max_pixels: downscale larger images first.
        max_images, if_short: as for local judges.
    """

    def __init__(
        self,
        *,
        endpoint: str = "http://127.0.0.1:8000/v1",
        model: str = "UnifiedReward",
        api_key: str | None = None,
        api_key_env: str | None = None,
        template: str | None = "unifiedreward-pairwise",
        template_file: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        retries: int = 3,
        jpeg_quality: int = 95,
        image_max_pixels: int | None = None,
        max_images: int | None = None,
        if_short: IfShort = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._setup_judge(template, template_file, if_short, max_images, images_per_prompt=2)
        self._setup_remote(
            endpoint, model, api_key, api_key_env, max_concurrency, timeout_s, retries, max_new_tokens,
            temperature, jpeg_quality, image_max_pixels,
        )  # fmt: skip

    def run_judgments(
        self, prompts: list[str], candidates: list[Candidate], requests: list[Request]
    ) -> list[Judgment]:
        payloads, sections = [], []
        for r in requests:
            first, second = candidates[r.first], candidates[r.second]
            section = self.template.section(first.kind)
            payloads.append(self._request(section, prompts[r.prompt], {"media_a": first.data, "media_b": second.data}))
            sections.append(section)
        judgments = []
        for section, done in zip(sections, self.client.complete(payloads), strict=True):
            if done.text is None:
                judgments.append(Judgment.failure(done.error or "request failed"))
            else:
                judgments.append(
                    judgment_from_text(self.template_kind, section, done.text, done.truncated, self.max_new_tokens)
                )
        return judgments


class RemoteCoTJudge(RemotePairwiseJudge):
    """A chain-of-thought pairwise judge behind an OpenAI-compatible server (UnifiedReward-Think)."""

    template_kind: TemplateKind = "cot"

    def __init__(
        self,
        *,
        template: str | None = "unifiedreward-think",
        model: str = "UnifiedReward-Think",
        max_new_tokens: int = 2048,
        **kwargs: Any,
    ) -> None:
        super().__init__(template=template, model=model, max_new_tokens=max_new_tokens, **kwargs)


class RemotePointwiseJudge(_RemoteJudge, PointwiseJudgeBase):
    """A pointwise judge behind an OpenAI-compatible server; per-dimension scores are parsed from the answer.

    Arguments as for :class:`RemotePairwiseJudge` (``template`` defaults to ``"unifiedreward-pointwise"``).
    """

    def __init__(
        self,
        *,
        endpoint: str = "http://127.0.0.1:8000/v1",
        model: str = "UnifiedReward",
        api_key: str | None = None,
        api_key_env: str | None = None,
        template: str | None = "unifiedreward-pointwise",
        template_file: str | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        retries: int = 3,
        jpeg_quality: int = 95,
        image_max_pixels: int | None = None,
        max_images: int | None = None,
        if_short: IfShort = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._setup_judge(template, template_file, if_short, max_images, images_per_prompt=1)
        low, high = self.template.score_range
        self.raw_range = (float(low), float(high))
        self._setup_remote(
            endpoint, model, api_key, api_key_env, max_concurrency, timeout_s, retries, max_new_tokens,
            temperature, jpeg_quality, image_max_pixels,
        )  # fmt: skip

    def run_scores(
        self, prompts: list[str], candidates: list[Candidate]
    ) -> list[tuple[dict[str, float] | None, str | None, str | None]]:
        sections = [self.template.section(c.kind) for c in candidates]
        payloads = [
            self._request(section, prompt, {"media": c.data})
            for section, prompt, c in zip(sections, prompts, candidates, strict=True)
        ]
        results = []
        for section, done in zip(sections, self.client.complete(payloads), strict=True):
            if done.text is None:
                results.append((None, None, done.error or "request failed"))
            else:
                results.append(
                    scores_from_text(
                        section, self.template.score_range, done.text, done.truncated, self.max_new_tokens
                    )
                )
        return results
