"""CLI start-up as a ratio to `python -c pass` from the same interpreter, in one
run, commands interleaved so machine noise hits them alike.

zmm's modules are byte-compiled first, as a wheel install or the first run of a
checkout leaves them: under PYTHONDONTWRITEBYTECODE a checkout would otherwise
recompile zmm on every start.

Usage: python bench/cli_bench.py [--runs 21]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "zmm generate --no-wait": [sys.executable, "-m", "zmm", "generate", "a fox", "--no-wait"],
    "zmm queue --json": [sys.executable, "-m", "zmm", "queue", "--json"],
    "zmm --help": [sys.executable, "-m", "zmm", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "zmm", quiet=1)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ZMM_HOME": home}
        for command in COMMANDS.values():  # warm caches and create the spool
            subprocess.run(command, env=env, capture_output=True, check=True)
        for _ in range(args.runs):
            for name, command in COMMANDS.items():
                start = time.perf_counter()
                subprocess.run(command, env=env, capture_output=True, check=True)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    print("| command | median ms | ratio to `python -c pass` |\n|---|---|---|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| `{name}` | {median * 1000:.0f} | {median / base:.1f}x |")


if __name__ == "__main__":
    main()
