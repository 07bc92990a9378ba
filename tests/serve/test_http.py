"""`zmm serve` as a real process: tokens, the OpenAI-compatible API through the
official `openai` client, the JSON API with its events and files, MCP over
streamable HTTP, and bad input, against the fake ComfyUI and a real worker."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket

import httpx
import pytest
from PIL import Image

from tests.conftest import run_zmm
from tests.serve.conftest import make_token

pytestmark = pytest.mark.slow


def png(size=(64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]


def test_openai_client_generates_edits_and_lists_models(server, worker, comfy):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=server.token, max_retries=0)
    made = client.images.generate(prompt="a red square", n=2, size="64x64", model="sdxl",
                                  user="webui", response_format="b64_json")
    assert len(made.data) == 2
    assert Image.open(io.BytesIO(base64.b64decode(made.data[0].b64_json))).size == (64, 64)
    linked = client.images.generate(prompt="a blue square", size="64x64", response_format="url")
    fetched = httpx.get(linked.data[0].url)  # signed: no token needed
    assert fetched.status_code == 200 and fetched.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert httpx.get(linked.data[0].url.replace("sig=", "sig=0")).status_code == 403
    edited = client.images.edit(image=("in.png", png(), "image/png"), prompt="make it green",
                                size="64x64")
    assert edited.data[0].b64_json
    ids = {model.id for model in client.models.list()}
    assert {"sdxl", "sd15"} <= ids
    jobs = httpx.get(server.url + "/api/jobs", headers=server.headers).json()["jobs"]
    assert {job["requester"] for job in jobs[-2:]} == {"webui"}
    assert len(comfy.runs) == 4 and len({run["prompt_id"] for run in comfy.runs}) == 4
    edit_job = jobs[0]
    detail = httpx.get(f"{server.url}/api/jobs/{edit_job['id']}", headers=server.headers).json()
    assert detail["params"]["init_image"]["width"] == 64
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as bad:
        client.images.generate(prompt="x", size="65x65")
    assert "size" in bad.value.body["message"]


def test_tokens_no_token_revoked_and_requester_limits(server, serve_env):
    assert httpx.get(server.url + "/healthz").status_code == 200
    missing = httpx.get(server.url + "/api/queue")
    assert missing.status_code == 401 and error_of(missing)["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/api/queue",
                     headers={"Authorization": "Bearer zmm_wrong"}).status_code == 401
    page = httpx.get(server.url + "/", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login"
    token, token_id = make_token("short-lived")
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(server.url + "/api/queue", headers=bearer).status_code == 200
    assert run_zmm("serve", "token", "revoke", token_id).returncode == 0
    assert httpx.get(server.url + "/api/queue", headers=bearer).status_code == 401
    listed = json.loads(run_zmm("serve", "token", "list", "--json").stdout)["tokens"]
    assert {row["id"]: bool(row["revoked_at"]) for row in listed}[token_id] is True
    assert all("token" not in row and "token_sha256" not in row for row in listed)

    alice, _ = make_token("alice", "--requester", "alice", "--max-priority", "MEDIUM")
    as_alice = {"Authorization": f"Bearer {alice}"}
    theirs = httpx.post(server.url + "/api/jobs", headers=server.headers,
                        json={"prompt": "bob's", "requester": "bob", "size": "64x64"})
    assert theirs.status_code == 201
    bob_job = theirs.json()["jobs"][0]["id"]
    refused = httpx.post(f"{server.url}/api/jobs/{bob_job}/cancel", headers=as_alice)
    assert refused.status_code == 403 and "alice" in error_of(refused)["message"]
    assert httpx.get(f"{server.url}/api/jobs/{bob_job}", headers=server.headers
                     ).json()["job"]["status"] == "queued"
    own = httpx.post(server.url + "/api/jobs", headers=as_alice,
                     json={"prompt": "mine", "size": "64x64"}).json()["jobs"][0]
    assert own["requester"] == "alice" and own["priority"] == "MEDIUM"
    too_high = httpx.post(server.url + "/api/jobs", headers=as_alice,
                          json={"prompt": "mine", "priority": "CRITICAL"})
    assert too_high.status_code == 403 and "MEDIUM" in error_of(too_high)["message"]
    cancelled = httpx.post(f"{server.url}/api/jobs/{own['id']}/cancel", headers=as_alice)
    assert cancelled.status_code == 200 and cancelled.json()["result"] == "cancelled"


def test_bad_bodies_are_refused_with_one_message(server):
    url = server.url + "/api/jobs"
    malformed = httpx.post(url, headers={**server.headers, "Content-Type": "application/json"},
                           content=b"{not json")
    assert malformed.status_code == 400 and error_of(malformed)["param"] == "body"
    unknown = httpx.post(url, headers=server.headers, json={"prompt": "x", "bogus": 1})
    assert unknown.status_code == 400 and error_of(unknown)["param"] == "bogus"
    steps = httpx.post(url, headers=server.headers, json={"prompt": "x", "steps": 900})
    assert steps.status_code == 400 and error_of(steps)["param"] == "steps"
    huge = httpx.post(url, headers=server.headers, json={"prompt": "x" * (2 << 20)})
    assert huge.status_code == 413 and error_of(huge)["code"] == "body_too_large"
    assert httpx.post(server.url + "/v1/images/generations", headers=server.headers,
                      json=[1]).status_code == 400
    assert httpx.get(server.url + "/api/jobs/mmg-nope", headers=server.headers).status_code == 404
    assert httpx.get(server.url + "/nowhere", headers=server.headers).status_code == 404
    assert "access-control-allow-origin" not in httpx.options(
        url, headers={**server.headers, "Origin": "http://evil.example",
                      "Access-Control-Request-Method": "POST"}).headers
    queue = httpx.get(server.url + "/api/queue", headers=server.headers).json()
    assert queue["queued"] == []  # nothing was written


def test_a_slow_client_does_not_block_others(server):
    slow = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    try:
        slow.sendall(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + server.token.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"prompt\": ")
        for _ in range(5):
            assert httpx.get(server.url + "/api/queue", headers=server.headers,
                             timeout=5).status_code == 200
    finally:
        slow.close()


def test_json_api_events_files_and_openapi(server, worker):
    made = httpx.post(server.url + "/api/jobs", headers=server.headers,
                      json={"prompt": "watch me", "size": "64x64", "steps": 3})
    job_id = made.json()["jobs"][0]["id"]
    seen = []
    with httpx.stream("GET", f"{server.url}/api/events?job={job_id}", headers=server.headers,
                      timeout=60) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                seen.append((kind, json.loads(line[6:])))
                if kind == "end":
                    break
    assert seen[-1][0] == "end" and seen[-2][1]["status"] == "succeeded"
    image = httpx.get(f"{server.url}/api/jobs/{job_id}/image", headers=server.headers)
    assert image.headers["content-type"] == "image/png"
    assert "immutable" in image.headers["cache-control"]
    again = httpx.get(f"{server.url}/api/jobs/{job_id}/image",
                      headers={**server.headers, "If-None-Match": image.headers["etag"]})
    assert again.status_code == 304
    thumb = httpx.get(f"{server.url}/api/jobs/{job_id}/image?thumb=1", headers=server.headers)
    assert thumb.headers["content-type"] == "image/webp"
    spec = httpx.get(server.url + "/openapi.json", headers=server.headers).json()
    assert spec["openapi"].startswith("3.") and "/api/events" in spec["paths"]
    assert "prompt" in spec["components"]["schemas"]["JobRequest"]["properties"]


def test_mcp_over_streamable_http_needs_the_token(server):
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def main():
        import httpx2

        async with httpx2.AsyncClient(headers=server.headers) as http, \
                streamable_http_client(server.url + "/mcp", http_client=http) as streams, \
                ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            made = await session.call_tool("generate", {"prompt": "over http", "size": "64x64"})
            return json.loads(made.content[0].text)

    result = asyncio.run(main())
    assert result["jobs"][0]["prompt"] == "over http"
    refused = httpx.post(server.url + "/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                    "method": "tools/list"})
    assert refused.status_code == 401
