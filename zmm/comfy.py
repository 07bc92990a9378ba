"""The ComfyUI client: HTTP through httpx (transport injectable) and the `/ws`
event stream through websockets' sync client (connector injectable).

Every failure becomes a zmm error: unreachable -> ComfyUnavailable, 400 ->
WorkflowRejected with one readable line, 5xx -> ComfyServerError (ambiguous:
the caller must check /queue and /history before submitting again; this
module never retries POST /prompt).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from zmm.errors import ComfyServerError, ComfyUnavailable, NotFound, WorkflowRejected


@dataclass(frozen=True)
class SubmitResult:
    prompt_id: str
    number: float
    node_errors: dict[str, Any]


@dataclass(frozen=True)
class QueueItem:
    number: float
    prompt_id: str
    client_id: str | None


@dataclass(frozen=True)
class QueueState:
    running: list[QueueItem]
    pending: list[QueueItem]  # in run order (the server sends heap order)


@dataclass(frozen=True)
class OutputFile:
    node_id: str
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class HistoryEntry:
    prompt_id: str
    status_str: str
    completed: bool
    outputs: list[OutputFile]
    messages: list[Any]
    error: dict[str, Any] | None

    @property
    def interrupted(self) -> bool:
        return any(isinstance(m, list) and m and m[0] == "execution_interrupted"
                   for m in self.messages)


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any]
    prompt_id: str | None


class StreamClosed(ComfyUnavailable):
    """The websocket dropped."""


def _reason(exc: Exception, timeout: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout | httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout):
        return f"timed out after {timeout:g}s"
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
        return "name not resolved"
    return str(exc) or type(exc).__name__


def describe_node_errors(body: dict[str, Any]) -> str:
    """ComfyUI's 400 body as one line: the node, its class, the error and details."""
    parts = []
    for node_id, info in (body.get("node_errors") or {}).items():
        for error in info.get("errors", []):
            detail = error.get("details") or error.get("message") or ""
            parts.append(f"node {node_id} ({info.get('class_type', '?')}): "
                         f"{error.get('type', 'error')}: {detail}")
    if parts:
        return "; ".join(parts)
    error = body.get("error") or {}
    if isinstance(error, dict):
        text = error.get("message") or error.get("type") or "rejected"
        return f"{text} {error.get('details', '')}".strip()
    return str(error)


class ComfyClient:
    def __init__(self, base_url: str, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 30.0, ws_connect: Callable[..., Any] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout)
        self._ws_connect = ws_connect

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ComfyUnavailable(self.base_url, _reason(exc, self.timeout)) from None
        if response.status_code >= 500:
            raise ComfyServerError(f"ComfyUI answered {response.status_code} to {method} {path}: "
                                   f"{response.text[:200].strip()}")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 404:
            raise NotFound(f"ComfyUI has no {path}")
        if response.status_code >= 400:
            raise ComfyServerError(f"ComfyUI answered {response.status_code} to {method} {path}")
        try:
            return response.json()
        except ValueError:
            raise ComfyServerError(f"ComfyUI sent a body that is not JSON for {path}") from None

    # -- endpoints -------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.system_stats()

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return self._json("GET", f"/object_info/{node_class}" if node_class else "/object_info")

    def checkpoints(self) -> list[str]:
        try:
            return list(self._json("GET", "/models/checkpoints"))
        except NotFound:
            info = self.object_info("CheckpointLoaderSimple").get("CheckpointLoaderSimple", {})
            choices = info.get("input", {}).get("required", {}).get("ckpt_name", [[]])[0]
            return list(choices) if isinstance(choices, list) else []

    def submit(self, graph: dict[str, Any], *, prompt_id: str, client_id: str,
               extra_data: dict[str, Any] | None = None, front: bool = False) -> SubmitResult:
        body: dict[str, Any] = {"prompt": graph, "prompt_id": prompt_id, "client_id": client_id}
        if extra_data:
            body["extra_data"] = extra_data
        if front:
            body["front"] = True
        response = self._request("POST", "/prompt", json=body)
        try:
            payload = response.json()
        except ValueError:
            raise ComfyServerError(f"ComfyUI answered {response.status_code} to POST /prompt "
                                   "with a body that is not JSON") from None
        if response.status_code == 400:
            error = WorkflowRejected("ComfyUI rejected the workflow: " + describe_node_errors(payload))
            error.body = payload  # type: ignore[attr-defined]
            raise error
        if response.status_code != 200:
            raise ComfyServerError(f"ComfyUI answered {response.status_code} to POST /prompt")
        return SubmitResult(str(payload.get("prompt_id", prompt_id)),
                            float(payload.get("number", 0)), payload.get("node_errors") or {})

    def queue(self) -> QueueState:
        data = self._json("GET", "/queue")

        def items(raw: list[Any]) -> list[QueueItem]:
            parsed = []
            for item in raw:
                extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
                parsed.append(QueueItem(float(item[0]), str(item[1]), extra.get("client_id")))
            return parsed

        pending = sorted(items(data.get("queue_pending", [])), key=lambda i: (i.number, i.prompt_id))
        return QueueState(items(data.get("queue_running", [])), pending)

    def history(self, prompt_id: str) -> HistoryEntry | None:
        data = self._json("GET", f"/history/{prompt_id}")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        if not entry:
            return None
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        error = next((m[1] for m in messages
                      if isinstance(m, list) and len(m) == 2 and m[0] == "execution_error"), None)
        outputs = [OutputFile(str(node_id), image["filename"], image.get("subfolder", ""),
                              image.get("type", "output"))
                   for node_id, output in (entry.get("outputs") or {}).items()
                   for image in output.get("images", [])]
        return HistoryEntry(prompt_id, status.get("status_str", ""), bool(status.get("completed")),
                            outputs, messages, error)

    def view(self, out: OutputFile) -> bytes:
        response = self._request("GET", "/view", params={
            "filename": out.filename, "subfolder": out.subfolder, "type": out.type})
        if response.status_code == 404:
            raise NotFound(f"ComfyUI has no output file {out.subfolder}/{out.filename}")
        if response.status_code != 200:
            raise ComfyServerError(f"ComfyUI answered {response.status_code} to /view of "
                                   f"{out.filename}")
        return response.content

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/queue", json={"delete": prompt_ids})

    def interrupt(self, prompt_id: str | None = None) -> None:
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        self._request("POST", "/free", json={"unload_models": unload_models,
                                             "free_memory": free_memory})

    # -- websocket ---------------------------------------------------------------------

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws",
                           f"clientId={client_id}", ""))

    def events(self, client_id: str) -> EventStream:
        connect = self._ws_connect
        if connect is None:
            from websockets.sync.client import connect
        url = self.ws_url(client_id)
        try:
            # Entered by hand: the stream outlives this call, and websockets >= 17
            # wants its connection used through the context-manager protocol.
            socket = connect(url, open_timeout=self.timeout, max_size=None,
                             close_timeout=1, compression=None).__enter__()
        except (OSError, TimeoutError) as exc:
            raise ComfyUnavailable(self.base_url, _reason(exc, self.timeout)) from None
        except Exception as exc:  # websockets' handshake errors (InvalidStatus, InvalidURI, ...)
            raise ComfyUnavailable(self.base_url, f"websocket: {exc}") from None
        return EventStream(socket, self.base_url)


class EventStream:
    """One `/ws` connection: parsed text frames; binary previews reported as
    `preview` events (with a prompt id only when the server sent metadata)."""

    def __init__(self, socket: Any, url: str) -> None:
        self.socket = socket
        self.url = url

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recv(self, timeout: float) -> Event | None:
        try:
            frame = self.socket.recv(timeout=timeout)
        except TimeoutError:
            return None
        except Exception as exc:  # ConnectionClosed and friends: the socket is gone
            raise StreamClosed(self.url, f"websocket closed ({type(exc).__name__})") from None
        if isinstance(frame, bytes):
            return _preview(frame)
        try:
            message = json.loads(frame)
        except ValueError:
            return None
        data = message.get("data") if isinstance(message.get("data"), dict) else {}
        return Event(str(message.get("type", "")), data, data.get("prompt_id"))

    def close(self) -> None:
        try:
            self.socket.close()
        except Exception:  # noqa: BLE001 - closing a dead socket can only fail again
            pass


def _preview(frame: bytes) -> Event:
    kind = struct.unpack(">I", frame[:4])[0] if len(frame) >= 4 else 0
    if kind == 4 and len(frame) >= 8:  # PREVIEW_IMAGE_WITH_METADATA: json length, json, image
        size = struct.unpack(">I", frame[4:8])[0]
        try:
            meta = json.loads(frame[8:8 + size])
        except ValueError:
            meta = {}
        return Event("preview", meta, meta.get("prompt_id"))
    return Event("preview", {"event": kind}, None)
