"""Drawing a `zmm top` frame: the plain text of every panel (what a pipe gets),
the rich drawing of the same frame, and the small formats they share."""

from __future__ import annotations

import io

from zmm.cli import render_top
from zmm.views.dashboard import BackendLine, FailureLine, Frame, QueuedLine, RunningLine, Throughput

GIB = 1024**3
AT = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def frame(**changes) -> Frame:
    values = dict(
        at=AT, spool="/home/me/.zmm/spool.db", paused=False, workers=2,
        backends=(BackendLine("gpu0", "http://127.0.0.1:8001", "up", 0, 24 * GIB, 6 * GIB,
                              "sdxl.safetensors", 1),
                  BackendLine("box", "http://box:8188", "draining", None, None, None, None, 0,
                              managed=True, restarts=2, last_error="connection refused")),
        running=(RunningLine("mmg-1", "HIGH", "sampling", 5, 20, 75.0, "gpu0", "sdxl.safetensors",
                             "a lighthouse at dusk"),),
        head=(QueuedLine(1, "mmg-2", "CRITICAL", 3725.0, "flux1-dev.safetensors", "a fox",
                         on_backend="box"),),
        queued=3, queued_by_priority={"CRITICAL": 1, "HIGH": 0, "MEDIUM": 2, "LOW": 0},
        throughput=Throughput(300, tuple((n, n % 2) for n in range(12)), 66, 6, 1, 12.25),
        failures=(FailureLine("mmg-0", 90.0, "CUDA out of memory", "gpu0"),),
    )
    values.update(changes)
    return Frame(**values)


def test_plain_frame_shows_every_panel_in_ascii():
    text = render_top.plain(frame())
    assert text.isascii() and "\x1b" not in text
    lines = text.splitlines()
    gpu0 = next(line for line in lines if line.strip().startswith("gpu0"))
    assert gpu0.split() == ["gpu0", "up", "1", "0", "[#########...]", "18.0/24.0", "GB",
                            "sdxl.safetensors"]
    box = next(line for line in lines if line.strip().startswith("box"))
    assert "draining (managed, 2 restarts)" in box and "remote" in box
    assert "connection refused" in box
    job = next(line for line in lines if "mmg-1" in line)
    assert job.split()[:6] == ["mmg-1", "sampling", "[###.........]", "5/20", "1m15s", "gpu0"]
    assert "queue: next 1 of 3 queued (CRITICAL 1, MEDIUM 2)" in lines
    queued = next(line for line in lines if "mmg-2" in line)
    assert queued.split() == ["1", "mmg-2", "CRITICAL", "1h02m", "flux1-dev.safetensors", "box",
                              "a", "fox"]
    assert ("last hour (5-minute bars, oldest first): 66 succeeded, 6 failed, 1 cancelled; "
            "median generation 12.2 s") in lines
    assert "  succeeded " + " ".join(f"{n:>4}" for n in range(12)) in lines
    assert "  failed    " + " ".join(f"{n % 2:>4}" for n in range(12)) in lines
    failure = next(line for line in lines if "mmg-0" in line)
    assert failure.split() == ["mmg-0", "1m30s", "ago", "gpu0", "CUDA", "out", "of", "memory"]
    assert lines[-1] == ("spool /home/me/.zmm/spool.db | queue claiming | 2 workers | "
                         "2027-01-15 08:00:00 UTC")


def test_plain_frame_says_what_is_empty_and_paused():
    text = render_top.plain(frame(running=(), head=(), failures=(), queued=0, paused=True,
                                  queued_by_priority=dict.fromkeys(["CRITICAL", "LOW"], 0),
                                  throughput=Throughput(300, ((0, 0),) * 12, 0, 0, 0, None,
                                                        partial=True)))
    for words in ("(nothing running)", "(the queue is empty)", "(no failures)",
                  "queue PAUSED", "at least 0 succeeded", "median generation -"):
        assert words in text


def test_the_rich_drawing_holds_the_same_values():
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render_top._rich_frame(frame()))
    text = out.getvalue()
    for words in ("gpu0", "█████████░░░", "18.0/24.0 GB", "draining (managed, 2 restarts)",
                  "mmg-1", "5/20", "mmg-2", "CUDA out of memory", "q quits",
                  "66 succeeded, 6 failed", "2027-01-15 08:00:00 UTC"):
        assert words in text, words


def test_formats():
    assert [render_top.duration(s) for s in (None, 0.4, 59, 60, 3599, 3600, 90061)] == [
        "-", "0s", "59s", "1m00s", "59m59s", "1h00m", "25h01m"]
    assert render_top.sparkline([0, 1, 4, 8]) == "▁▂▅█"
    assert render_top.sparkline([0, 0]) == "▁▁"
    assert render_top._cut("a  very\nlong text", 9) == "a very..."
