"""The MCP server (the official `mcp` SDK): zmm's tools for agents, served over
stdio by `zmm mcp` and over streamable HTTP at `/mcp` by `zmm serve`. Each tool
is a call into zmm.serve.core; job JSON is `Job.public()`, as `--json` prints
it. Waiting tools report progress through MCP progress notifications; the
image tool returns the image itself (a thumbnail unless the full one is asked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from zmm import __version__
from zmm.errors import ZmmError
from zmm.serve.core import LOCAL, Principal, Service
from zmm.store import Job

Priority = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"]
Style = Literal["technical-diagram", "report-cover", "infographic", "dashboard-thumbnail", "none"]
THUMBNAIL_PX = 256


def progress_of(jobs: list[Job]) -> float:
    """Finished jobs count 1, a running one its sampler's fraction."""
    done = 0.0
    for job in jobs:
        if job.finished:
            done += 1
        elif job.progress_max:
            done += min(1.0, (job.progress_value or 0) / job.progress_max)
    return done


def build(service: Service,
          principal_of: Callable[[Context], Principal | None] | None = None) -> MCPServer:
    """The server; `principal_of` finds the caller of an HTTP request (stdio: local)."""
    mcp: MCPServer = MCPServer("zmm", version=__version__, instructions=(
        "zmm generates images on the local GPU through ComfyUI from a job spool. "
        "generate queues jobs (wait=true follows them); job ids survive restarts."))

    def who(ctx: Context) -> Principal:
        if principal_of is None:
            return LOCAL
        found = principal_of(ctx)
        if found is None:
            raise ToolError("authorization: a valid bearer token is required")
        return found

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ZmmError as exc:
            raise ToolError(exc.message) from None

    async def follow(ids: list[str], timeout: float | None, ctx: Context) -> dict[str, Any]:
        async def told(jobs: list[Job]) -> None:
            states = ", ".join(f"{job.id}: {job.phase or job.status}" for job in jobs)
            await ctx.report_progress(progress_of(jobs), len(jobs), states)

        try:
            jobs = await service.wait(ids, timeout=timeout, on_change=told)
        except ZmmError as exc:
            raise ToolError(exc.message) from None
        return {"jobs": [service.public(job) for job in jobs]}

    @mcp.tool()
    async def generate(
        prompt: Annotated[str, Field(description="What to draw.", max_length=10000)],
        ctx: Context,
        negative: Annotated[str | None, Field(description="What to avoid.")] = None,
        model: Annotated[str | None, Field(description="A model alias (sd15, sdxl, sd35-medium, "
                                           "sd35-large, flux-schnell, flux-dev) or file name.")] = None,
        size: Annotated[str | None, Field(description="WxH, multiples of 8.")] = None,
        aspect: Annotated[str | None, Field(description="1:1 | 16:9 | 4:3 | 3:2 | 2:3 | 9:16")] = None,
        seed: Annotated[int | None, Field(ge=0)] = None,
        steps: Annotated[int | None, Field(ge=1, le=150)] = None,
        count: Annotated[int, Field(ge=1, le=100, description="Jobs with seeds seed..")] = 1,
        priority: Priority | None = None,
        style: Style | None = None,
        quality: Literal["draft", "standard", "high"] | None = None,
        requester: Annotated[str | None, Field(max_length=64)] = None,
        title: Annotated[str | None, Field(description="Exact text drawn onto the image.")] = None,
        wait: Annotated[bool, Field(description="Follow the jobs until they finish.")] = False,
        timeout: Annotated[float | None, Field(gt=0, le=3600)] = None,
    ) -> dict[str, Any]:
        """Queue image jobs, as `zmm generate` does; with wait=true, follow them to the end."""
        raw = {"prompt": prompt, "negative": negative, "model": model, "size": size,
               "aspect": aspect, "seed": seed, "steps": steps, "count": count,
               "priority": priority, "style": style, "quality": quality,
               "requester": requester, "title": title}
        jobs = await call(service.submit, raw, who(ctx))
        if not wait:
            return {"jobs": [service.public(job) for job in jobs]}
        return await follow([job.id for job in jobs], timeout, ctx)

    @mcp.tool()
    async def job_status(job_id: str, ctx: Context) -> dict[str, Any]:
        """One job with its parameters and event timeline."""
        who(ctx)
        return await call(service.detail, job_id)

    @mcp.tool()
    async def wait(job_ids: Annotated[list[str], Field(min_length=1, max_length=100)],
                   ctx: Context,
                   timeout: Annotated[float | None, Field(gt=0, le=3600)] = None
                   ) -> dict[str, Any]:
        """Wait until the jobs finish, reporting progress; their final state."""
        who(ctx)
        ids = [job.id for job in await call(service.get_many, job_ids)]
        return await follow(ids, timeout, ctx)

    @mcp.tool()
    async def cancel(job_id: str, ctx: Context) -> dict[str, Any]:
        """Cancel a queued job now, or ask a running job's worker to stop it."""
        return await call(service.cancel, job_id, who(ctx))

    @mcp.tool()
    async def retry(job_id: str, ctx: Context) -> dict[str, Any]:
        """Queue a failed or cancelled job again."""
        job = await call(service.retry, job_id, who(ctx))
        return {"job": service.public(job)}

    @mcp.tool()
    async def queue(ctx: Context, finished: bool = False) -> dict[str, Any]:
        """Running and queued jobs in run order, with positions, ETAs and waiting reasons."""
        who(ctx)
        return await call(service.queue, with_finished=finished)

    @mcp.tool()
    async def history(
        ctx: Context,
        search: Annotated[str | None, Field(description="Words in the prompt.")] = None,
        requester: str | None = None,
        status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
        model: str | None = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Jobs, newest first, with the total that match."""
        who(ctx)
        jobs, total = await call(service.history, statuses=(status,) if status else (),
                                 requester=requester, model=model, search=search,
                                 limit=limit, offset=offset)
        return {"total": total, "jobs": [service.public(job) for job in jobs]}

    @mcp.tool()
    async def models(ctx: Context) -> dict[str, Any]:
        """Model aliases, the checkpoints, LoRAs and other files the backends reported, and LLMs."""
        who(ctx)
        return await call(service.models)

    @mcp.tool()
    async def backends(ctx: Context) -> dict[str, Any]:
        """Each ComfyUI backend: state, GPU memory, loaded model, jobs, last error."""
        who(ctx)
        return {"backends": await call(service.backends)}

    @mcp.tool()
    async def gpu(ctx: Context) -> dict[str, Any]:
        """The GPUs' memory and load (NVML) and each backend's recorded GPU memory."""
        who(ctx)
        return await call(service.gpu)

    @mcp.tool()
    async def image(job_id: str, ctx: Context, full: bool = False,
                    index: Annotated[int, Field(ge=0)] = 0) -> Image:
        """A finished job's image: a small thumbnail by default, the full image with full=true."""
        who(ctx)
        data, kind = await call(image_bytes, service, job_id, full, index)
        return Image(data=data, format=kind)

    return mcp


def image_bytes(service: Service, job_id: str, full: bool, index: int) -> tuple[bytes, str]:
    """A job's output as (bytes, format): the file itself, or a JPEG thumbnail."""
    import io

    from PIL import Image as Pillow

    from zmm.errors import InvalidInput, NotFound

    job = service.get(job_id)
    files = job.output_files(service.assets_root)
    if job.status != "succeeded" or not files:
        raise NotFound(f"job {job.id} has no image (it is {job.status})")
    if index >= len(files):
        raise InvalidInput("index", f"0 to {len(files) - 1}")
    path = files[index]
    if not path.is_file():
        raise NotFound(f"the image of job {job.id} is gone (cleaned up)")
    if full:
        return path.read_bytes(), path.suffix.lstrip(".").lower().replace("jpg", "jpeg")
    with Pillow.open(path) as picture:
        picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        out = io.BytesIO()
        picture.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue(), "jpeg"
