"""Single key presses from the terminal, for full-screen views (`zmm top`):
cbreak mode (no line buffering, no echo, Ctrl-C still a signal) with termios
on POSIX, msvcrt on Windows. The terminal's settings are restored on leaving,
however the block ends. Without a terminal on stdin, waiting only waits.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

EOF = "\x04"  # what `wait` returns once the terminal has gone away (and Ctrl-D)


class Keys:
    """`with Keys(sys.stdin) as keys: keys.wait(1.0)` -> the keys pressed, or None."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.active = False
        self._saved: Any = None
        self._fd = -1

    def __enter__(self) -> Keys:
        if not bool(getattr(self.stream, "isatty", lambda: False)()):
            return self
        if sys.platform == "win32":
            self.active = True  # msvcrt reads the console directly; nothing to switch
            return self
        import termios
        import tty

        self._fd = self.stream.fileno()
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd, termios.TCSANOW)
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        self.active = False

    def wait(self, timeout: float) -> str | None:
        """Wait up to `timeout` seconds for keys; returns them as soon as one comes."""
        if not self.active:
            time.sleep(timeout)
            return None
        if sys.platform == "win32":
            return _wait_windows(timeout)
        import select

        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        data = os.read(self._fd, 64)
        return data.decode(errors="replace") if data else EOF


def _wait_windows(timeout: float) -> str | None:
    import msvcrt

    deadline = time.monotonic() + timeout
    while True:
        if msvcrt.kbhit():  # type: ignore[attr-defined]
            keys = ""
            while msvcrt.kbhit():  # type: ignore[attr-defined]
                keys += msvcrt.getwch()  # type: ignore[attr-defined]
            return keys
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(0.05, left))
