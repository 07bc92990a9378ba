"""Benchmark: `zmm cleanup` over 100,000 finished jobs' assets (a tiny PNG and a
tiny thumbnail each, 200,000 real files), as real `zmm` processes. Reports the
median wall time and peak RSS (the child's own ru_maxrss via os.wait4) of 3 runs
of a dry run and of a real run, as markdown rows.

    python bench/cleanup_bench.py [--jobs 100000] [--runs 3]

The spool is built once through `Store.enqueue`; moving 100,000 jobs through
claim/transition one by one would take minutes, so the setup finishes them with
one UPDATE (setup only; zmm itself writes SQL only in zmm/store).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zmm import assets, intake  # noqa: E402
from zmm.config import load  # noqa: E402
from zmm.store import Store  # noqa: E402

DAY = 86400.0


def tiny_image(kind: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (10, 20, 30)).save(buffer, kind)
    return buffer.getvalue()


PNG = tiny_image("PNG")
WEBP = tiny_image("WEBP")


def build_spool(home: Path, jobs: int) -> list[tuple[str, str]]:
    """A spool of `jobs` succeeded jobs finished 40 days ago; returns (png, thumb) names."""
    os.environ["ZMM_HOME"] = str(home)
    settings = load(home)
    past = time.time() - 40 * DAY
    with Store(settings.spool_path, clock=lambda: past) as store:
        for start in range(0, jobs, 1000):
            batch = {"prompt": f"bench {start}", "count": min(1000, jobs - start)}
            store.enqueue(intake.build(batch, settings))
        rows = store.conn.execute("SELECT id, created_at FROM jobs").fetchall()
        names = [(assets.relative_name(job_id, created, 0), job_id) for job_id, created in rows]
        with store.conn:  # setup only: finish every job at once (see the module docstring)
            store.conn.execute("BEGIN")
            store.conn.executemany(
                "UPDATE jobs SET status = 'succeeded', completed_at = created_at, phase = 'done', "
                "output_path = ?, outputs = json_array(?), thumbnail_path = ?, "
                "file_size_bytes = ? WHERE id = ?",
                [(png, png, png[:-4] + ".thumb.webp", len(PNG), job_id) for png, job_id in names])
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return [(png, png[:-4] + ".thumb.webp") for png, _ in names]


def write_files(root: Path, names: list[tuple[str, str]]) -> None:
    for folder in {str(Path(png).parent) for png, _ in names}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for png, thumb in names:
        (root / png).write_bytes(PNG)
        (root / thumb).write_bytes(WEBP)


def spawn(home: Path, *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one `zmm` process."""
    env = {**os.environ, "ZMM_HOME": str(home), "NO_COLOR": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "zmm", *args], cwd=ROOT, env=env,
                                   stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"zmm {' '.join(args)} exited {process.returncode}: {err.read()!r}")
        # ru_maxrss is KiB on Linux, bytes on macOS
        scale = 1 if sys.platform == "darwin" else 1024
        return wall, usage.ru_maxrss * scale / 2**20, out.read().decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zmm-cleanup-bench-") as scratch:
        template = Path(scratch) / "template"
        names = build_spool(template, options.jobs)
        results: dict[str, list[tuple[float, float]]] = {"dry": [], "real": []}
        summary = ""
        for run in range(options.runs):
            home = Path(scratch) / f"run-{run}"
            home.mkdir(mode=0o700)
            shutil.copy2(template / "spool.db", home / "spool.db")
            write_files(home / "assets", names)
            wall, rss, _ = spawn(home, "cleanup", "--dry-run", "--json")
            results["dry"].append((wall, rss))
            wall, rss, summary = spawn(home, "cleanup", "--yes")
            results["real"].append((wall, rss))
            left = sum(1 for _ in (home / "assets").rglob("*.png"))
            print(f"run {run + 1}: {summary}; {left} PNGs left", file=sys.stderr)
            shutil.rmtree(home)
    jobs = f"{options.jobs:,}"
    for key, label in (("dry", f"`zmm cleanup --dry-run --json`, {jobs} jobs"),
                       ("real", f"`zmm cleanup --yes`, {jobs} jobs, {2 * options.jobs:,} files")):
        wall = statistics.median(w for w, _ in results[key])
        rss = statistics.median(r for _, r in results[key])
        print(f"| {label} | {wall:.2f} s, peak RSS {rss:.0f} MiB | median of {options.runs} "
              f"runs, whole process incl. start-up |")


if __name__ == "__main__":
    main()
