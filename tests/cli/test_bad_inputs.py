"""Inputs found by breaking zmm on purpose, one row each: the exit code, one
`error:` line, no traceback, and nothing written (no job in the spool, no file
under $ZMM_HOME but the spool). Process-level cases (a FIFO, /dev/zero, a full
disk) run real `zmm` processes with a timeout and a memory limit."""

from __future__ import annotations

import os
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.cli.test_cli import job_count
from tests.conftest import closed_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_comfyui(home, monkeypatch):
    monkeypatch.setenv("ZMM_COMFYUI_URL", closed_url())
    monkeypatch.setenv("ZMM_OLLAMA_URL", closed_url())


def _png_with_itxt(body: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"iTXt", body) + chunk(b"IEND", b"")


@pytest.fixture
def files(tmp_path):
    """name -> path of the hostile files the rows use."""
    made = {"dir": tmp_path, "missing": tmp_path / "nope.png"}

    def write(name: str, data: bytes | str) -> None:
        path = tmp_path / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        made[name.replace(".", "_")] = path

    write("deep.jsonl", "[" * 100_000 + "\n")
    write("deep_obj.jsonl", '{"prompt": "x", "set": ' + "[" * 100_000 + "\n")
    write("digits.jsonl", '{"prompt": "x", "seed": ' + "9" * 5000 + "}\n")
    write("prompt5.jsonl", '{"prompt": 5}\n')
    write("quote.csv", 'prompt,steps\n"never closed,5\nsecond,6\n')
    write("many.jsonl", '{"prompt": "x"}\n' * 10_001)
    write("deep.json", "[" * 100_000)
    write("cut.png", _png_with_itxt(b"zmm\x00"))  # the iTXt chunk ends after its key
    write("init.jsonl", '{"prompt": "x", "init_image": "/dev/zero"}\n')
    write("empty.toml", "")
    return made


# (id, argv after `zmm`, expected exit code, text the error line holds)
ROWS = [
    ("init-image device", ["generate", "x", "--init-image", "/dev/zero"], 2, "init-image: a regular file"),
    ("init-image dir", ["generate", "x", "--init-image", "{dir}"], 2, "is a directory"),
    ("init-image missing", ["generate", "x", "--init-image", "{missing}"], 3, "init-image: no such file"),
    ("from device", ["generate", "--from", "/dev/zero"], 2, "from: a regular file of at most 16.0 MB"),
    ("from missing", ["generate", "--from", "{missing}"], 3, "from: no such file"),
    ("from-image device", ["generate", "--from-image", "/dev/zero"], 2, "from-image: a regular file"),
    ("from-image missing", ["generate", "--from-image", "{missing}"], 3, "from-image: no such file"),
    ("from-image cut chunk", ["generate", "--from-image", "{cut_png}"], 2, "is not a PNG or JPEG"),
    ("workflow device", ["generate", "x", "--workflow", "/dev/zero"], 2, "workflow: a regular file"),
    ("workflow dir", ["generate", "x", "--workflow", "{dir}"], 2, "is a directory"),
    ("workflow deep", ["generate", "x", "--workflow", "{deep_json}"], 2, "nested hundreds deep"),
    ("from init_image device", ["generate", "--from", "{init_jsonl}"], 2, "init-image: a regular file"),
    ("from deep", ["generate", "--from", "{deep_jsonl}"], 2, "line 1: a JSON object"),
    ("from deep value", ["generate", "--from", "{deep_obj_jsonl}"], 2, "line 1: a JSON object"),
    ("from 5000 digits", ["generate", "--from", "{digits_jsonl}"], 2, "at most 40 digits"),
    ("from prompt 5", ["generate", "--from", "{prompt5_jsonl}"], 2, "prompt: text"),
    ("from open quote", ["generate", "--from", "{quote_csv}"], 2, "a quote left open"),
    ("from too many lines", ["generate", "--from", "{many_jsonl}"], 2, "at most 10,000 lines"),
    ("set steps -5", ["generate", "x", "--set", "3.steps=-5"], 2, "steps must be an integer from 1 to 150"),
    ("set steps abc", ["generate", "x", "--set", "3.steps=abc"], 2, "steps must be an integer"),
    ("timeout -1", ["generate", "x", "--timeout", "-1"], 2, "timeout: seconds"),
    ("timeout nan", ["generate", "x", "--timeout", "nan"], 2, "timeout: seconds"),
    ("timeout inf", ["generate", "x", "--timeout", "inf"], 2, "timeout: seconds"),
    ("wait timeout nan", ["wait", "mmg-x", "--timeout", "nan"], 2, "timeout: seconds"),
    ("max-run-s 0", ["generate", "x", "--max-run-s", "0"], 2, "max-run-s: seconds, greater than 0"),
    ("max-run-s past a week", ["generate", "x", "--max-run-s", "604801"], 2,
     "max-run-s: seconds, greater than 0 and at most 604800 (a week)"),
    ("max-run-s word", ["generate", "x", "--max-run-s", "soon"], 2, "max-run-s: seconds"),
    ("steps empty", ["generate", "x", "--steps", ""], 2, "steps: a value"),
    ("seed empty", ["generate", "x", "--seed", ""], 2, "seed: a value"),
    ("steps arabic digit", ["generate", "x", "--steps", "\u0662"], 2, "steps: an integer"),
    ("cfg arabic digit", ["generate", "x", "--cfg", "\u0663"], 2, "cfg: a number"),
    ("size arabic digits", ["generate", "x", "--size", "\u0665\u0661\u0662x512"], 2, "size:"),
    ("requester newline", ["generate", "x", "--requester", "a\nb"], 2, "requester: one line"),
    ("requester bidi", ["generate", "x", "--requester", "a\u202eb"], 2, "requester: one line"),
    ("history since huge", ["history", "--since", "99999999999d"], 2, "at most 100 years"),
    ("history offset huge", ["history", "--offset", "99999999999999999999"], 2, "--offset"),
    ("stats since huge", ["stats", "--since", "99999999999d"], 2, "at most 100 years"),
    ("cleanup older huge", ["cleanup", "--older-than", "99999999999d", "--dry-run"], 2,
     "at most 100 years"),
    ("name with a path", ["generate", "x", "--name", "a/b"], 2, "name: one file name"),
    ("name for a count", ["generate", "x", "--name", "a", "--count", "2"], 2, "name: names one"),
    ("out with no-wait", ["generate", "x", "--out", "never-made"], 2, "out: not with --no-wait"),
    ("key newline", ["generate", "x", "--key", "a\nb"], 2, "key: one line"),
    ("wait nothing", ["wait"], 2, "batch: give job ids or --batch ID"),
    ("wait ids and batch", ["wait", "mmg-x", "--batch", "b"], 2, "batch: give job ids or"),
    ("cancel ids and batch", ["queue", "cancel", "mmg-x", "--batch", "b"], 2, "batch: give"),
    ("history since 1m", ["history", "--since", "1m"], 2, "since: 1m is ambiguous"),
    ("stats since 5m", ["stats", "--since", "5m"], 2, "write 5min for minutes or 5mo"),
    ("cleanup older 1m", ["cleanup", "--older-than", "1m", "--dry-run"], 2,
     "older-than: 1m is ambiguous"),
    ("comfyui bad ipv6", ["serve-worker", "--once", "--comfyui", "http://[::1"], 2,
     "comfyui.url: an http:// or https:// URL"),
]


@pytest.mark.parametrize("argv,code,text", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_input_is_one_line_its_exit_code_and_nothing_written(cli, home, files, argv, code, text):
    argv = [arg.format(**files) for arg in argv]
    if argv[0] == "generate":
        argv.insert(1, "--no-wait")
    result = cli(*argv)
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) <= 2  # the error, and perhaps a hint
    assert job_count_or_zero(home) == 0
    written = {path.name for path in home.rglob("*")} - {"spool.db", "spool.db-wal", "spool.db-shm"}
    assert not written, written


def job_count_or_zero(home: Path) -> int:
    from zmm.config import load

    settings = load(home)
    return job_count(settings) if settings.spool_path.exists() else 0


# config.toml values (and ZMM_ variables) are checked when loaded, by every command
CONFIG_ROWS = [
    ("[comfyui]\ntimeout_s = nan\n", "config comfyui.timeout_s"),
    ("[worker]\nlease_s = 1e308\n", "config worker.lease_s"),
    ("[worker]\nlease_s = -1\n", "config worker.lease_s"),
    ("[comfyui]\nhang_s = 0\n", "config comfyui.hang_s"),
    ("[worker]\npoll_s = nan\n", "config worker.poll_s"),
    ("[stability]\nurl = \"http://[::1\"\n", "config stability.url"),
    ("x = " + "[" * 5000 + "]" * 5000 + "\n", "config"),
]


@pytest.mark.parametrize("toml,field", CONFIG_ROWS,
                         ids=[row[1] + str(i) for i, row in enumerate(CONFIG_ROWS)])
def test_bad_config_is_refused_when_loaded(cli, home, monkeypatch, toml, field):
    if field.endswith(".url"):  # the file's value, not the tests' closed-port variable
        section = field.split()[1].partition(".")[0]
        monkeypatch.delenv(f"ZMM_{section.upper()}_URL", raising=False)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(toml)
    result = cli("queue")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"error: {field}") and "Traceback" not in result.stderr
    assert not (home / "spool.db").exists()


def test_an_unreadable_home_is_exit_7_naming_it(cli, home, monkeypatch):
    """(As root, permissions do not apply: the OS's answer is simulated at os.stat.)"""
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path).startswith(str(home)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    result = cli("queue")
    assert result.exit_code == 7, result.stderr
    assert result.stderr.startswith(f"error: $ZMM_HOME {home} cannot be read (Permission denied)")


# -- real processes: bounded memory, no hang ------------------------------------

def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GB of address space


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zmm", *args], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=_limited)


@pytest.mark.parametrize("option", ["--init-image", "--from", "--from-image"])
def test_a_fifo_or_dev_zero_ends_at_once_in_bounded_memory(home, tmp_path, option):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    base = ["generate", "--no-wait"] + (["x"] if option == "--init-image" else [])
    for target, kind in ((str(fifo), "a pipe (FIFO)"), ("/dev/zero", "a device")):
        done = _run(*base, option, target, timeout=30)  # reading either would never end
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and kind in done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (home / "spool.db").exists()


# -- a full disk, and a spool that cannot be written -------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs (root only); skipped where mounting is not allowed."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {made.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _queue_one(home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "zmm", "generate", "x", "--no-wait"], cwd=ROOT,
                          env={**os.environ, "ZMM_HOME": str(home)}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_on_a_full_disk_reads_work_and_writes_say_the_disk_is_full(small_fs, monkeypatch):
    home = small_fs / "home"
    monkeypatch.setenv("ZMM_HOME", str(home))
    _queue_one(home)
    with open(small_fs / "filler", "wb") as filler:
        with pytest.raises(OSError):
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
    for command in (["queue"], ["history"], ["stats"], ["cleanup", "--dry-run"], ["doctor"]):
        done = _run(*command)
        assert "Traceback" not in done.stderr, done.stderr
        if command == ["doctor"]:
            assert "ok    spool" in done.stdout, done.stdout
        else:
            assert done.returncode == 0, (command, done.stderr)
    done = _run("generate", "y", "--no-wait")
    assert done.returncode == 7
    assert done.stderr.startswith(f"error: the disk holding the spool at {home / 'spool.db'} is full")


def test_a_read_only_spool_still_answers_reading_commands(small_fs, monkeypatch):
    home = small_fs / "home"
    monkeypatch.setenv("ZMM_HOME", str(home))
    _queue_one(home)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    for command in (["queue"], ["history"], ["stats"], ["cleanup", "--dry-run"]):
        done = _run(*command)
        assert done.returncode == 0, (command, done.stderr)
    assert "x" in _run("history").stdout
    done = _run("generate", "y", "--no-wait")
    assert done.returncode == 7 and "Traceback" not in done.stderr
