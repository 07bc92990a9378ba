"""The OpenAI-compatible images API: `POST /v1/images/generations`, `POST
/v1/images/edits` (image-to-image from the uploaded image), `GET /v1/models`,
and the signed, expiring file links `response_format=url` answers with. A
request queues jobs as `zmm generate` would and answers when they finish;
errors come in OpenAI's shape (zmm.serve.guard).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from zmm.serve.auth import request_principal
from zmm.serve.core import Service
from zmm.serve.guard import UPLOAD_CAP, ApiError, json_body

URL_TTL_S = 3600
OPENAI_MODELS = ("dall-e-", "gpt-image-")  # their names mean zmm's default model
WAIT_S = 600.0  # the official client's own default timeout


class ImageRequest(BaseModel):
    """The fields zmm reads; others OpenAI defines (quality, style, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")
    prompt: str = Field(min_length=1, max_length=10000)
    n: int = Field(1, ge=1, le=10)
    size: str | None = Field(None, max_length=12)
    model: str | None = Field(None, max_length=200)
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = Field(None, max_length=64)


def validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return ApiError(400, f"{where}: {first['msg']}", param=where)


def parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(400, "body: a JSON object expected", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


class OpenAIImages:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.key = secrets.token_bytes(32)  # signs file links; they die with the server

    def routes(self) -> list[Route]:
        return [Route("/v1/images/generations", self.generations, methods=["POST"]),
                Route("/v1/images/edits", self.edits, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/files/{job_id}/{index:int}", self.file, methods=["GET"])]

    def _raw(self, body: ImageRequest) -> dict[str, Any]:
        model = body.model
        if model is None or model.startswith(OPENAI_MODELS):
            model = None
        size = None if body.size in (None, "auto") else body.size
        return {"prompt": body.prompt, "count": body.n, "size": size, "model": model,
                "requester": body.user}

    async def generations(self, request: Request) -> Response:
        body = parse(ImageRequest, await json_body(request))
        return await self._answer(request, body, self._raw(body), None)

    async def edits(self, request: Request) -> Response:
        try:
            form = await request.form(max_files=2, max_fields=20, max_part_size=UPLOAD_CAP)
        except Exception:
            raise ApiError(400, "body: multipart/form-data expected", param="body") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "image: an image file (PNG, JPEG or WebP)", param="image")
        if form.get("mask") is not None:
            raise ApiError(400, "mask: not supported; the whole image is changed",
                           param="mask")
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        body = parse(ImageRequest, fields)
        data = await upload.read()
        return await self._answer(request, body, self._raw(body), data)

    async def _answer(self, request: Request, body: ImageRequest, raw: dict[str, Any],
                      image: bytes | None) -> Response:
        import asyncio

        principal = request_principal(request)
        jobs = await asyncio.to_thread(self.service.submit, raw, principal, image)
        done = await self.service.wait([job.id for job in jobs], timeout=WAIT_S)
        failed = [job for job in done if job.status != "succeeded"]
        if failed:
            job = failed[0]
            raise ApiError(502, f"job {job.id} {job.status}"
                           + (f": {job.error_message}" if job.error_message else ""),
                           kind="server_error", code="job_failed")
        data = []
        for job in done:
            item: dict[str, Any] = {"revised_prompt": job.enhanced_prompt or job.prompt}
            if body.response_format == "url":
                item["url"] = self.link(str(request.base_url), job.id, 0)
            else:
                path = job.output_files(self.service.assets_root)[0]
                item["b64_json"] = base64.b64encode(path.read_bytes()).decode("ascii")
            data.append(item)
        return JSONResponse({"created": int(time.time()), "data": data})

    async def models(self, request: Request) -> Response:
        import asyncio

        found = await asyncio.to_thread(self.service.models)
        names = [*found["aliases"], *found["checkpoints"]]
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "zmm"}
            for name in dict.fromkeys(names)]})

    # -- signed links -------------------------------------------------------------

    def _signature(self, job_id: str, index: int, expires: int) -> str:
        message = f"{job_id}/{index}/{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def link(self, base: str, job_id: str, index: int) -> str:
        expires = int(time.time()) + URL_TTL_S
        return (f"{base.rstrip('/')}/v1/files/{job_id}/{index}?expires={expires}"
                f"&sig={self._signature(job_id, index, expires)}")

    async def file(self, request: Request) -> Response:
        job_id, index = request.path_params["job_id"], request.path_params["index"]
        expires = request.query_params.get("expires", "")
        sig = request.query_params.get("sig", "")
        if not expires.isdigit() or int(expires) < time.time() or not hmac.compare_digest(
                sig, self._signature(job_id, index, int(expires))):
            raise ApiError(403, "link expired or not signed by this server",
                           kind="permission_error")
        import asyncio

        job = await asyncio.to_thread(self.service.get, job_id)
        files = job.output_files(self.service.assets_root)
        if index >= len(files) or not files[index].is_file():
            raise ApiError(404, f"job {job_id} has no image {index}", kind="not_found_error")
        return FileResponse(files[index], headers={"Cache-Control": "private, max-age=3600"})
