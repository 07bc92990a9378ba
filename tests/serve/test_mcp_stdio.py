"""`zmm mcp` as a real subprocess, driven by the official MCP client SDK over
stdio, against the fake ComfyUI and a real `zmm serve-worker`."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def session_run(body):
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "zmm", "mcp"],
                                   env=dict(os.environ), cwd=str(ROOT))

    async def main():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await body(session)

    return asyncio.run(main())


def data_of(result) -> dict:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


def test_tools_have_schemas_and_generate_waits_with_progress(serve_env, worker, comfy):
    progress: list[tuple[float, float | None]] = []

    async def body(session):
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"generate", "job_status", "wait", "cancel", "retry", "queue", "history",
                "models", "backends", "gpu", "image"} <= set(tools)
        schema = tools["generate"].input_schema
        assert schema["required"] == ["prompt"]
        steps = schema["properties"]["steps"]["anyOf"]
        assert {"type": "integer", "minimum": 1, "maximum": 150} in steps
        assert schema["properties"]["priority"]["anyOf"][0]["enum"] == [
            "CRITICAL", "HIGH", "MEDIUM", "LOW"]

        async def on_progress(value, total, message):
            progress.append((value, total))

        made = await session.call_tool(
            "generate", {"prompt": "a red square", "size": "64x64", "steps": 3, "count": 2,
                         "wait": True}, progress_callback=on_progress)
        jobs = data_of(made)["jobs"]
        thumb = await session.call_tool("image", {"job_id": jobs[0]["id"]})
        full = await session.call_tool("image", {"job_id": jobs[0]["id"], "full": True})
        status = data_of(await session.call_tool("job_status", {"job_id": jobs[1]["id"]}))
        found = data_of(await session.call_tool("history", {"search": "red"}))
        bad = await session.call_tool("generate", {"prompt": "x", "size": "65x65"})
        missing = await session.call_tool("job_status", {"job_id": "mmg-nope"})
        return jobs, thumb, full, status, found, bad, missing

    jobs, thumb, full, status, found, bad, missing = session_run(body)
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
    assert sorted(run["prompt_id"] for run in comfy.runs) == sorted(job["id"] for job in jobs)
    assert progress and progress[-1] == (2.0, 2.0)
    assert all(b >= a for (a, _), (b, _) in zip(progress, progress[1:], strict=False))
    picture = Image.open(io.BytesIO(base64.b64decode(full.content[0].data)))
    assert thumb.content[0].mime_type == "image/jpeg" and full.content[0].mime_type == "image/png"
    assert picture.size == (64, 64)
    assert [event["kind"] for event in status["events"]][-1] == "succeeded"
    assert found["total"] == 2
    assert bad.is_error and "size" in bad.content[0].text and "Traceback" not in str(bad.content)
    assert missing.is_error and "no job 'mmg-nope'" in missing.content[0].text


def test_cancel_retry_and_queue_without_a_worker(serve_env, comfy):
    async def body(session):
        made = data_of(await session.call_tool("generate", {"prompt": "waits", "size": "64x64"}))
        job_id = made["jobs"][0]["id"]
        queued = data_of(await session.call_tool("queue", {}))
        cancelled = data_of(await session.call_tool("cancel", {"job_id": job_id}))
        retried = data_of(await session.call_tool("retry", {"job_id": job_id}))
        timed_out = await session.call_tool("wait", {"job_ids": [job_id], "timeout": 0.5})
        return job_id, queued, cancelled, retried, timed_out

    job_id, queued, cancelled, retried, timed_out = session_run(body)
    assert [job["id"] for job in queued["queued"]] == [job_id]
    assert cancelled["result"] == "cancelled"
    assert retried["job"]["status"] == "queued" and retried["job"]["retry_count"] == 1
    assert timed_out.is_error and "timed out" in timed_out.content[0].text
    assert comfy.runs == []
