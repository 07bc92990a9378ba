"""Completion webhooks: signing, one POST of an outbox row, the retry schedule,
the words of `webhook` events, and the background sender run next to a worker.

Rows, leases and events are written through Store (SQL in zmm.store.outbox).
The secret's value is read from the environment for each try and only ever
fed to HMAC: it is never stored, logged or put into a message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

import zmm
from zmm.backends.net import one_line, reason
from zmm.config import Config
from zmm.secrets import scrub
from zmm.store import Store
from zmm.store.outbox import Delivery
from zmm.timestamps import parse_iso

SIGNATURE_HEADER = "X-Zmm-Signature-256"
BACKOFF_FACTOR = 4
# A claim covers the POST (connect and read may each take the timeout) plus
# the spool write that records it; a lease that runs out only risks a duplicate.
LEASE_MARGIN_S = 5.0


def sign(body: bytes, secret: str) -> str:
    """The `X-Zmm-Signature-256` value: HMAC-SHA256 of the raw body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """What a receiver does (in constant time)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def retry_delay(tries_done: int, backoff_s: float) -> float:
    """The wait after failed try number `tries_done`: backoff_s, then 4x each time."""
    return backoff_s * BACKOFF_FACTOR ** (tries_done - 1)


@dataclass(frozen=True)
class Policy:
    """The `[webhooks]` settings a try needs, and the env var naming the secret."""

    timeout_s: float
    tries: int
    backoff_s: float
    secret_env: str

    @classmethod
    def from_settings(cls, settings: Config) -> Policy:
        return cls(timeout_s=settings.get("webhooks.timeout_s"),
                   tries=max(1, settings.get("webhooks.tries")),
                   backoff_s=max(0.0, settings.get("webhooks.backoff_s")),
                   secret_env=settings.get("secrets.webhook_secret_env"))

    @property
    def lease_s(self) -> float:
        return 2 * self.timeout_s + LEASE_MARGIN_S


def headers_for(delivery: Delivery, body: bytes, secret: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"zmm/{zmm.__version__}",
        "X-Zmm-Event": delivery.event,
        "X-Zmm-Delivery": delivery.delivery_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    return headers


@dataclass(frozen=True)
class TryResult:
    """One recorded try. `status` is the delivery's after it: pending (a later
    try is scheduled), delivered or failed (gave up)."""

    delivery_id: str
    job_id: str
    try_number: int
    status: str
    http_status: int | None
    error: str | None
    message: str
    recorded: bool  # False: the lease had run out and another sender took the row


def _post(client: httpx.Client, delivery: Delivery, policy: Policy,
          environ: Mapping[str, str]) -> tuple[int | None, str | None, bool]:
    """POST once: (HTTP status or None, the failure in words or None, signed?)."""
    body = scrub(delivery.body).encode("utf-8")  # a row written before scrubbing, too
    secret = environ.get(policy.secret_env) or None
    try:
        # stream(): the answer's body is never read, however large it is
        with client.stream("POST", delivery.url, content=body,
                           headers=headers_for(delivery, body, secret)) as response:
            code, location = response.status_code, response.headers.get("location")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        return None, reason(exc, policy.timeout_s), secret is not None
    if 200 <= code < 300:
        return code, None, secret is not None
    if 300 <= code < 400:
        where = f" to {one_line(location, 120)}" if location else ""
        return code, f"a redirect{where}, not followed", secret is not None
    return code, f"HTTP {code}", secret is not None


def describe(delivery: Delivery, http_status: int | None, error: str | None, number: int,
             policy: Policy, retry_in: float | None, signed: bool) -> str:
    """The `webhook` event message of one try."""
    text = f"POST {delivery.url}"
    if http_status is None:
        text += f" failed: {error}"
    elif error is not None and 300 <= http_status < 400:
        text += f" -> {http_status}, {error}"
    else:
        text += f" -> {http_status}"
    text += f" (try {number} of {max(number, policy.tries)})"
    if error is not None:
        text += (f"; next try in {retry_in:g}s" if retry_in is not None
                 else f"; gave up after {number} tries")
    if not signed:
        text += f"; unsigned: ${policy.secret_env} is not set"
    return text


def deliver_one(store: Store, client: httpx.Client, delivery: Delivery, claimer: str,
                policy: Policy, environ: Mapping[str, str]) -> TryResult:
    """Try a claimed delivery once and record the try (with its event)."""
    http_status, error, signed = _post(client, delivery, policy, environ)
    number = delivery.tries + 1
    if error is None:
        status, retry_in = "delivered", None
    elif number >= policy.tries:
        status, retry_in = "failed", None
    else:
        status, retry_in = "pending", retry_delay(number, policy.backoff_s)
    message = describe(delivery, http_status, error, number, policy, retry_in, signed)
    data = {"delivery_id": delivery.delivery_id, "event": delivery.event,
            "status": http_status, "delivery": status, "try": number}
    recorded = store.record_webhook_try(delivery, claimer, status=status, last_error=error,
                                        retry_in_s=retry_in, message=message, data=data)
    return TryResult(delivery.delivery_id, delivery.job_id, number, status, http_status, error,
                     message, recorded)


def deliver_round(store: Store, client: Callable[[], httpx.Client], policy: Policy,
                  claimer: str, environ: Mapping[str, str], *, keep_going: Callable[[], bool],
                  job_ids: list[str] | None = None, once_each: bool = False) -> list[TryResult]:
    """Claim and try due deliveries one at a time while `keep_going()`. With
    `once_each`, no row is tried twice in the round even if due again. `client()`
    is only called once there is something to send."""
    tried: list[int] = []
    results = []
    while keep_going():
        claimed = store.claim_webhook_deliveries(claimer, lease_s=policy.lease_s, limit=1,
                                                 job_ids=job_ids,
                                                 exclude=tried if once_each else None)
        if not claimed:
            break
        tried.append(claimed[0].id)
        results.append(deliver_one(store, client(), claimed[0], claimer, policy, environ))
    return results


def new_claimer(role: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{secrets.token_hex(2)}"


def make_client(policy: Policy, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(transport=transport, timeout=policy.timeout_s, follow_redirects=False)


def deliver_due(store: Store, job_ids: list[str] | None = None, *, settings: Config,
                transport: httpx.BaseTransport | None = None,
                environ: Mapping[str, str] | None = None,
                budget_s: float | None = None) -> list[TryResult]:
    """One synchronous round for short-lived commands: each due delivery (of
    `job_ids`, if given) gets one try now, none waits for a retry; what fails
    keeps its schedule for the next worker. `budget_s` stops new tries after it."""
    policy = Policy.from_settings(settings)
    deadline = None if budget_s is None else time.monotonic() + budget_s
    opened: list[httpx.Client] = []

    def client() -> httpx.Client:  # most cancelled jobs have no webhook: no client then
        if not opened:
            opened.append(make_client(policy, transport))
        return opened[0]

    try:
        return deliver_round(store, client, policy, new_claimer("once"),
                             os.environ if environ is None else environ,
                             keep_going=lambda: deadline is None or time.monotonic() < deadline,
                             job_ids=job_ids, once_each=True)
    finally:
        for each in opened:
            each.close()


class WebhookSender:
    """A daemon thread that delivers the outbox: it polls every `poll_s` (one
    indexed read), sleeps until the next due try or a `wake()`, and uses its
    own Store, since spool connections are not shared across threads here."""

    def __init__(self, settings: Config, *, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time, poll_s: float = 0.5,
                 environ: Mapping[str, str] | None = None,
                 notice: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.policy = Policy.from_settings(settings)
        self.transport, self.clock, self.poll_s = transport, clock, poll_s
        self.environ = os.environ if environ is None else environ
        self.notice = notice or (lambda _text: None)
        self.claimer = new_claimer("webhooks")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until: float | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._client: httpx.Client | None = None

    def start(self) -> WebhookSender:
        self._thread = threading.Thread(target=self._run, name="zmm-webhooks", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Look at the outbox now (a job just finished)."""
        self._wake.set()

    def run_once(self) -> float | None:
        """Deliver everything due (stopping early once closed); returns the seconds
        until the next try is due, or None when nothing is pending."""
        store = self._open()
        results = deliver_round(store, self._http, self.policy, self.claimer, self.environ,
                                keep_going=lambda: not self._stop.is_set())
        self._report(results)
        due = store.next_webhook_due()
        return None if due is None else max(0.0, parse_iso(due) - store.clock())

    def close(self, timeout: float = 5.0, *, drain: bool = False) -> bool:
        """Stop after the try in progress; with `drain`, first give each delivery
        due now one try, for up to `timeout`. Undelivered rows stay in the outbox
        for the next process. True when the thread ended within `timeout`."""
        if drain:
            self._drain_until = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            self._release()
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- internals -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                wait = self._guarded(self.run_once)
                self._wake.wait(self.poll_s if wait is None else max(0.01, min(self.poll_s, wait)))
            if self._drain_until is not None:
                self._guarded(self._drain)
        finally:
            self._release()

    def _drain(self) -> None:
        store = self._open()
        self._report(deliver_round(
            store, self._http, self.policy, self.claimer, self.environ, once_each=True,
            keep_going=lambda: time.monotonic() < (self._drain_until or 0.0)))

    def _guarded(self, step: Callable[[], float | None]) -> float | None:
        # The thread's boundary: a spool error (or a bug) must not end deliveries
        # for the rest of the worker's life, nor ever reach the worker loop.
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - reported, then the next poll tries again
            self.notice(f"webhooks: {one_line(exc, 200)}; trying again")
            return self.poll_s

    def _report(self, results: list[TryResult]) -> None:
        for result in results:
            if result.status == "failed" and result.recorded:
                self.notice(f"{result.job_id}: webhook {result.message}")

    def _open(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.spool_path, clock=self.clock,
                                busy_timeout_ms=self.settings.get("spool.busy_timeout_ms"),
                                assets_root=self.settings.assets_dir)
        return self._store

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = make_client(self.policy, self.transport)
        return self._client

    def _release(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._store is not None:
            self._store.close()
            self._store = None
