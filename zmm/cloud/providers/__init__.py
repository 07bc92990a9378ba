"""Cloud image providers behind one small interface, and the ladder that tries
them: bounded retries with backoff on 429 / 5xx / network errors (honouring
Retry-After up to a cap), then the next provider on anything else.

A provider makes one HTTP call per `generate()` and classifies what it got;
this module decides what happens next. Nothing here touches the spool.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from zmm.config import Config
from zmm.errors import InvalidInput

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0


@dataclass(frozen=True)
class CloudRequest:
    prompt: str
    negative: str
    width: int
    height: int
    seed: int | None
    quality: str  # draft | standard | high


@dataclass(frozen=True)
class CloudImage:
    data: bytes  # a PNG
    provider: str
    model: str
    seed: int | None  # None where the provider has no seed (OpenAI)
    cost_usd: float | None  # None when no price is configured for the model
    request_id: str | None = None


class ProviderError(Exception):
    """One failed call. `retry`: worth trying this provider again (429, 5xx,
    network); otherwise the next provider is asked. `cost_usd`: what the call
    cost anyway (a content-filtered image is still a billed generation)."""

    def __init__(self, provider: str, message: str, *, retry: bool, status: int | None = None,
                 retry_after: float | None = None, cost_usd: float = 0.0) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider, self.message, self.retry = provider, message, retry
        self.status, self.retry_after, self.cost_usd = status, retry_after, cost_usd


class Provider(Protocol):
    name: str

    def usable(self) -> str | None:
        """None when the provider can be called, else why not (e.g. no key)."""

    def generate(self, request: CloudRequest) -> CloudImage:
        """One call; raises ProviderError."""


@dataclass
class Attempt:
    provider: str
    message: str
    ok: bool
    seconds: float
    cost_usd: float = 0.0


@dataclass
class ChainResult:
    image: CloudImage | None
    attempts: list[Attempt] = field(default_factory=list)
    transient: bool = False  # some provider gave up on retryable errors (429, 5xx, network)
    stopped: bool = False  # `should_stop` said so before an image came

    @property
    def cost_usd(self) -> float:
        return round(sum(attempt.cost_usd for attempt in self.attempts), 6)

    @property
    def summary(self) -> str:
        return "; ".join(f"{a.provider}: {a.message}" for a in self.attempts if not a.ok)


def generate(providers: list[Provider], request: CloudRequest, *, max_retries: int,
             retry_after_max_s: float, should_stop: Callable[[], bool] = lambda: False,
             on_try: Callable[[str, int], None] = lambda name, number: None,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> ChainResult:
    """Ask each provider in order until one returns an image."""
    result = ChainResult(None)
    for provider in providers:
        why_not = provider.usable()
        if why_not:
            result.attempts.append(Attempt(provider.name, why_not, False, 0.0))
            continue
        for number in range(1, max_retries + 2):
            if should_stop():
                result.stopped = True
                return result
            on_try(provider.name, number)
            started = clock()
            try:
                image = provider.generate(request)
            except ProviderError as exc:
                attempt = Attempt(provider.name, exc.message, False, clock() - started,
                                  exc.cost_usd)
                result.attempts.append(attempt)
                wait = _retry_wait(exc, number, max_retries, retry_after_max_s)
                if wait is None:
                    if exc.retry:  # worth asking again later, just not now
                        result.transient = True
                        attempt.message += f" (gave up after {number} tries)"
                    break
                attempt.message += f" (try {number}; again in {wait:g}s)"
                sleep(wait)
                continue
            seconds = clock() - started
            result.attempts.append(Attempt(provider.name, f"image in {seconds:.1f}s", True,
                                           seconds, image.cost_usd or 0.0))
            result.image = image
            return result
    return result


def _retry_wait(exc: ProviderError, number: int, max_retries: int,
                retry_after_max_s: float) -> float | None:
    """Seconds before trying the same provider again, or None to move on."""
    if not exc.retry or number > max_retries:
        return None
    if exc.retry_after is not None:
        return exc.retry_after if exc.retry_after <= retry_after_max_s else None
    return min(BACKOFF_FIRST_S * 2 ** (number - 1), BACKOFF_MAX_S)


def key_from(settings: Config, section: str, environ: dict[str, str] | None = None) -> tuple[str, str | None]:
    """(name of the env var, its value or None). Keys live only in the environment."""
    name = settings.get(f"{section}.key_env")
    value = (os.environ if environ is None else environ).get(name) or None
    return name, value


KNOWN = ("stability", "openai")


def build(settings: Config, *, transport=None, environ: dict[str, str] | None = None) -> list[Provider]:
    """The configured providers, in `cloud.providers` order."""
    names = settings.get("cloud.providers")
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        raise InvalidInput("config cloud.providers", f"names from {', '.join(KNOWN)}; "
                           f"got {', '.join(map(repr, unknown))}")
    made: list[Provider] = []
    for name in dict.fromkeys(names):
        if name == "stability":
            from zmm.cloud.providers.stability import Stability

            made.append(Stability(settings, transport=transport, environ=environ))
        else:
            from zmm.cloud.providers.openai import OpenAIImages

            made.append(OpenAIImages(settings, transport=transport, environ=environ))
    return made
