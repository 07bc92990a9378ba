"""`zmm serve-worker --all`: one child process per configured backend, each
`python -m zmm serve-worker --backend NAME` with its own worker lock, spool
connection, GPU and Ollama. The parent prefixes each child's output lines with
its backend's name (JSON log lines, `--log-format json`, pass through whole:
they carry it as `backend`), passes `--log-level`/`--log-format` on, and SIGINT
and SIGTERM to every child, waits for all of them, restarts none, and exits
with the worst child's exit code.

Children run in their own process group, so a Ctrl-C at the terminal reaches
each of them once (through the parent), not twice (which would mean "stop now").
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from zmm.config.fleet import Backend


@dataclass
class Child:
    backend: Backend
    process: subprocess.Popen[str]
    pumps: list[threading.Thread] = field(default_factory=list)


def child_command(backend: Backend, *, once: bool, max_jobs: int | None,
                  logging: tuple[str, str] | None = None) -> list[str]:
    command = [sys.executable, "-m", "zmm", "serve-worker", "--backend", backend.name,
               "--no-progress"]
    if once:
        command.append("--once")
    if max_jobs is not None:
        command += ["--max-jobs", str(max_jobs)]
    if logging is not None:
        command += ["--log-level", logging[0], "--log-format", logging[1]]
    return command


def serve_all(backends: list[Backend], *, once: bool, max_jobs: int | None,
              say: Callable[[str], None], out: IO[str] | None = None,
              err: IO[str] | None = None, logging: tuple[str, str] | None = None) -> int:
    """Run a worker process per backend until every one has exited; the worst
    exit code (a child ended by signal N counts as 128 + N). `logging`: the
    children's (level, format) for log lines instead of plain lines."""
    out, err = out or sys.stdout, err or sys.stderr
    whole_json = logging is not None and logging[1] == "json"
    children: list[Child] = []
    received: list[int] = []
    write_lock = threading.Lock()
    with _forwarding(children, received):
        for backend in backends:
            child = _spawn(backend, child_command(backend, once=once, max_jobs=max_jobs,
                                                  logging=logging))
            children.append(child)
            for number in received:  # a signal came while the others were starting
                _send(child, number)
            for stream, sink in ((child.process.stdout, out), (child.process.stderr, err)):
                pump = threading.Thread(target=_pump, args=(stream, sink, backend.name,
                                                            write_lock, whole_json),
                                        name=f"zmm-{backend.name}-output", daemon=True)
                pump.start()
                child.pumps.append(pump)
        say(f"serving {len(children)} backend(s): "
            + ", ".join(f"{c.backend.name} (pid {c.process.pid})" for c in children))
        codes = [_wait(child, say) for child in children]
    return max(codes, default=0)


def _spawn(backend: Backend, command: list[str]) -> Child:
    options: dict[str, Any] = {}
    if sys.platform == "win32":  # pragma: no cover - Windows only
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["process_group"] = 0
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, bufsize=1, **options)
    return Child(backend, process)


def _pump(stream: IO[str] | None, sink: IO[str], name: str, lock: threading.Lock,
          whole_json: bool = False) -> None:
    if stream is None:
        return
    for line in stream:
        line = line if line.endswith("\n") else line + "\n"
        if not (whole_json and _json_object(line)):
            line = f"[{name}] {line}"
        with lock:
            sink.write(line)
            sink.flush()


def _json_object(line: str) -> bool:
    """A JSON log line (kept whole so that it stays one JSON object a line)."""
    if not line.startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _wait(child: Child, say: Callable[[str], None]) -> int:
    code = child.process.wait()
    for pump in child.pumps:
        pump.join(timeout=5)
    code = 128 - code if code < 0 else code  # -N: ended by signal N
    if code:
        say(f"[{child.backend.name}] worker exited with code {code}")
    return code


def _send(child: Child, number: int) -> None:
    if child.process.poll() is not None:
        return
    if sys.platform == "win32":  # pragma: no cover - Windows only
        child.process.send_signal(signal.CTRL_BREAK_EVENT)
    else:
        child.process.send_signal(number)


@contextmanager
def _forwarding(children: list[Child], received: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM go to every child (each decides what they mean: the
    first SIGINT finishes the running job, SIGTERM or a second SIGINT stops now)."""
    def forward(number: int, _frame: Any) -> None:
        received.append(number)
        for child in list(children):
            _send(child, number)

    previous = {number: signal.signal(number, forward)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
