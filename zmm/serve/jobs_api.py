"""The JSON API under `/api`: the queue, submitting (the fields of `zmm
generate`), one job with its timeline, cancel and retry, history, backends,
models and the GPU, Server-Sent Events of jobs as they move, and a job's image
files (by job id only; content type, ETag, immutable caching). `openapi()`
describes it, served at /openapi.json.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from zmm import __version__
from zmm.serve.auth import request_principal
from zmm.serve.core import Service
from zmm.serve.guard import ApiError, json_body
from zmm.serve.openai_api import ImageRequest, parse

SSE_POLL_S = 0.5
SSE_PING_S = 15.0
MAX_WATCHED = 100


class JobRequest(BaseModel):
    """A request as `zmm generate` takes it (docs/cli.md names each field)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=10000)
    negative: str | None = Field(None, max_length=10000)
    quality: Literal["draft", "standard", "high"] | None = None
    style: Literal["technical-diagram", "report-cover", "infographic",
                   "dashboard-thumbnail", "none"] | None = None
    aspect: str | None = Field(None, max_length=8)
    size: str | None = Field(None, max_length=12)
    seed: int | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=1, le=150)
    cfg: float | None = Field(None, ge=0, le=30)
    model: str | None = Field(None, max_length=200)
    family: str | None = Field(None, max_length=32)
    priority: Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"] | None = None
    requester: str | None = Field(None, max_length=64)
    count: int = Field(1, ge=1, le=100)
    lora: list[str] = Field(default_factory=list, max_length=16)
    enhance: Literal["on", "off", "required"] | None = None
    title: str | None = Field(None, max_length=500)
    subtitle: str | None = Field(None, max_length=500)
    footer: str | None = Field(None, max_length=500)
    brand: str | None = Field(None, max_length=64)
    on: str | None = Field(None, max_length=64)


def etag_of(path: Any) -> str:
    stat = path.stat()
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'


class JobsApi:
    def __init__(self, service: Service) -> None:
        self.service = service

    def routes(self) -> list[Route]:
        return [Route("/api/queue", self.queue, methods=["GET"]),
                Route("/api/jobs", self.listing, methods=["GET"]),
                Route("/api/jobs", self.submit, methods=["POST"]),
                Route("/api/jobs/{job_id}", self.job, methods=["GET"]),
                Route("/api/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
                Route("/api/jobs/{job_id}/retry", self.retry, methods=["POST"]),
                Route("/api/jobs/{job_id}/image", self.image, methods=["GET"]),
                Route("/api/events", self.events, methods=["GET"]),
                Route("/api/backends", self.backends, methods=["GET"]),
                Route("/api/models", self.models, methods=["GET"]),
                Route("/api/gpu", self.gpu, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"])]

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def queue(self, request: Request) -> Response:
        finished = request.query_params.get("finished") in ("1", "true")
        return JSONResponse(await self.run(self.service.queue, with_finished=finished))

    async def listing(self, request: Request) -> Response:
        query = request.query_params
        limit = _int(query.get("limit"), "limit", 1, 200, 50)
        offset = _int(query.get("offset"), "offset", 0, 10**9, 0)
        status = query.get("status")
        jobs, total = await self.run(
            self.service.history, statuses=(status,) if status else (),
            requester=query.get("requester") or None, model=query.get("model") or None,
            search=query.get("search") or None, style=query.get("style") or None,
            limit=limit, offset=offset)
        return JSONResponse({"total": total, "limit": limit, "offset": offset,
                             "jobs": [self.service.public(job) for job in jobs]})

    async def submit(self, request: Request) -> Response:
        body = parse(JobRequest, await json_body(request))
        raw = body.model_dump(exclude_none=True)
        raw["set"] = []
        jobs = await self.run(self.service.submit, raw, request_principal(request))
        return JSONResponse({"jobs": [self.service.public(job) for job in jobs]},
                            status_code=201)

    async def job(self, request: Request) -> Response:
        return JSONResponse(await self.run(self.service.detail, request.path_params["job_id"]))

    async def cancel(self, request: Request) -> Response:
        result = await self.run(self.service.cancel, request.path_params["job_id"],
                                request_principal(request))
        if result["refused"]:
            raise ApiError(409, f"job {result['id']} is {result['result']}",
                           kind="conflict_error")
        return JSONResponse(result)

    async def retry(self, request: Request) -> Response:
        job = await self.run(self.service.retry, request.path_params["job_id"],
                             request_principal(request))
        return JSONResponse({"job": self.service.public(job)})

    async def backends(self, request: Request) -> Response:
        return JSONResponse({"backends": await self.run(self.service.backends)})

    async def models(self, request: Request) -> Response:
        return JSONResponse(await self.run(self.service.models))

    async def gpu(self, request: Request) -> Response:
        return JSONResponse(await self.run(self.service.gpu))

    async def image(self, request: Request) -> Response:
        job = await self.run(self.service.get, request.path_params["job_id"])
        thumb = request.query_params.get("thumb") in ("1", "true")
        index = _int(request.query_params.get("index"), "index", 0, 1000, 0)
        if thumb:
            path = job.thumbnail_file(self.service.assets_root) if index == 0 else None
        else:
            files = job.output_files(self.service.assets_root)
            path = files[index] if index < len(files) else None
        if path is None or not path.is_file():
            raise ApiError(404, f"job {job.id} has no {'thumbnail' if thumb else 'image'} "
                           f"{index} (status {job.status})", kind="not_found_error")
        tag = etag_of(path)
        headers = {"ETag": tag, "Cache-Control": "private, max-age=31536000, immutable"}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return FileResponse(path, headers=headers)

    async def events(self, request: Request) -> Response:
        """`?job=ID` (repeatable): an `event: job` with the job's JSON each time it
        moves, until every one has finished (then `event: end`)."""
        ids = request.query_params.getlist("job")
        if not 0 < len(ids) <= MAX_WATCHED:
            raise ApiError(400, f"job: 1 to {MAX_WATCHED} job ids", param="job")
        jobs = await self.run(self.service.get_many, ids)
        return StreamingResponse(self._stream(request, [job.id for job in jobs]),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _stream(self, request: Request, ids: list[str]) -> AsyncIterator[str]:
        seen: dict[str, tuple] = {}
        quiet = 0.0
        while True:
            jobs = await self.run(self.service.get_many, ids)
            for job in jobs:
                key = (job.status, job.phase, job.progress_value, job.updated_at)
                if seen.get(job.id) != key:
                    seen[job.id] = key
                    quiet = 0.0
                    yield f"event: job\ndata: {json.dumps(self.service.public(job))}\n\n"
            if all(job.finished for job in jobs):
                yield "event: end\ndata: {}\n\n"
                return
            if quiet >= SSE_PING_S:
                quiet = 0.0
                yield ": ping\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)
            quiet += SSE_POLL_S

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi())


def _int(value: str | None, name: str, low: int, high: int, default: int) -> int:
    if value in (None, ""):
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise ApiError(400, f"{name}: a whole number from {low} to {high}", param=name)
    return int(value)


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server's HTTP API."""
    def op(summary: str, body: str | None = None, params: tuple[str, ...] = (),
           query: tuple[str, ...] = ()) -> dict[str, Any]:
        item: dict[str, Any] = {"summary": summary, "responses": {
            "200": {"description": "OK"},
            "default": {"description": "An error",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}
        parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                      for name in params]
        parameters += [{"name": name, "in": "query", "schema": {"type": "string"}} for name in query]
        if parameters:
            item["parameters"] = parameters
        if body:
            item["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}}
        return item

    job = ("job_id",)
    return {
        "openapi": "3.1.0",
        "info": {"title": "zmm serve", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"JobRequest": JobRequest.model_json_schema(),
                                   "ImageRequest": ImageRequest.model_json_schema(),
                                   "Error": {"type": "object", "properties": {"error": {
                                       "type": "object", "properties": {
                                           key: {"type": ["string", "null"]} for key in
                                           ("message", "type", "param", "code")}}}}}},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": op("Liveness (no token needed)")},
            "/api/queue": {"get": op("Running and queued jobs", query=("finished",))},
            "/api/jobs": {"get": op("Jobs, newest first", query=(
                "status", "requester", "model", "style", "search", "limit", "offset")),
                "post": op("Queue jobs", body="JobRequest")},
            "/api/jobs/{job_id}": {"get": op("A job, its parameters and timeline", params=job)},
            "/api/jobs/{job_id}/cancel": {"post": op("Cancel a job", params=job)},
            "/api/jobs/{job_id}/retry": {"post": op("Queue a failed or cancelled job again",
                                                    params=job)},
            "/api/jobs/{job_id}/image": {"get": op("A job's image (or ?thumb=1)", params=job,
                                                   query=("index", "thumb"))},
            "/api/events": {"get": op("Server-Sent Events of jobs until they finish",
                                      query=("job",))},
            "/api/backends": {"get": op("The backends")},
            "/api/models": {"get": op("Model aliases, files, LLMs")},
            "/api/gpu": {"get": op("GPU memory")},
            "/v1/images/generations": {"post": op("OpenAI-compatible generation",
                                                  body="ImageRequest")},
            "/v1/images/edits": {"post": op("OpenAI-compatible image-to-image (multipart)")},
            "/v1/models": {"get": op("OpenAI-compatible model list")},
            "/mcp": {"post": op("MCP over streamable HTTP")},
        },
    }
