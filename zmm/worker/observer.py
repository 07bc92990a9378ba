"""What a worker tells whoever shows it (zmm.cli.render's WorkerView, an inline
`generate`'s runner): waits for ComfyUI, connections, job changes and finishes,
notices. A protocol, and the observer that shows nothing; no rich here.
"""

from __future__ import annotations

from typing import Any, Protocol


class Observer(Protocol):
    def waiting(self, url: str, reason: str, retry_in: float) -> None: ...
    def connected(self, url: str) -> None: ...
    def job_changed(self, inflight: Any) -> None: ...
    def job_finished(self, job: Any) -> None: ...
    def notice(self, text: str) -> None: ...


class QuietObserver:
    """Shows nothing; subclass it to hear only some of what a worker says."""

    def waiting(self, url: str, reason: str, retry_in: float) -> None:
        pass

    def connected(self, url: str) -> None:
        pass

    def job_changed(self, inflight: Any) -> None:
        pass

    def job_finished(self, job: Any) -> None:
        pass

    def notice(self, text: str) -> None:
        pass
