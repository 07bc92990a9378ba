"""Fake Stability AI (REST v2beta stable-image) and OpenAI Images servers, following
shared/protocols/cloud.md field for field: bearer auth, multipart or JSON bodies, the
allowed values, real Pillow images at the real output sizes, credits and token usage,
and scripted faults (every documented error status and shape, a hang, a dropped
connection). Where the notes are silent the choice is marked "assumed"."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import json
import math
import random
import re
import secrets
import time
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.server import BackgroundServer

_FAST = {"png": {"compress_level": 1}, "webp": {"lossless": True, "method": 0}}
_KEY = getattr(web, "RequestKey", lambda name, _type: name)  # aiohttp < 3.12: plain str keys
_ID, _LOG = _KEY("id", str), _KEY("log", dict)


@functools.lru_cache(maxsize=64)  # encoding takes tens of ms; tests ask for few variants
def render(size: tuple[int, int], fmt: str, seed: int, *, blurred: bool = False,
           transparent: bool = False) -> bytes:
    """A real image: one of 8 solid colours by seed (so seeds differ), or blurred noise."""
    mode, shade = ("RGBA" if transparent else "RGB"), seed % 8
    colour = (shade * 32, 255 - shade * 32, 128) + ((0,) if transparent else ())
    image = Image.new(mode, size, colour)
    if blurred:  # noise upscaled smoothly: a blurred solid colour would look unfiltered
        image = Image.effect_noise((size[0] // 32, size[1] // 32), 80).convert(mode).resize(
            size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, fmt.upper(), **_FAST.get(fmt, {}))
    return buffer.getvalue()


class _CloudFake(BackgroundServer):
    """What both fakes share: the request log, scripted faults, hang and drop. A subclass
    gives add_routes, not_found, log_body (its part of a log entry), _unauthorized and
    _scripted (a fault's error answer)."""

    FAULTS: frozenset[str] = frozenset()

    def __init__(self, key: str, latency: float, host: str, port: int) -> None:
        super().__init__(host, port)
        self.key, self.latency = key, latency
        self.requests: list[dict[str, Any]] = []
        self._faults: list[dict[str, Any]] = []
        self._released: asyncio.Event | None = None

    def _queue(self, kind: str, times: int, **options: Any) -> None:
        if kind not in self.FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(self.FAULTS)}")
        self._faults.extend({"kind": kind, **options} for _ in range(times))

    def _next_fault(self) -> dict[str, Any] | None:
        return self._faults.pop(0) if self._faults else None

    def build_app(self) -> web.Application:
        # 10 MiB is Stability's documented body limit; aiohttp's default is 1 MiB.
        app = web.Application(middlewares=[self._log], client_max_size=10 * 1024**2)
        self.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def on_started(self) -> None:
        self._released = asyncio.Event()

    async def _delay(self) -> None:
        """`latency` seconds, cut short when the server stops (a slow answer must not
        hold up the runner's cleanup)."""
        if self.latency:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.latency)

    async def on_stopping(self) -> None:
        self._released.set()  # a hung handler must end, or the runner waits for it

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[_ID] = secrets.token_hex(16)
        request[_LOG] = {"path": request.path, "method": request.method,
                         "headers": {k.lower(): v for k, v in request.headers.items()},
                         **self.log_body()}
        self.requests.append(request[_LOG])
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.key}"

    async def _answer_fault(self, request: web.Request, fault: dict[str, Any],
                            body: Any = None) -> web.Response:
        """A hang or a drop (no answer at all), a 401, or the fault's scripted error."""
        if fault["kind"] in ("hang", "drop"):
            if fault["kind"] == "hang":
                await self._released.wait()
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        if fault["kind"] == "unauthorized":
            return self._unauthorized(request)
        return self._scripted(request, fault, body)

    @staticmethod
    def _fault_headers(fault: dict[str, Any]) -> dict[str, str]:
        headers = {}
        if fault.get("retry_after") is not None:
            headers["retry-after"] = f"{fault['retry_after']:g}"
        if fault.get("should_retry") is not None:
            headers["x-should-retry"] = "true" if fault["should_retry"] else "false"
        return headers


# -- Stability AI ---------------------------------------------------------------------------

STABILITY_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640),
                   "2:3": (832, 1216), "3:2": (1216, 832), "4:5": (896, 1088),
                   "5:4": (1088, 896), "9:16": (768, 1344), "9:21": (640, 1536)}
STYLE_PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art",
                 "enhance", "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound",
                 "neon-punk", "origami", "photographic", "pixel-art", "tile-texture")
SD3_MODELS = {"sd3.5-large": 6.5, "sd3.5-large-turbo": 4.0, "sd3.5-medium": 3.5}  # credits
PRICES = {"core": 3.0, "ultra": 8.0}
MAX_SEED = 4_294_967_294
NO_CREDITS = ("You lack sufficient credits to make this request. Please purchase more credits at "
              "https://platform.stability.ai/account/credits and try again.")
# kind -> (status, name, message); the names and wording for 413/422/429/500 are assumed.
STABILITY_ERRORS = {
    "bad_request": (400, "bad_request", "prompt: is required"),
    "payment_required": (402, "payment_required", NO_CREDITS),
    "content_moderation": (403, "content_moderation", ("Your request was flagged by our content "
                           "moderation system. You were not charged for this request.")),
    "too_large": (413, "payload_too_large", "Your request was larger than 10MiB."),
    "rejected": (422, "invalid_language", "English is the only supported language for this service."),
    "rate_limited": (429, "rate_limit_exceeded", ("You have exceeded the rate limit of 150 "
                     "requests within a 10 second period, and have been timed out for 60 seconds.")),
    "server_error": (500, "internal_error", "An unexpected server error has occurred."),
}


class FakeStability(_CloudFake):
    FAULTS = frozenset([*STABILITY_ERRORS, "unauthorized", "content_filtered", "hang", "drop"])

    def __init__(self, *, key: str = "sk-test-stability", credits: float | None = None,
                 latency: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(key, latency, host, port)
        self.credits = credits  # the balance left (settable); None = unlimited
        self.credits_used = 0.0

    def fail_next(self, kind: str, times: int = 1, retry_after: float | None = None) -> None:
        """The next `times` requests fail as `kind` before any other handling. Real
        Stability times a client out for 60 s after a 429; `retry_after` sets the header.
        `content_filtered` still validates and charges, and answers 200 with a blurred image."""
        self._queue(kind, times, retry_after=retry_after)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2beta/stable-image/generate/{endpoint:core|ultra|sd3}", self.generate)

    def log_body(self) -> dict[str, Any]:
        return {"fields": {}, "files": []}

    async def not_found(self, request: web.Request) -> web.Response:  # assumed: name and text
        return self._error(request, 404, "not_found", [f"{request.method} {request.path}: not found"])

    def _error(self, request: web.Request, status: int, name: str, errors: list[str],
               headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"id": request[_ID], "name": name, "errors": errors}, status=status,
                                 headers={"x-request-id": request[_ID], **(headers or {})})

    def _unauthorized(self, request: web.Request) -> web.Response:
        # The notes' *reported* shape, not {"id","name","errors"}: a client must not count
        # on `errors` in a 401. Assumed: the same for a missing and a wrong key.
        return web.json_response({"message": "Incorrect API key provided"}, status=401,
                                 headers={"x-request-id": request[_ID]})

    async def generate(self, request: web.Request) -> web.Response:
        form = await self._read_form(request)
        fault = self._next_fault()
        filtered = fault is not None and fault["kind"] == "content_filtered"
        if fault is not None and not filtered:
            return await self._answer_fault(request, fault)
        if not self._authorized(request):
            return self._unauthorized(request)
        if form is None:  # assumed wording
            return self._error(request, 400, "bad_request", ["content-type: must be multipart/form-data"])
        fields, files = form
        endpoint = request.match_info["endpoint"]
        errors = _header_errors(request) + _form_errors(endpoint, fields, files)
        if errors:
            return self._error(request, 400, "bad_request", errors)
        cost = SD3_MODELS[fields.get("model", "sd3.5-large")] if endpoint == "sd3" else PRICES[endpoint]
        if self.credits is not None and self.credits < cost:
            return self._error(request, 402, "payment_required", [NO_CREDITS])
        await self._delay()
        seed = int(fields.get("seed") or 0) or random.randint(1, MAX_SEED)
        fmt = fields.get("output_format", "png")
        # assumed: image-to-image keeps the input's size (aspect_ratio is text-to-image only)
        size = (_decoded_size(files["image"]) if _image_to_image(endpoint, fields, files)
                else STABILITY_SIZES[fields.get("aspect_ratio", "1:1")])
        image = render(size, fmt, seed, blurred=filtered)
        self.credits_used += cost  # assumed: a CONTENT_FILTERED result is charged too
        if self.credits is not None:
            self.credits -= cost
        return self._image(request, image, fmt, seed, "CONTENT_FILTERED" if filtered else "SUCCESS")

    async def _read_form(self, request: web.Request) -> tuple[dict[str, str], dict[str, bytes]] | None:
        """Text fields and file parts of a multipart body (logged); None if it is not one."""
        if not request.content_type.startswith("multipart/form-data"):
            await request.read()
            return None
        fields, files = request[_LOG]["fields"], {}
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.filename is not None:
                    files[part.name] = bytes(await part.read())
                    request[_LOG]["files"].append(part.name)
                else:
                    fields[part.name] = await part.text()  # assumed: a repeated field, the last wins
        except (ValueError, AssertionError, RuntimeError):
            return None  # a malformed multipart body is refused like a non-multipart one
        return fields, files

    def _scripted(self, request: web.Request, fault: dict[str, Any], _body: Any) -> web.Response:
        status, name, message = STABILITY_ERRORS[fault["kind"]]
        return self._error(request, status, name, [message], self._fault_headers(fault))

    def _image(self, request: web.Request, image: bytes, fmt: str, seed: int, reason: str) -> web.Response:
        if request.headers.get("accept") == "application/json":
            # assumed: the finish reason and seed are only in the body here, not in headers
            body = {"image": base64.b64encode(image).decode(), "finish_reason": reason, "seed": seed}
            return web.Response(body=json.dumps(body).encode(), headers={
                "content-type": f"application/json; type=image/{fmt}", "x-request-id": request[_ID]})
        return web.Response(body=image, headers={
            "content-type": f"image/{fmt}", "finish-reason": reason, "seed": str(seed),
            "x-request-id": request[_ID]})


def _header_errors(request: web.Request) -> list[str]:
    errors = []
    # assumed: only the two documented values, so httpx's default `*/*` is refused too
    if request.headers.get("accept", "image/*") not in ("image/*", "application/json"):
        errors.append("accept: must be one of image/*, application/json")
    for name in ("stability-client-id", "stability-client-user-id", "stability-client-version"):
        if len(request.headers.get(name, "")) > 256:
            errors.append(f"{name}: must be at most 256 characters")
    return errors


def _form_errors(endpoint: str, fields: dict[str, str], files: dict[str, bytes]) -> list[str]:
    """Every invalid field. Assumed: all are reported at once, and unknown fields (like the
    dummy `none` file part) are ignored."""
    errors = []
    prompt = fields.get("prompt")
    if prompt is None:
        errors.append("prompt: is required")
    elif not 1 <= len(prompt) <= 10_000:
        errors.append("prompt: must be between 1 and 10000 characters")
    if len(fields.get("negative_prompt", "")) > 10_000:
        errors.append("negative_prompt: must be at most 10000 characters")
    formats = ("png", "jpeg") if endpoint == "sd3" else ("jpeg", "png", "webp")
    choices = {"aspect_ratio": STABILITY_SIZES, "style_preset": STYLE_PRESETS, "output_format": formats}
    if endpoint == "sd3":
        choices |= {"model": SD3_MODELS, "mode": ("text-to-image", "image-to-image")}
        errors += _range_error(fields, "cfg_scale", 1, 10, float)
    errors += [f"{name}: must be one of {', '.join(allowed)}" for name, allowed in choices.items()
               if name in fields and fields[name] not in allowed]
    errors += _range_error(fields, "seed", 0, MAX_SEED, int)
    if _image_to_image(endpoint, fields, files):
        errors += [] if "strength" in fields else ["strength: is required"]  # assumed
        errors += _range_error(fields, "strength", 0, 1, float)
        if _decoded_size(files.get("image", b"")) is None:
            errors.append("image: is required" if "image" not in files else "image: is not an image")
    return errors


def _range_error(fields: dict[str, str], name: str, low: float, high: float, kind: type) -> list[str]:
    if name not in fields:
        return []
    try:
        if low <= kind(fields[name]) <= high:
            return []
    except ValueError:
        pass
    return [f"{name}: must be {'an integer' if kind is int else 'a number'} between {low} and {high}"]


def _image_to_image(endpoint: str, fields: dict[str, str], files: dict[str, bytes]) -> bool:
    if endpoint == "sd3":
        return fields.get("mode") == "image-to-image"
    return endpoint == "ultra" and "image" in files  # assumed: core ignores an `image` part


def _decoded_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - whatever Pillow raises, it is not an image
        return None


# -- OpenAI Images --------------------------------------------------------------------------

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


class FakeOpenAI(_CloudFake):
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
            "content-type": "application/json", "x-request-id": f"req_{request[_ID]}", **(headers or {})})

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
            request[_LOG]["json"] = json.loads(raw)
        except ValueError:
            return None
        return request[_LOG]["json"]

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
