"""Scenarios run identically against the fake ComfyUI and, when
$ZMM_REAL_COMFYUI_URL names one, a real ComfyUI: what each returns is reduced
to a comparable shape (event types in order, status codes, JSON keys)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from websockets.sync.client import connect

MODEL_FREE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 255}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "contract/basic", "images": ["2", 0]}},
}


def shape(value: Any) -> Any:
    """Keys and types, not values: what a client may rely on."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def run_job(url: str, graph: dict, *, seed_note: str = "") -> tuple[list[str], dict, str]:
    """Submit `graph` with a fresh client id; event types for our prompt until
    `executing` null (progress_state and status left out: they are chatty)."""
    client_id = uuid.uuid4().hex
    prompt_id = f"contract-{uuid.uuid4().hex[:8]}"
    ws_url = url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    with connect(ws_url, open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
        response = httpx.post(url + "/prompt", json={"prompt": graph, "client_id": client_id,
                                                     "prompt_id": prompt_id}, timeout=10)
        assert response.status_code == 200, response.text
        events = [first["type"]]
        while True:
            message = json.loads(ws.recv(timeout=60))
            kind, data = message["type"], message["data"]
            if kind in ("progress_state", "status"):
                continue
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            events.append(kind)
            if kind == "executing" and data.get("node") is None:
                break
    history = httpx.get(url + f"/history/{prompt_id}", timeout=10).json()
    return events, history[prompt_id], prompt_id


def post_prompt(url: str, body: Any, raw: bool = False) -> tuple[int, Any]:
    if raw:
        response = httpx.post(url + "/prompt", content=body, timeout=10)
    else:
        response = httpx.post(url + "/prompt", json=body, timeout=10)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def submit_and_cancel(url: str, graph: dict, timeout: float = 60.0) -> tuple[int, Any]:
    """POST /prompt and take the prompt straight back off the server (queue
    delete, then interrupt until it no longer runs): only validation matters,
    and a real server must not spend minutes on it."""
    prompt_id = f"contract-{uuid.uuid4().hex[:8]}"
    response = httpx.post(url + "/prompt", json={"prompt": graph, "prompt_id": prompt_id,
                                                 "client_id": uuid.uuid4().hex}, timeout=10)
    body = response.json()
    if response.status_code == 200:
        httpx.post(url + "/queue", json={"delete": [prompt_id]}, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = httpx.get(url + "/queue", timeout=10).json()["queue_running"]
            if prompt_id not in [item[1] for item in running]:
                break
            httpx.post(url + "/interrupt", json={"prompt_id": prompt_id}, timeout=10)
            time.sleep(0.2)  # a real server checks for an interrupt between nodes
    return response.status_code, body
