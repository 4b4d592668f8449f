"""A reward served by ``mmreward serve`` on another process or machine, behind the usual contract.

    rm = mmreward.load_reward("http://127.0.0.1:8000")
    out = rm.score(prompts, media)

Media are sent as lossless PNG frames in JSON (never pickle); the server micro-batches concurrent clients.
Timeouts and transport errors raise :class:`~mmreward.errors.MMRewardError` naming the server; items the server
could not decode come back as failed items with the server's reason; a NaN score the model itself gave (sent as
JSON null) comes back as NaN on an item that did not fail, as the local reward reports it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mmreward.errors import ConfigError, MMRewardError
from mmreward.media_codec import media_to_json
from mmreward.rewards.base import RewardModel, RewardOutput


class RemoteReward(RewardModel):
    """Client of an ``mmreward serve`` server; ``kind``, ``dims`` and ``raw_range`` come from its ``/info``.

    Args:
        url: the server's base URL (``http://host:port``).
        timeout: seconds to wait for one request.
    """

    def __init__(self, url: str, timeout: float = 120.0, **kwargs: Any) -> None:
        import httpx

        super().__init__(**kwargs)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.Client(base_url=self.url, timeout=timeout)
        info = self._request("GET", "/info")
        if info.get("kind") != "pointwise":
            raise ConfigError(f"{url} serves a {info.get('kind')!r} reward; RemoteReward supports pointwise rewards")
        self.dims = tuple(info["dims"])
        self.raw_range = tuple(info["raw_range"]) if info.get("raw_range") else None
        self.uses_prompt = bool(info["uses_prompt"])
        self.max_items = int(info["max_items"])
        self.weights_id = f"{self.url} ({info['name']})"

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise MMRewardError(f"reward server {self.url} is unreachable: {type(err).__name__}: {err}") from err
        if response.status_code != 200:
            detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else ""
            raise MMRewardError(f"reward server {self.url} answered {response.status_code}: {detail or response.text}")
        return response.json()

    def prepare(self, media: torch.Tensor) -> dict[str, Any]:
        return media_to_json(media)

    def score_prepared_batch(self, prompts: list[str], prepared: list[Any], errors: list[str | None]) -> RewardOutput:
        """Send the valid items in requests of at most the server's ``max_items``; the server's per-item failures
        (an image it could not decode) come back as failed items with its reason."""
        size = len(prepared)
        scores = torch.full((size,), math.nan)
        dims = {name: torch.full((size,), math.nan) for name in self.dims}
        errors = list(errors)
        valid = [i for i in range(size) if errors[i] is None]
        for start in range(0, len(valid), self.max_items):
            chunk = valid[start : start + self.max_items]
            body = {"prompts": [prompts[i] for i in chunk], "media": [prepared[i] for i in chunk]}
            reply = self._request("POST", "/score", json=body)
            for k, i in enumerate(chunk):
                if reply["failed"][k]:
                    errors[i] = f"server: {reply['errors'][k]}"
                    continue
                # JSON has no NaN: the server sends a non-finite value of an item it scored as null.
                scores[i] = _nan_for_null(reply["scores"][k])
                for name in self.dims:
                    dims[name][i] = _nan_for_null(reply["dims"][name][k])
        failed = torch.tensor([e is not None for e in errors], dtype=torch.bool)
        return RewardOutput(scores=scores, dims=dims, failed=failed, errors=errors)

    def score_prepared(self, prompts: list[str], inputs: list[Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.score_prepared_batch(prompts, inputs, [None] * len(inputs))
        if out.failed.any():
            first = int(out.failed.nonzero()[0])
            raise MMRewardError(f"reward server {self.url} failed item {first}: {out.errors[first]}")
        return out.scores, out.dims


def _nan_for_null(value: float | None) -> float:
    return math.nan if value is None else value
