"""Down alerts: when a worker's ComfyUI has been unreachable for longer than
`comfyui.alert_after_s`, one `backend.down` alert (a stderr line, and a POST to
`alerts.webhook_url` queued in the webhook outbox, signed and retried like job
webhooks); `backend.up` once it answers again. Never repeated while it stays
down. The worker says when it reached or failed to reach the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zmm.store import Store
from zmm.timestamps import iso


class DownAlarm:
    def __init__(self, store: Store, url: str, *, webhook_url: str, after_s: float,
                 notice: Callable[[str], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store, self.url, self.webhook_url = store, url, webhook_url
        self.after_s, self.notice, self.monotonic = after_s, notice, monotonic
        self.down_since: float | None = None  # monotonic, when it first failed to answer
        self._down_at: str | None = None  # the same, as spool time, for the alert's body
        self.alerted = False  # a backend.down went out for this outage

    def unreachable(self, reason: str) -> None:
        """It did not answer: start the outage's clock, alert once past after_s."""
        now = self.monotonic()
        if self.down_since is None:
            self.down_since, self._down_at = now, iso(self.store.clock())
        down_s = now - self.down_since
        if self.alerted or down_s < self.after_s:
            return
        self.alerted = True
        self.notice(f"alert: ComfyUI at {self.url} has been unreachable for {down_s:.0f} s "
                    f"({reason})")
        self._send("backend.down", {"reason": reason, "down_s": round(down_s, 1)})

    def reachable(self) -> None:
        """It answered: the outage (if any) is over; backend.up if it was alerted."""
        if self.down_since is None:
            return
        down_s = self.monotonic() - self.down_since
        if self.alerted:
            self.notice(f"alert over: ComfyUI at {self.url} answers again after {down_s:.0f} s")
            self._send("backend.up", {"down_s": round(down_s, 1)})
        self.down_since = self._down_at = None
        self.alerted = False

    def _send(self, event: str, details: dict[str, object]) -> None:
        if self.webhook_url:
            self.store.add_alert(self.webhook_url, event, {
                "kind": "comfyui", "url": self.url, "down_since": self._down_at, **details})
