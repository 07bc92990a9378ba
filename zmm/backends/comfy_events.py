"""ComfyUI's `/ws` event stream for one client id: parsed text frames as
`Event`s, binary preview frames as `preview` events, and a dropped or closed
socket as `StreamClosed` (ComfyUI unavailable): a frame past the connection's
`max_size` closes it (code 1009). Opened by ComfyClient.events().
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from zmm.backends.net import reason as _reason
from zmm.errors import ComfyUnavailable


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any]
    prompt_id: str | None


class StreamClosed(ComfyUnavailable):
    """The websocket dropped or the server closed it."""


class EventStream:
    """One `/ws` connection: parsed text frames; binary frames as `preview`
    events (with a prompt id only when the server sent metadata)."""

    def __init__(self, connection: Any, url: str) -> None:
        self.connection = connection
        self.url = url

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recv(self, timeout: float) -> Event | None:
        """The next event, or None when `timeout` seconds pass without one.
        Frames that are not ComfyUI messages are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frame = self.connection.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
            except ConnectionClosed as exc:
                raise StreamClosed(self.url, _closed_reason(exc)) from None
            except (OSError, EOFError) as exc:
                raise StreamClosed(self.url, f"the websocket dropped ({_reason(exc, timeout)})") \
                    from None
            event = _binary_event(frame) if isinstance(frame, bytes | bytearray) \
                else _text_event(frame)
            if event is not None:
                return event

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead socket can only fail again
            self.connection.close()


def _closed_reason(exc: ConnectionClosed) -> str:
    if isinstance(exc, ConnectionClosedOK):
        return "the server closed the websocket"
    if exc.sent is not None and exc.sent.code == 1009:  # zmm closed it: a frame too large
        return "ComfyUI sent a websocket frame past the size zmm reads (closed, code 1009)"
    code = exc.rcvd.code if exc.rcvd is not None else None
    return f"the websocket closed (code {code})" if code else "the websocket dropped"


def _text_event(frame: str) -> Event | None:
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    data = message["data"] if isinstance(message.get("data"), dict) else {}
    prompt_id = data.get("prompt_id")
    return Event(message["type"], data, prompt_id if isinstance(prompt_id, str) else None)


_IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}


def _binary_event(frame: bytes | bytearray) -> Event | None:
    """uint32 BE event type + payload: 1 preview image, 4 preview with metadata."""
    if len(frame) < 8:
        return None
    kind, head = struct.unpack(">II", frame[:8])
    if kind == 4:
        try:
            meta = json.loads(frame[8:8 + head])
        except (ValueError, RecursionError):
            return None
        meta = meta if isinstance(meta, dict) else {}
        prompt_id = meta.get("prompt_id")
        return Event("preview", {**meta, "image": bytes(frame[8 + head:])},
                     prompt_id if isinstance(prompt_id, str) else None)
    if kind == 1:
        return Event("preview", {"image_type": _IMAGE_TYPES.get(head, "image/jpeg"),
                                 "image": bytes(frame[8:])}, None)
    return None  # 3 (node progress text) and anything newer: nothing zmm shows


def websockets_connect() -> Callable[..., Any]:
    """websockets' sync client, imported only when a stream is opened."""
    from websockets.sync.client import connect

    return connect
