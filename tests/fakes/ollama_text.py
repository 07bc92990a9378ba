"""Text generation for the fake Ollama: /api/generate and /api/chat with a
prompt or messages, answered as the real server does (docs/ollama-protocol.md,
"Text generation"): NDJSON fragments unless "stream" is false (the server's
default is true), a last object with done_reason and the statistics in
nanoseconds, `context` on /api/generate only, options.num_predict cutting the
answer ("length"), and "thinking" apart from the answer when "think" is true."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

# What a fake model answers: a fixed text, or a function of the request's body.
Reply = str | Callable[[dict[str, Any]], str]
_FRAGMENT = re.compile(r"\s*\S+")
_THOUGHT = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)


def default_reply(body: dict[str, Any]) -> str:
    """A pretend model that keeps the request and adds a few keywords."""
    return f"{request_text(body)}, highly detailed, soft light, sharp focus"


def request_text(body: dict[str, Any]) -> str:
    """The user's words: the prompt, or the last user message of a chat."""
    if "messages" in body:
        users = [m.get("content", "") for m in body["messages"] if m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(body.get("prompt") or "")


def bad_fields(path: str, body: dict[str, Any]) -> str | None:
    """Go's json.Unmarshal error for a field of the wrong type, as Ollama's 400 says it."""
    request = "ChatRequest" if path.endswith("/chat") else "GenerateRequest"
    if "options" in body and body["options"] is not None and not isinstance(body["options"], dict):
        return (f"json: cannot unmarshal {_go_kind(body['options'])} into Go struct field "
                f"{request}.options of type map[string]interface {{}}")
    if request == "ChatRequest" and not isinstance(body.get("messages"), list):
        return (f"json: cannot unmarshal {_go_kind(body.get('messages'))} into Go struct "
                "field ChatRequest.messages of type []api.Message")
    return None


def _go_kind(value: Any) -> str:
    return {str: "string", bool: "bool", int: "number", float: "number", dict: "object"}.get(
        type(value), "array")


async def answer(request: web.Request, body: dict[str, Any], name: str, text: str,
                 *, load_s: float) -> web.StreamResponse:
    """The model's `text`, whole or streamed as the request asks."""
    chat = request.path.endswith("/chat")
    thinking, text = _split_thinking(text, body.get("think"))
    pieces = _FRAGMENT.findall(text)
    limit = (body.get("options") or {}).get("num_predict")
    reason = "stop"
    if isinstance(limit, int) and 0 <= limit < len(pieces):
        pieces, reason = pieces[:limit], "length"
    final = _final(name, chat, reason, len(pieces), load_s)
    if body.get("stream", True) is False:
        whole = "".join(pieces)
        if chat:
            final["message"] = {"role": "assistant", "content": whole}
            if thinking:
                final["message"]["thinking"] = thinking
        else:
            final["response"] = whole
            if thinking:
                final["thinking"] = thinking
        return web.json_response(final)
    stream = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await stream.prepare(request)
    if thinking:
        await _line(stream, _chunk(name, chat, "", thinking))
    for piece in pieces:
        await _line(stream, _chunk(name, chat, piece))
    await _line(stream, final)
    await stream.write_eof()
    return stream


def _split_thinking(text: str, think: Any) -> tuple[str | None, str]:
    """think true: the reasoning apart; false: dropped; absent: left in the text."""
    if think is None:
        return None, text
    thoughts = " ".join(part.strip() for part in _THOUGHT.findall(text))
    rest = _THOUGHT.sub("", text)
    return (thoughts or None) if think else None, rest


def _chunk(name: str, chat: bool, piece: str, thinking: str | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"model": name, "created_at": _now()}
    if chat:
        chunk["message"] = {"role": "assistant", "content": piece}
        if thinking:
            chunk["message"]["thinking"] = thinking
    else:
        chunk["response"] = piece
        if thinking:
            chunk["thinking"] = thinking
    chunk["done"] = False
    return chunk


def _final(name: str, chat: bool, reason: str, tokens: int, load_s: float) -> dict[str, Any]:
    final = _chunk(name, chat, "")
    final.update(done=True, done_reason=reason)
    if not chat:
        final["context"] = list(range(1, tokens + 9))  # the tokens, as /api/generate keeps them
    load = int(load_s * 1e9)
    final.update(total_duration=load + 150_000_000 + tokens * 20_000_000, load_duration=load,
                 prompt_eval_count=26, prompt_eval_duration=130_000_000, eval_count=tokens,
                 eval_duration=tokens * 20_000_000)
    return final


async def _line(stream: web.StreamResponse, value: dict[str, Any]) -> None:
    await stream.write((json.dumps(value) + "\n").encode())


def _now() -> str:
    from tests.fakes.ollama import go_time

    return go_time(time.time())
