"""`zmm top`: one plain frame with --once, plain refreshing frames through a pipe,
and the full-screen view under a real pseudo-terminal, left with q, Ctrl-C or
SIGTERM with the terminal restored and no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT, wait_until, zmm_process
from zmm import intake
from zmm.store import Store
from zmm.store.backends import BackendReport

GIB = 1024**3
ALT_SCREEN_ON, ALT_SCREEN_OFF = b"\x1b[?1049h", b"\x1b[?1049l"


@pytest.fixture
def spool_with_a_backend(settings):
    with Store(settings.spool_path) as store:
        store.report_backend(BackendReport("gpu-alpha", "http://127.0.0.1:8001", 0, "w-alpha",
                                           "up", loaded_model="sdxl.safetensors",
                                           vram_total_bytes=24 * GIB, vram_free_bytes=6 * GIB))
        store.register_worker("w-alpha", "http://127.0.0.1:8001", "busy")
        store.enqueue(intake.build({"prompt": "a queued lighthouse"}, settings))
    return settings


def test_once_prints_one_plain_frame(cli, spool_with_a_backend):
    result = cli("top", "--once")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out and "\f" not in out  # not a terminal: plain text, one frame
    assert "gpu-alpha" in out and "[#########...]" in out and "18.0/24.0 GB" in out
    assert "a queued lighthouse" in out and "of 1 queued" in out
    assert f"spool {spool_with_a_backend.spool_path}" in out and "queue claiming" in out
    assert result.stderr == ""


def test_once_says_when_the_queue_is_paused(cli, spool_with_a_backend):
    assert cli("queue", "pause").exit_code == 0
    assert "queue PAUSED" in cli("top", "--once").stdout


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "3601", ""])
def test_a_bad_interval_is_exit_2_naming_the_option(cli, settings, value):
    result = cli("top", "--interval", value, "--once")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: interval: a number of seconds from 0.1 to 3600")
    assert not settings.spool_path.exists()  # refused before anything was opened


def read_until(stream, done, timeout: float = 20.0) -> str:
    """Text from a pipe, pumped on a thread, until `done(text)` or the deadline."""
    chunks: list[str] = []

    def pump() -> None:
        while chunk := stream.read(1):
            chunks.append(chunk)

    threading.Thread(target=pump, daemon=True).start()
    wait_until(lambda: done("".join(chunks)), timeout=timeout,
               message="frames from zmm top")
    return "".join(chunks)


@pytest.mark.slow
def test_piped_frames_refresh_until_ctrl_c(spool_with_a_backend):
    process = zmm_process("top", "--interval", "0.2", stdin=subprocess.DEVNULL)
    try:
        text = read_until(process.stdout, lambda text: text.count("\f\n") >= 2)
        frames = text.split("\f\n")
        assert all("gpu-alpha" in frame and "queue claiming" in frame for frame in frames[:2])
        assert "\x1b" not in text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_piped_frames_stop_quietly_when_the_reader_goes(spool_with_a_backend):
    process = zmm_process("top", "--interval", "0.1", stdin=subprocess.DEVNULL)
    try:
        process.stdout.readline()
        process.stdout.close()
        assert process.wait(timeout=20) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()


def _take_terminal() -> None:  # in the child, after setsid: the pty becomes its terminal
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`zmm top` on the slave side of a new pseudo-terminal, 120 x 40."""

    def __init__(self) -> None:
        import fcntl
        import struct
        import termios

        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.output = b""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zmm", "top", "--interval", "0.3"], cwd=ROOT,
            env={**os.environ, "TERM": "xterm-256color"}, stdin=self.slave, stdout=self.slave,
            stderr=self.slave, start_new_session=True, preexec_fn=_take_terminal)

    def read_until(self, wanted: bytes, timeout: float = 20.0) -> None:
        import select

        deadline = time.monotonic() + timeout
        while wanted not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted!r} on the screen; got {self.output[-500:]!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                self.output += os.read(self.master, 65536)

    def drain(self) -> None:
        import select

        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the child has closed its side
                return
            if not chunk:
                return
            self.output += chunk

    def exit_code(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "zmm top did not exit"
            self.drain()
            time.sleep(0.02)
        self.drain()
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
@pytest.mark.parametrize("leave", ["q", "ctrl-c", "sigterm"])
def test_full_screen_view_quits_and_restores_the_terminal(spool_with_a_backend, leave):
    import termios

    terminal = Terminal()
    try:
        terminal.read_until(b"gpu-alpha")
        assert ALT_SCREEN_ON in terminal.output
        # The view reads single keys: no echo, no line editing while it runs.
        during = termios.tcgetattr(terminal.slave)
        assert not during[3] & (termios.ECHO | termios.ICANON)
        if leave == "q":
            os.write(terminal.master, b"q")
        elif leave == "ctrl-c":
            os.write(terminal.master, b"\x03")  # the terminal turns it into SIGINT
        else:
            terminal.process.send_signal(signal.SIGTERM)
        assert terminal.exit_code() == 0
        assert terminal.output.rfind(ALT_SCREEN_OFF) > terminal.output.rfind(ALT_SCREEN_ON)
        assert b"Traceback" not in terminal.output
        assert termios.tcgetattr(terminal.slave) == terminal.before
    finally:
        terminal.close()


@pytest.mark.slow
def test_a_piped_frame_imports_no_heavy_library(spool_with_a_backend):
    from tests.cli.test_import_weight import HEAVY, imported_modules

    modules = imported_modules(["top", "--once"], spool_with_a_backend.home)
    assert "zmm.views.dashboard" in modules  # the check itself works
    assert sorted(name for name in modules if name.split(".")[0] in HEAVY) == []
