"""Stability AI's v2beta image API: a multipart form (even with no file), the
image as raw bytes with `finish-reason` and `seed` headers, and errors as
`{"id", "name", "errors"}`. A CONTENT_FILTERED answer is a 200 with a blurred
image: it is refused here, never handed on as a result.

Endpoint per quality tier, credits per model and the dollar value of a
credit come from config ([stability]); the key from the environment only.
"""

from __future__ import annotations

import httpx

import zmm
from zmm.cloud.providers import CloudImage, CloudRequest, ProviderError
from zmm.cloud.providers._http import RETRY_STATUSES, HttpProvider, excerpt, nearest, require_png, retry_after
from zmm.config import Config

ASPECTS = {"16:9": 16 / 9, "1:1": 1.0, "21:9": 21 / 9, "2:3": 2 / 3, "3:2": 3 / 2,
           "4:5": 4 / 5, "5:4": 5 / 4, "9:16": 9 / 16, "9:21": 9 / 21}
MAX_SEED = 4294967294
RATE_LIMIT_WAIT_S = 60.0  # Stability's time-out after 150 requests in 10 s
_MODEL_NAMES = {"core": "stable-image-core", "ultra": "stable-image-ultra"}


def aspect_ratio(width: int, height: int) -> str:
    return nearest(ASPECTS, width, height)


class Stability(HttpProvider):
    name = "stability"

    def __init__(self, settings: Config, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.endpoints = self.section["endpoint"]
        self.sd3_model = self.section["sd3_model"]
        self.credits = self.section["credits"]
        self.usd_per_credit = float(self.section["usd_per_credit"])

    def _endpoint(self, quality: str) -> str:
        endpoint = str(self.endpoints.get(quality) or "core")
        if endpoint not in ("core", "ultra", "sd3"):
            raise ProviderError(self.name, f"config stability.endpoint.{quality}: core, ultra "
                                f"or sd3, not {endpoint!r}", retry=False)
        return endpoint

    def generate(self, request: CloudRequest) -> CloudImage:
        endpoint = self._endpoint(request.quality)
        model = self.sd3_model if endpoint == "sd3" else _MODEL_NAMES[endpoint]
        fields = {"prompt": request.prompt, "aspect_ratio": aspect_ratio(request.width,
                                                                         request.height),
                  "output_format": "png"}
        if request.negative:
            fields["negative_prompt"] = request.negative
        if request.seed is not None:
            fields["seed"] = str(request.seed % (MAX_SEED + 1))
        if endpoint == "sd3":
            fields["model"] = self.sd3_model
        response = self.post(self.path.format(endpoint=endpoint), data=fields,
                             files={"none": (None, b"")},  # multipart even without a file
                             headers={"accept": "image/*", "stability-client-id": "zmm",
                                      "stability-client-version": zmm.__version__})
        if response.status_code != 200:
            raise self._error(response)
        cost = self._cost(endpoint)
        finish = response.headers.get("finish-reason", "SUCCESS").upper()
        if finish == "CONTENT_FILTERED":
            raise ProviderError(self.name, "CONTENT_FILTERED: the image came back blurred by "
                                "Stability's content filter", retry=False, status=200,
                                cost_usd=cost or 0.0)
        if finish != "SUCCESS":
            raise ProviderError(self.name, f"finish-reason {finish}", retry=False, status=200,
                                cost_usd=cost or 0.0)
        return CloudImage(require_png(self.name, response.content, cost), self.name, model,
                          _int(response.headers.get("seed")), cost,
                          response.headers.get("x-request-id"))

    def _cost(self, endpoint: str) -> float | None:
        key = self.sd3_model if endpoint == "sd3" else endpoint
        credits = self.credits.get(key)
        return None if credits is None else round(float(credits) * self.usd_per_credit, 6)

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and ("name" in body or "errors" in body):
            errors = body.get("errors")
            detail = "; ".join(map(str, errors)) if isinstance(errors, list) else ""
            text = f"{status} {body.get('name') or 'error'}" + (f": {detail}" if detail else "")
        elif isinstance(body, dict) and body.get("message"):
            text = f"{status}: {body['message']}"
        else:
            text = f"{status}: {excerpt(response)}"
        wait = retry_after(response)
        if status == 429 and wait is None:
            wait = RATE_LIMIT_WAIT_S
        return ProviderError(self.name, text, retry=status in RETRY_STATUSES or status >= 500,
                             status=status, retry_after=wait if status == 429 else None)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
