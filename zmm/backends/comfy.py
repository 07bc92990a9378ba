"""The ComfyUI client: HTTP through httpx (transport injectable) and opening the
`/ws` event stream (zmm.backends.comfy_events) through websockets' sync client
(connector injectable).

Every answer is bounded (`Limits`): bodies are streamed and reading stops past
a size cap, JSON nested deeper than Python can parse is an unreadable answer,
and a websocket frame past its cap closes the connection. A broken or hostile
server costs a ComfyServerError, never the worker's memory or its life.

Every failure becomes a zmm error: unreachable -> ComfyUnavailable, 400 ->
WorkflowRejected with one readable line, 5xx or no answer to POST /prompt ->
ComfyServerError (ambiguous: the caller checks /queue and /history before
submitting again; nothing here ever retries POST /prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    ProtocolError,
)

from zmm.backends.comfy_events import EventStream, websockets_connect
from zmm.backends.net import one_line
from zmm.backends.net import reason as _reason
from zmm.errors import ComfyServerError, ComfyUnavailable, NotFound, WorkflowRejected
from zmm.secrets import mask_url

# What opening the websocket raises when the network or the server fails:
# refused, reset, timed out (OSError), closed mid-handshake (EOFError,
# ConnectionClosed), or an answer that is not a websocket upgrade.
_TRANSPORT_ERRORS = (OSError, EOFError, ConnectionClosed, InvalidHandshake, ProtocolError)
_DETAIL_LIMIT = 300  # a value_not_in_list detail repeats the server's whole model list

# Model folder -> (loader node, input) whose choices list it, for servers without /models.
_FOLDER_CHOICES = {"checkpoints": ("CheckpointLoaderSimple", "ckpt_name"),
                   "diffusion_models": ("UNETLoader", "unet_name"),
                   "text_encoders": ("CLIPLoader", "clip_name"),
                   "vae": ("VAELoader", "vae_name"), "loras": ("LoraLoader", "lora_name"),
                   "upscale_models": ("UpscaleModelLoader", "model_name")}


MIB = 1024 * 1024
# How long ping() waits for /system_stats: a server that takes longer to say it
# is alive is taken for hung (a real request keeps the client's own timeout).
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Limits:
    """The most zmm reads of one answer (docs/comfyui-protocol.md, Limits)."""

    json_bytes: int = 64 * MIB  # /object_info of a server with many custom nodes: ~10 MB
    image_bytes: int = 256 * MIB  # one /view file
    frame_bytes: int = 16 * MIB  # one websocket frame (previews are small JPEGs)
    text_bytes: int = 64 * 1024  # the body of an error answer (only an excerpt is shown)


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
    pending: list[QueueItem]  # in run order; the server sends heap order


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
    error: dict[str, Any] | None  # the execution_error message's data

    @property
    def interrupted(self) -> bool:
        return any(isinstance(m, list) and m and m[0] == "execution_interrupted"
                   for m in self.messages)


def _one_line(text: Any, limit: int = _DETAIL_LIMIT) -> str:
    return one_line(text, limit)


def describe_node_errors(body: dict[str, Any]) -> str:
    """ComfyUI's rejection body as one line: each failing node, its class,
    the error type and details; `error.message` when no node is named."""
    parts = []
    node_errors = body.get("node_errors")
    for node_id, info in (node_errors.items() if isinstance(node_errors, dict) else []):
        info = info if isinstance(info, dict) else {}
        for error in info.get("errors") or []:
            error = error if isinstance(error, dict) else {"message": str(error)}
            detail = str(error.get("details") or error.get("message") or "")
            input_name = (error.get("extra_info") or {}).get("input_name")
            if input_name and not detail.startswith(str(input_name)):
                detail = f"{input_name}: {detail}"
            parts.append(f"node {node_id} ({info.get('class_type', '?')}): "
                         f"{error.get('type', 'error')}: {_one_line(detail)}")
    if parts:
        return "; ".join(parts)
    error = body.get("error")
    if isinstance(error, dict):
        text = str(error.get("message") or error.get("type") or "rejected")
        details = error.get("details")
        return _one_line(f"{text} ({details})" if details else text)
    return _one_line(error or "rejected, without a reason")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):  # empty, text/plain (ComfyUI's 500s), HTML from a
        return None  # proxy, or JSON nested deeper than the parser goes


def _json_problem(response: httpx.Response) -> str:
    """Why an answer that should be JSON is not what zmm can read."""
    try:
        response.json()
    except RecursionError:
        return "JSON nested too deeply"
    except ValueError:
        return "invalid JSON"
    return "JSON zmm cannot read"


def _size(count: int) -> str:
    return f"{count / MIB:g} MB" if count >= MIB else f"{count} bytes"


class ComfyClient:
    """One ComfyUI server. Methods are synchronous; errors are zmm errors."""

    def __init__(self, base_url: str, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 30.0, ws_connect: Callable[..., Any] | None = None,
                 limits: Limits | None = None, probe_timeout: float | None = None) -> None:
        self.base_url = mask_url(base_url.rstrip("/"))  # what errors and the spool show
        self.timeout = timeout
        # ping()'s own timeout: a health probe must not wait as long as a real request
        self.probe_timeout = min(timeout, probe_timeout or PROBE_TIMEOUT_S)
        self.limits = limits or Limits()
        self.bytes_read = 0  # every body byte read so far (what the caps bound)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), transport=transport,
                                  timeout=timeout)
        self._ws_connect = ws_connect
        self._ws_base = base_url.rstrip("/")

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, ambiguous: bool = False,
                 limit: int | None = None, timeout: float | None = None,
                 **kwargs: Any) -> httpx.Response:
        """Send one request and read its answer, at most `limit` bytes of it (the
        JSON cap by default; an error answer only `limits.text_bytes`). With
        `ambiguous`, a failure after the request may have reached the server is
        a ComfyServerError, not ComfyUnavailable."""
        wait = timeout or self.timeout
        try:
            request = self._http.build_request(method, path, timeout=wait, **kwargs)
            response = self._http.send(request, stream=True)
            try:
                cap = (limit or self.limits.json_bytes) if response.status_code == 200 \
                    else self.limits.text_bytes
                body = self._read(response, cap, method, path)
            finally:
                response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ComfyUnavailable(self.base_url, _reason(exc, wait)) from None
        except httpx.TransportError as exc:
            if ambiguous:
                raise ComfyServerError(
                    f"ComfyUI at {self.base_url} gave no answer to {method} {path} "
                    f"({_reason(exc, wait)}); it may have taken the request") from None
            raise ComfyUnavailable(self.base_url, _reason(exc, wait)) from None
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length",
                                        "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=body,
                              request=request)

    def _read(self, response: httpx.Response, cap: int, method: str, path: str) -> bytes:
        """The body, decoded, stopping (and failing) past `cap` bytes; an error
        answer is only cut there (its excerpt is all anyone sees of it)."""
        body = bytearray()
        for chunk in response.iter_bytes():
            self.bytes_read += len(chunk)
            body += chunk
            if len(body) > cap:
                if response.status_code != 200:
                    return bytes(body[:cap])
                raise ComfyServerError(
                    f"ComfyUI at {self.base_url} answered {method} {path} with more than "
                    f"{_size(cap)}; zmm stops reading there")
        return bytes(body)

    def _unexpected(self, method: str, path: str, response: httpx.Response) -> ComfyServerError:
        excerpt = _one_line(response.text, 200)
        return ComfyServerError(f"ComfyUI at {self.base_url} answered {response.status_code} to "
                                f"{method} {path}" + (f": {excerpt}" if excerpt else ""))

    def _unreadable(self, method: str, path: str, response: httpx.Response) -> ComfyServerError:
        return ComfyServerError(f"ComfyUI at {self.base_url} answered {method} {path} with "
                                f"{_json_problem(response)}: {_one_line(response.text, 120)}")

    def _json(self, method: str, path: str, expect: type = dict, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 404:
            raise NotFound(f"ComfyUI at {self.base_url} has no {path}")
        if response.status_code != 200:
            raise self._unexpected(method, path, response)
        data = _body(response)
        if not isinstance(data, expect):
            raise self._unreadable(method, path, response)
        return data

    def _post_empty(self, path: str, body: dict[str, Any]) -> None:
        """The fire-and-forget POSTs: 200 with an empty body whatever happened."""
        response = self._request("POST", path, json=body)
        if response.status_code != 200:
            raise self._unexpected("POST", path, response)

    def ping(self) -> dict[str, Any]:
        """system_stats, where anything but a ComfyUI answer means 'down'."""
        try:
            response = self._request("GET", "/system_stats", timeout=self.probe_timeout)
        except ComfyServerError as exc:  # an answer past the cap: not a ComfyUI
            raise ComfyUnavailable(self.base_url, exc.message) from None
        data = _body(response) if response.status_code == 200 else None
        if not isinstance(data, dict):
            status = response.status_code
            raise ComfyUnavailable(self.base_url, f"GET /system_stats answered {status}"
                                   + (" without JSON" if status == 200 else "")
                                   + (" (not a ComfyUI server?)" if status in (200, 404) else ""))
        return data

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        path = f"/object_info/{quote(node_class, safe='')}" if node_class else "/object_info"
        return self._json("GET", path)

    def checkpoints(self) -> list[str]:
        """Checkpoint file names; from object_info where /models is missing (older servers)."""
        return self.model_files("checkpoints")

    def model_files(self, folder: str) -> list[str]:
        """The file names in one model folder (GET /models/<folder>); from the
        loader's choices in object_info where /models is missing (older servers)."""
        try:
            return [str(name) for name in self._json("GET", f"/models/{quote(folder, safe='')}",
                                                     expect=list)]
        except NotFound:
            if folder not in _FOLDER_CHOICES:
                return []
            node, field = _FOLDER_CHOICES[folder]
            info = self.object_info(node).get(node) or {}
            spec = ((info.get("input") or {}).get("required") or {}).get(field) or [[]]
            choices = spec[0] if spec else []
            if choices == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
                choices = spec[1].get("options") or []  # newer object_info combo shape
            return [str(name) for name in choices] if isinstance(choices, list) else []

    def upload_image(self, name: str, data: bytes, *, subfolder: str = "") -> dict[str, Any]:
        """`POST /upload/image` (multipart, type input, overwrite): the server's
        {"name", "subfolder", "type"}. The same name and bytes twice is harmless.
        A refusal is WorkflowRejected (ComfyUI answers 400 with an empty body)."""
        form = {"type": "input", "overwrite": "true", "subfolder": subfolder}
        response = self._request("POST", "/upload/image", data=form,
                                 files={"image": (name, data, "application/octet-stream")})
        if 400 <= response.status_code < 500:
            excerpt = _one_line(response.text, 200)
            raise WorkflowRejected(f"ComfyUI refused the upload of {name} (HTTP "
                                   f"{response.status_code}" + (f": {excerpt})" if excerpt
                                                                else ")"))
        if response.status_code != 200:
            raise self._unexpected("POST", "/upload/image", response)
        answer = _body(response)
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise self._unreadable("POST", "/upload/image", response)
        return answer

    def submit(self, graph: dict[str, Any], *, prompt_id: str, client_id: str,
               extra_data: dict[str, Any] | None = None, front: bool = False) -> SubmitResult:
        """POST /prompt once. A 200 may still carry node_errors (partial acceptance)."""
        body: dict[str, Any] = {"prompt": graph, "prompt_id": prompt_id, "client_id": client_id}
        if extra_data:
            body["extra_data"] = extra_data
        if front:
            body["front"] = True
        response = self._request("POST", "/prompt", ambiguous=True, json=body)
        payload = _body(response)
        if response.status_code == 400 and isinstance(payload, dict):
            error = WorkflowRejected("ComfyUI rejected the workflow: "
                                     + describe_node_errors(payload))
            error.body = payload  # type: ignore[attr-defined]
            raise error
        if response.status_code != 200:
            raise self._unexpected("POST", "/prompt", response)
        try:
            return SubmitResult(str(payload.get("prompt_id") or prompt_id),
                                float(payload.get("number", 0)),
                                payload.get("node_errors") or {})
        except (AttributeError, TypeError, ValueError):
            raise self._unreadable("POST", "/prompt", response) from None

    def queue(self) -> QueueState:
        data = self._json("GET", "/queue")
        try:
            running = [_queue_item(raw) for raw in data.get("queue_running") or []]
            pending = [_queue_item(raw) for raw in data.get("queue_pending") or []]
        except (IndexError, KeyError, TypeError, ValueError):
            raise ComfyServerError(f"ComfyUI at {self.base_url} sent a queue zmm cannot read") \
                from None
        pending.sort(key=lambda item: (item.number, item.prompt_id))
        return QueueState(running, pending)

    def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished prompt's record; None while unknown or unfinished ({})."""
        data = self._json("GET", f"/history/{quote(prompt_id, safe='')}")
        entry = data.get(prompt_id)
        if not isinstance(entry, dict):
            return None
        status = entry["status"] if isinstance(entry.get("status"), dict) else {}
        messages = status["messages"] if isinstance(status.get("messages"), list) else []
        error = next((m[1] for m in messages if isinstance(m, list) and len(m) == 2
                      and m[0] == "execution_error" and isinstance(m[1], dict)), None)
        return HistoryEntry(prompt_id, str(status.get("status_str") or ""),
                            bool(status.get("completed")), _outputs(entry.get("outputs")),
                            messages, error)

    def view(self, out: OutputFile) -> bytes:
        response = self._request("GET", "/view", limit=self.limits.image_bytes, params={
            "filename": out.filename, "subfolder": out.subfolder, "type": out.type})
        if response.status_code == 404:
            where = f"{out.subfolder}/{out.filename}" if out.subfolder else out.filename
            raise NotFound(f"ComfyUI has no {out.type} file {where}")
        if response.status_code != 200:
            raise self._unexpected("GET", f"/view ({out.filename})", response)
        return response.content

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts (a running one is untouched: use interrupt)."""
        if prompt_ids:
            self._post_empty("/queue", {"delete": list(prompt_ids)})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt `prompt_id` if it is the running one; everything running without it."""
        self._post_empty("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        self._post_empty("/free", {"unload_models": unload_models, "free_memory": free_memory})

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self._ws_base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws",
                           urlencode({"clientId": client_id}), ""))

    def events(self, client_id: str) -> EventStream:
        """A new websocket for `client_id`. Use a fresh id per connection: a second
        socket with the same id silences the first and is then unregistered."""
        connect = self._ws_connect or websockets_connect()
        try:
            # No keepalive pings: a ComfyUI busy for 20-40 s answers none, and websockets
            # then logs a traceback on stderr; silence is judged by zmm's own timeouts
            # (comfyui.silence_timeout_s, hang_s).
            opened = connect(self.ws_url(client_id), open_timeout=self.timeout,
                             max_size=self.limits.frame_bytes, close_timeout=1,
                             compression=None, ping_interval=None)
            # Entered by hand: the stream outlives this call, and websockets >= 17
            # wants its connection used through the context-manager protocol.
            enter = getattr(opened, "__enter__", None)
            connection = enter() if enter is not None else opened
        except InvalidStatus as exc:
            raise ComfyUnavailable(self.base_url, "the websocket was refused (HTTP "
                                   f"{exc.response.status_code} on /ws)") from None
        except InvalidURI:
            raise ComfyUnavailable(self.base_url, "not a valid websocket URL") from None
        except _TRANSPORT_ERRORS as exc:
            raise ComfyUnavailable(self.base_url, _reason(exc, self.timeout)) from None
        # Anything else (a TypeError, a KeyError) is a bug and propagates: turned into
        # "unavailable", it would keep a worker waiting for a ComfyUI that is up.
        return EventStream(connection, self.base_url)


def _queue_item(raw: list[Any]) -> QueueItem:
    extra = raw[3] if len(raw) > 3 and isinstance(raw[3], dict) else {}
    client_id = extra.get("client_id")
    return QueueItem(float(raw[0]), str(raw[1]), str(client_id) if client_id else None)


def _outputs(raw: Any) -> list[OutputFile]:
    files = []
    for node_id, output in (raw.items() if isinstance(raw, dict) else []):
        images = output.get("images") if isinstance(output, dict) else None
        for image in images if isinstance(images, list) else []:
            if isinstance(image, dict) and image.get("filename"):
                files.append(OutputFile(str(node_id), str(image["filename"]),
                                        str(image.get("subfolder") or ""),
                                        str(image.get("type") or "output")))
    return files
