"""A fake Stability AI v2beta stable-image server (core, ultra, sd3) following
docs/cloud-protocol.md: bearer auth, a multipart form even without a file,
the allowed values of every field, real images at the real output sizes, raw
bytes or base64 JSON by `accept`, credits per image, and every documented error
in its `{"id", "name", "errors"}` shape. Where the page is silent: "assumed"."""

from __future__ import annotations

import base64
import io
import json
import random
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.cloud import REQUEST_ID, REQUEST_LOG, CloudFake, render

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


class FakeStability(CloudFake):
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
        return web.json_response({"id": request[REQUEST_ID], "name": name, "errors": errors}, status=status,
                                 headers={"x-request-id": request[REQUEST_ID], **(headers or {})})

    def _unauthorized(self, request: web.Request) -> web.Response:
        # The notes' *reported* shape, not {"id","name","errors"}: a client must not count
        # on `errors` in a 401. Assumed: the same for a missing and a wrong key.
        return web.json_response({"message": "Incorrect API key provided"}, status=401,
                                 headers={"x-request-id": request[REQUEST_ID]})

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
        fields, files = request[REQUEST_LOG]["fields"], {}
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.filename is not None:
                    files[part.name] = bytes(await part.read())
                    request[REQUEST_LOG]["files"].append(part.name)
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
                "content-type": f"application/json; type=image/{fmt}", "x-request-id": request[REQUEST_ID]})
        return web.Response(body=image, headers={
            "content-type": f"image/{fmt}", "finish-reason": reason, "seed": str(seed),
            "x-request-id": request[REQUEST_ID]})


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
