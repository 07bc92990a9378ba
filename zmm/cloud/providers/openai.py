"""OpenAI's Images API (`POST /v1/images/generations`): a JSON request, the
image as base64, and the cost computed from the answer's `usage` tokens at the
configured prices. GPT image models take no seed and no negative prompt: the
negative prompt is folded into the text, and the seed is recorded as none.

A 429 for an exhausted quota is final (openai-python would retry it); other
429s, 408/409 and 5xx are retried, and `x-should-retry` overrides both ways.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import httpx

from zmm.cloud.providers import CloudImage, CloudRequest, ProviderError
from zmm.cloud.providers._http import RETRY_STATUSES, HttpProvider, excerpt, nearest, require_png, retry_after
from zmm.config import Config

SIZES = {"1024x1024": 1.0, "1536x1024": 1.5, "1024x1536": 1024 / 1536}
_QUOTA_CODES = {"insufficient_quota", "credit_balance_exhausted"}


def image_size(width: int, height: int) -> str:
    return nearest(SIZES, width, height)


def folded_prompt(prompt: str, negative: str) -> str:
    return f"{prompt}\n\nAvoid: {negative}" if negative.strip() else prompt


class OpenAIImages(HttpProvider):
    name = "openai"

    def __init__(self, settings: Config, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.model = self.section["model"]
        self.qualities = self.section["quality"]
        self.prices = self.section["prices"]

    def generate(self, request: CloudRequest) -> CloudImage:
        body = {"model": self.model, "prompt": folded_prompt(request.prompt, request.negative),
                "n": 1, "size": image_size(request.width, request.height),
                "quality": str(self.qualities.get(request.quality) or "auto"),
                "output_format": "png"}
        response = self.post(self.path, json=body)
        if response.status_code != 200:
            raise self._error(response)
        try:
            answer = response.json()
            data = base64.b64decode(answer["data"][0]["b64_json"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
            raise ProviderError(self.name, f"an answer without an image: {excerpt(response)}",
                                retry=False) from None
        cost = self.cost(answer.get("usage"))
        return CloudImage(require_png(self.name, data, cost), self.name, self.model, None, cost,
                          response.headers.get("x-request-id"))

    def cost(self, usage: Any) -> float | None:
        """USD from `usage` at the configured per-million-token prices."""
        prices = self.prices.get(self.model)
        if not isinstance(usage, dict) or not isinstance(prices, dict):
            return None
        given = usage.get("input_tokens_details") or {}
        made = usage.get("output_tokens_details") or {}
        text_in = given.get("text_tokens", usage.get("input_tokens", 0))
        image_out = made.get("image_tokens", usage.get("output_tokens", 0))
        total = (float(text_in or 0) * float(prices.get("text_input", 0))
                 + float(given.get("image_tokens") or 0) * float(prices.get("image_input", 0))
                 + float(image_out or 0) * float(prices.get("image_output", 0))
                 + float(made.get("text_tokens") or 0) * float(prices.get("text_output", 0)))
        return round(total / 1_000_000, 6)

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict):
            code = error.get("code") or error.get("type") or "error"
            text = f"{status} {code}: {error.get('message') or ''}".rstrip(": ")
            quota = error.get("code") in _QUOTA_CODES or error.get("type") in _QUOTA_CODES
        else:
            text, quota = f"{status}: {excerpt(response)}", False
        retry = (status in RETRY_STATUSES or status >= 500) and not quota
        should = response.headers.get("x-should-retry", "").lower()
        if should in ("true", "false") and not quota:
            retry = should == "true"
        return ProviderError(self.name, text, retry=retry, status=status,
                             retry_after=retry_after(response) if retry else None)
