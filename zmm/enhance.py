"""Prompt enhancement: the local LLM (Ollama) rewrites a short request as a prompt
for the job's model family (keywords for SD1.5/SDXL, sentences for SD3.5/Flux),
in its style's words. Owns the request (system prompt, options), the cleaning of
the answer and the cause of a failure in words (`EnhanceFailed`). It never
touches the spool: the worker persists what it returns (zmm.worker.enhancing).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zmm import families, jobs
from zmm.config import Config
from zmm.errors import (
    NOT_FOUND,
    EnhanceFailed,
    InvalidInput,
    NotFound,
    OllamaError,
    OllamaUnavailable,
)

ENDPOINTS = ("chat", "generate")
_QUOTES = "\"'`“”‘’«»"


@functools.cache
def _patterns() -> dict[str, re.Pattern[str]]:
    """Compiled on the first answer cleaned: `generate --no-wait` imports this module."""
    return {
        "think": re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE),
        "open_think": re.compile(r"</?think(?:ing)?>", re.IGNORECASE),
        "fence": re.compile(r"^```[a-z]*\s*|\s*```$", re.IGNORECASE),
        # "Prompt:", "**Enhanced prompt:**", "Sure! Here is the improved prompt for SDXL:"
        "label": re.compile(
            r"^[\s*#>_-]*(?:(?:sure|okay|ok|certainly|of course)\b[!.,]*\s*)?"
            r"(?:here(?:'s| is)\s+(?:an?\s+|the\s+|your\s+)?)?(?:\w+\s+){0,2}prompt"
            r"(?:\s+for\s+[^:\n]{1,40})?\s*\W*:\s*\**\s*", re.IGNORECASE),
        "negative": re.compile(r"\n?\W*negative(?:\s+prompt)?\W*:.*$",
                               re.IGNORECASE | re.DOTALL),
    }


if TYPE_CHECKING:  # intake imports this module on the light `generate --no-wait` path
    import httpx


@dataclass(frozen=True)
class Enhanced:
    prompt: str  # the cleaned answer: what the workflow binds
    model: str  # the Ollama model that wrote it
    seconds: float  # the request, as zmm measured it


def system_prompt(settings: Config, style: str, family: str | None,
                  checkpoint: str | None = None) -> str:
    section = settings.section("enhance")
    texts = section["system"]
    base = str(texts.get(style) or texts.get("none") or "")
    shown = family if family in families.FAMILIES else (checkpoint or "Stable Diffusion")
    kind = str(section["format"].get(families.prompt_kind(family, checkpoint)) or "")
    # str.replace, not str.format: a user's system prompt may hold braces
    instruction = kind.replace("{family}", shown)
    return base.replace("{format}", instruction) if "{format}" in base \
        else f"{base} {instruction}".strip()


def clean(answer: str, max_chars: int) -> str:
    """The prompt in a model's answer: no think-blocks, code fences, "Prompt:"
    labels, surrounding quotes, negative-prompt tail or line breaks; at most
    `max_chars`, cut at the last comma or sentence end before the limit."""
    patterns = _patterns()
    text = patterns["think"].sub(" ", answer)
    if re.search(r"<think(?:ing)?>", text, re.IGNORECASE):  # never closed: all reasoning
        return ""
    text = patterns["open_think"].sub(" ", text)
    text = patterns["fence"].sub("", text.strip())
    text = patterns["negative"].sub("", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "Here is a better prompt:" on its own
        lines = lines[1:]
    text = " ".join(lines)
    for _ in range(4):  # '"Prompt: **a fox**"': quotes, a label, emphasis, in any order
        before = text
        if len(text) > 1 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
        text = patterns["label"].sub("", text, count=1).strip()
        if text.startswith("**") and text.endswith("**"):
            text = text[2:-2].strip()
        if text == before:
            break
    text = " ".join(text.split())
    return _cap(text, max_chars)


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(", "), head.rfind(". "))
    if cut >= limit // 2:
        return head[:cut + (1 if head[cut] == "." else 0)].strip()
    space = head.rfind(" ")
    return head[:space if space >= limit // 2 else limit].strip()


class Enhancer:
    """Asks the configured Ollama model for one job's prompt. The client is made
    once (keep-alive connections); `transport` is for tests' fake servers only."""

    def __init__(self, settings: Config, *, transport: httpx.BaseTransport | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        from zmm.backends.ollama import OllamaClient

        section = settings.section("enhance")
        self.settings = settings
        self.url = str(section["url"] or settings.get("ollama.url"))
        self.model = str(section["model"])
        self.timeout = float(section["timeout_s"])
        self.endpoint = str(section["endpoint"]).strip().lower()
        if self.endpoint not in ENDPOINTS:
            raise InvalidInput("config enhance.endpoint", "one of " + ", ".join(ENDPOINTS))
        self.max_chars = int(section["max_chars"])
        self.temperature = float(section["temperature"])
        self.monotonic = monotonic
        # No Ollama configured: each job says so in its events instead of waiting.
        self.disabled = not section["url"] and not settings.get("ollama.enabled")
        self.client = OllamaClient(self.url, transport=transport, timeout=self.timeout)

    def close(self) -> None:
        self.client.close()

    def enhance(self, request: str, *, style: str, family: str | None,
                checkpoint: str | None = None, seed: int | None = None,
                timeout: float | None = None) -> Enhanced:
        """The improved prompt, or EnhanceFailed naming why there is none."""
        if self.disabled:
            raise EnhanceFailed("Ollama is disabled (ollama.enabled = false and no enhance.url)")
        system = system_prompt(self.settings, style, family, checkpoint)
        options: dict[str, Any] = {"temperature": self.temperature}
        if seed is not None:  # the same request and seed ask the same question twice
            options["seed"] = seed % 2**31
        wait = self.timeout if timeout is None else timeout
        start = self.monotonic()
        try:
            if self.endpoint == "chat":
                answer = self.client.chat(self.model, [
                    {"role": "system", "content": system}, {"role": "user", "content": request}],
                    options=options, timeout=wait)
            else:
                answer = self.client.generate(self.model, request, system=system,
                                              options=options, timeout=wait)
        except OllamaUnavailable as exc:
            raise EnhanceFailed(f"Ollama at {self.url} is unreachable: {exc.reason}") from None
        except NotFound:
            raise EnhanceFailed(f"Ollama at {self.url} has no model {self.model!r}",
                                exit_code=NOT_FOUND,
                                hint=f"`ollama pull {self.model}`, or set enhance.model") from None
        except OllamaError as exc:
            raise EnhanceFailed(f"Ollama answered {exc.status}: {exc.detail}") from None
        prompt = clean(answer.text, self.max_chars)
        if not prompt:
            raise EnhanceFailed(f"{self.model} gave an empty answer")
        return Enhanced(prompt, answer.model or self.model, self.monotonic() - start)

    def for_job(self, params: Mapping[str, Any], *, prompt: str, style: str | None,
                seed: int | None, timeout: float | None = None) -> Enhanced:
        """`enhance` with a job's (or job spec's) stored values."""
        return self.enhance(str(params.get("user_prompt") or prompt), style=style or "none",
                            family=params.get("family") or params.get("model_key"),
                            checkpoint=params.get("checkpoint"), seed=seed, timeout=timeout)


def enhance_specs(specs: list[jobs.JobSpec], settings: Config, *,
                  warn: Callable[[str], None]) -> None:
    """`zmm generate --print-workflow --enhance`, without a worker: each spec
    asking for it gets its enhanced prompt here. A failure is a warning (the graph
    keeps the prompt as written), or raised for --enhance=required."""
    wanting = [spec for spec in specs if spec.enhance != "off" and not spec.enhanced_prompt]
    if not wanting:
        return
    enhancer = Enhancer(settings)
    try:
        for spec in wanting:
            try:
                spec.enhanced_prompt = enhancer.for_job(
                    spec.stored_params(), prompt=spec.prompt, style=spec.style,
                    seed=spec.seed).prompt
            except EnhanceFailed as exc:
                if spec.enhance == "required":
                    raise
                warn(f"warning: {exc.message}; the graph has the prompt as written")
    finally:
        enhancer.close()
