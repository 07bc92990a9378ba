"""A fake OpenAI Images server (`POST /v1/images/generations`) following
docs/cloud-protocol.md: bearer auth, the JSON body's allowed values for the
current GPT image models, base64 images at the asked size, `usage` tokens from
the page's figures, and every documented error in OpenAI's `{"error": {...}}` shape.
Where the page is silent: "assumed"."""

from __future__ import annotations

import base64
import json
import math
import random
import re
import time
from typing import Any

from aiohttp import web

from tests.fakes.cloud import REQUEST_ID, REQUEST_LOG, CloudFake, render

OPENAI_MODELS = frozenset([
    "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare",
    "chatgpt-image-latest"])
RETIRED_MODELS = frozenset(["gpt-image-1", "dall-e-2", "dall-e-3"])
FIXED_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
# Output image tokens per 1024x1024 image, scaled by area; xhigh and max (2.5) are assumed.
IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "xhigh": 8320, "max": 16640}
OPENAI_PARAMS = frozenset(["prompt", "model", "n", "size", "quality", "background", "output_format",
                           "output_compression", "moderation", "stream", "partial_images",
                           "safety_identifier", "user"])
_REJECTED = ("Your request was rejected as a result of our safety system. Your request may "
             "contain content that is not allowed by our safety system.")
# kind -> (status, type, code, message); the wording and the 403/429/5xx types are assumed.
OPENAI_ERRORS = {
    "invalid_request": (400, "invalid_request_error", "invalid_value", (
        "Invalid value: 'huge'. Supported values are: 'auto', '1024x1024', '1536x1024', and "
        "'1024x1536'.")),
    "moderation_blocked": (400, "image_generation_user_error", "moderation_blocked", _REJECTED),
    "content_policy_violation": (400, "invalid_request_error", "content_policy_violation", _REJECTED),
    "org_not_verified": (403, "invalid_request_error", None, (
        "Your organization must be verified to use the model `{model}`. Please go to: "
        "https://platform.openai.com/settings/organization/general and click on Verify "
        "Organization.")),
    "rate_limited": (429, "requests", "rate_limit_exceeded", (
        "Rate limit reached for {model} on images per minute (IPM): Limit 5, Used 5, Requested 1.")),
    "insufficient_quota": (429, "insufficient_quota", "insufficient_quota", (
        "You exceeded your current quota, please check your plan and billing details.")),
    "server_error": (500, "server_error", None,
                     "The server had an error while processing your request. Sorry about that!"),
    "overloaded": (503, "server_error", None, "The server is overloaded or not ready yet."),
}
_NOT_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you "
             "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but "
             "what was sent was not valid JSON.)")


class OpenAIError(Exception):
    """One OpenAI error answer; `extra` joins the `error` object (moderation_details)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code, **extra}}


class FakeOpenAI(CloudFake):
    FAULTS = frozenset([*OPENAI_ERRORS, "unauthorized", "hang", "drop"])

    def __init__(self, *, key: str = "sk-test-openai", latency: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(key, latency, host, port)
        self.images_made = 0

    def fail_next(self, kind: str, times: int = 1, retry_after: float | None = None,
                  should_retry: bool | None = None) -> None:
        """The next `times` requests fail as `kind` before any other handling;
        `should_retry` sends `x-should-retry: true|false` (openai-python obeys it)."""
        self._queue(kind, times, retry_after=retry_after, should_retry=should_retry)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/images/generations", self.generate)

    def log_body(self) -> dict[str, Any]:
        return {"json": None}  # stays None without a JSON body

    async def not_found(self, request: web.Request) -> web.Response:
        error = OpenAIError(404, f"Invalid URL ({request.method} {request.path})")
        return self._json(request, error.status, error.body)

    def _json(self, request: web.Request, status: int, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, body=json.dumps(body).encode(), headers={
            "content-type": "application/json", "x-request-id": f"req_{request[REQUEST_ID]}",
            **(headers or {})})

    def _unauthorized(self, request: web.Request) -> web.Response:
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer "):  # assumed: the same code when no key was sent
            message = ("You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        else:
            key = given.removeprefix("Bearer ")
            message = (f"Incorrect API key provided: {key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}. "
                       "You can find your API key at https://platform.openai.com/account/api-keys.")
        return self._json(request, 401, OpenAIError(401, message, code="invalid_api_key").body)

    async def generate(self, request: web.Request) -> web.Response:
        body = await self._read_json(request)
        fault = self._next_fault()
        if fault is not None:
            return await self._answer_fault(request, fault, body)
        if not self._authorized(request):
            return self._unauthorized(request)
        try:
            if not isinstance(body, dict):
                raise OpenAIError(400, _NOT_JSON)
            spec = parse_generation(body)
        except OpenAIError as error:
            return self._json(request, error.status, error.body)
        await self._delay()
        return self._json(request, 200, self._result(spec))

    async def _read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        if request.content_type != "application/json":
            return None  # assumed: any other body is "not valid JSON", whatever it holds
        try:
            request[REQUEST_LOG]["json"] = json.loads(raw)
        except ValueError:
            return None
        return request[REQUEST_LOG]["json"]

    def _scripted(self, request: web.Request, fault: dict[str, Any], body: Any) -> web.Response:
        status, kind, code, message = OPENAI_ERRORS[fault["kind"]]
        model = (body.get("model") if isinstance(body, dict) else None) or "gpt-image-1"
        extra = ({"moderation_details": {"moderation_stage": "input", "categories": ["violence"]}}
                 if code == "moderation_blocked" else {})
        error = OpenAIError(status, message.format(model=model), type=kind, code=code, **extra)
        return self._json(request, status, error.body, self._fault_headers(fault))

    def _result(self, spec: dict[str, Any]) -> dict[str, Any]:
        width, height, n = spec["width"], spec["height"], spec["n"]
        image = render((width, height), spec["output_format"], random.getrandbits(24),
                       transparent=spec["background"] == "transparent")
        self.images_made += n
        output = n * math.ceil(IMAGE_TOKENS[spec["quality"]] * width * height / 1024**2)
        text = math.ceil(len(spec["prompt"].split()) * 1.3)  # a deterministic token estimate
        encoded = base64.b64encode(image).decode()
        return {"created": int(time.time()), "data": [{"b64_json": encoded} for _ in range(n)],
                "background": spec["background"], "output_format": spec["output_format"],
                "quality": spec["quality"], "size": f"{width}x{height}",
                "usage": {"input_tokens": text,
                          "input_tokens_details": {"image_tokens": 0, "text_tokens": text},
                          "output_tokens": output,
                          "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
                          "total_tokens": text + output}}


# -- OpenAI request validation: the first error found, as OpenAI answers one ------------------

def parse_generation(body: dict[str, Any]) -> dict[str, Any]:
    """The generation a valid body asks for (auto resolved), or OpenAIError."""
    for name in body:
        if name not in OPENAI_PARAMS:  # also the legacy-only response_format/style (assumed)
            raise OpenAIError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    if body.get("prompt") is None:
        raise OpenAIError(400, "Missing required parameter: 'prompt'.", param="prompt",
                          code="missing_required_parameter")
    prompt = _typed(body, "prompt", str)
    if not prompt:
        raise OpenAIError(400, "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
                          "but got an empty string instead.", param="prompt", code="empty_string")
    if len(prompt) > 32_000:
        raise OpenAIError(400, "Invalid 'prompt': string too long. Expected a string with maximum length "
                          f"32000, but got a string with length {len(prompt)} instead.", param="prompt",
                          code="string_above_max_length")
    model = _model(body)
    qualities = ["auto", "low", "medium", "high"] + (["xhigh", "max"] if "2.5-" in model else [])
    # assumed: the gif/svg preview formats are not enabled (the notes do not say for whom)
    spec = {"prompt": prompt, "n": _integer(body, "n", 1, 10, 1),
            "quality": _one_of(body, "quality", qualities, "auto"),
            "background": _one_of(body, "background", ["transparent", "opaque", "auto"], "auto"),
            "output_format": _one_of(body, "output_format", ["png", "webp", "jpeg"], "png")}
    spec["width"], spec["height"] = _size(_one_of(body, "size", None, "auto"),
                                          arbitrary=model.startswith("gpt-image-2"))
    _one_of(body, "moderation", ["low", "auto"], "auto")
    compression = _integer(body, "output_compression", 0, 100, None)
    _integer(body, "partial_images", 0, 3, 0)
    for name in ("safety_identifier", "user"):
        _typed(body, name, str)
    if _typed(body, "stream", bool):  # the fake's limit, not OpenAI's: zmm does not stream
        raise OpenAIError(400, "FakeOpenAI does not implement stream=true.", param="stream")
    _combinations(spec, compression)
    spec["quality"] = "medium" if spec["quality"] == "auto" else spec["quality"]  # assumed
    spec["background"] = "transparent" if spec["background"] == "transparent" else "opaque"  # assumed
    return spec


def _combinations(spec: dict[str, Any], compression: int | None) -> None:
    """Rules across fields; assumed: the notes only say which formats each one is for."""
    if compression not in (None, 100) and spec["output_format"] == "png":
        raise OpenAIError(400, "Compression less than 100 is only supported for webp and jpeg "
                          "output formats.", param="output_compression", code="invalid_value")
    if spec["background"] == "transparent" and spec["output_format"] == "jpeg":
        raise OpenAIError(400, "Transparent background is not supported for the jpeg output "
                          "format.", param="background", code="invalid_value")


def _model(body: dict[str, Any]) -> str:
    # assumed: an omitted model means dall-e-2 (the documented default), now retired; a
    # retired or unknown model is a 404 model_not_found, as OpenAI answers for shut-down models.
    model = _typed(body, "model", str) or "dall-e-2"
    if model in RETIRED_MODELS:
        raise OpenAIError(404, f"The model `{model}` has been deprecated, learn more here: "
                          "https://platform.openai.com/docs/deprecations", param="model",
                          code="model_not_found")
    if model not in OPENAI_MODELS:
        raise OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                          param="model", code="model_not_found")
    return model


def _size(value: str, *, arbitrary: bool) -> tuple[int, int]:
    if value == "auto":
        return 1024, 1024  # assumed: auto picks the square size
    match = re.fullmatch(r"([1-9]\d{0,4})x([1-9]\d{0,4})", value)
    if value not in FIXED_SIZES and not (arbitrary and match):
        raise OpenAIError(400, f"Invalid value: '{value}'. Supported values are: {_listed(FIXED_SIZES)}.",
                          param="size", code="invalid_value")
    width, height = map(int, match.groups())
    # gpt-image-2.x: both multiples of 16, aspect 1:3 to 3:1, at most 3840x2160 either way
    # round (assumed: at most 3840*2160 pixels, and no minimum beyond 16).
    if (width % 16 or height % 16 or max(width, height) > 3 * min(width, height)
            or max(width, height) > 3840 or width * height > 3840 * 2160):
        raise OpenAIError(400, f"Invalid value: '{value}'. Width and height must be multiples of 16, "
                          "with an aspect ratio between 1:3 and 3:1, and at most 3840x2160.",
                          param="size", code="invalid_value")
    return width, height


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", float: "a decimal",
               list: "an array", dict: "an object"}


def _typed(body: dict[str, Any], name: str, kind: type) -> Any:
    """The value of `name` if it has the JSON type `kind`; None when absent or null (assumed)."""
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise OpenAIError(400, f"Invalid type for '{name}': expected {_TYPE_NAMES[kind]}, but got "
                          f"{_TYPE_NAMES.get(type(value), 'a value')} instead.", param=name,
                          code="invalid_type")
    return value


def _one_of(body: dict[str, Any], name: str, allowed: list[str] | None, default: str) -> str:
    value = _typed(body, name, str)
    if value is not None and allowed is not None and value not in allowed:
        raise OpenAIError(400, f"Invalid value: '{value}'. Supported values are: {_listed(allowed)}.",
                          param=name, code="invalid_value")
    return default if value is None else value


def _integer(body: dict[str, Any], name: str, low: int, high: int, default: int | None) -> int | None:
    value = _typed(body, name, int)
    if value is not None and not low <= value <= high:
        side, bound, code = (("below minimum", f">= {low}", "integer_below_min_value") if value < low
                             else ("above maximum", f"<= {high}", "integer_above_max_value"))
        raise OpenAIError(400, f"Invalid '{name}': integer {side} value. Expected a value {bound}, but "
                          f"got {value} instead.", param=name, code=code)
    return default if value is None else value


def _listed(values: Any) -> str:
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
