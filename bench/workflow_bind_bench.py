"""`zmm generate --no-wait --workflow UI.json` against the same command with
the API file ComfyUI's page exported from it: the UI file is converted with
the node definitions the spool records (no server asked) and its options are
bound through its named inputs. Medians of --repeat runs of the real CLI in a
fresh $ZMM_HOME.

    python bench/workflow_bind_bench.py UI.json API.json OBJECT_INFO.json [--repeat 7]

The files come from a local ComfyUI (see docs/benchmarks.md). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ui", type=Path)
    parser.add_argument("api", type=Path)
    parser.add_argument("object_info", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ZMM_HOME": home}
        # One backend whose worker recorded its files and node definitions.
        (Path(home) / "config.toml").write_text('[comfyui]\nurl = "http://127.0.0.1:9"\n')
        from zmm.config import load
        from zmm.store import Store

        os.environ["ZMM_HOME"] = home
        defs = json.loads(args.object_info.read_text())
        graph = json.loads(args.api.read_text())
        from zmm import workflows

        files = workflows.needed_files(graph)
        store = Store(load().spool_path)
        try:
            store.record_backend_files("default", "http://127.0.0.1:9", files, defs)
        finally:
            store.close()
        times = {}
        for label, path in (("api", args.api), ("ui", args.ui)):
            runs = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "zmm", "generate", "a red cube",
                                       "--seed", "5", "--no-wait", "--workflow", str(path)],
                                      env=env, capture_output=True, text=True)
                runs.append(time.perf_counter() - start)
                if done.returncode != 0:
                    sys.exit(f"{label}: exit {done.returncode}: {done.stderr.strip()}")
            times[label] = statistics.median(runs)
        print(f"api file: {times['api'] * 1000:.0f} ms median; ui file: "
              f"{times['ui'] * 1000:.0f} ms median; ratio {times['ui'] / times['api']:.2f} "
              f"({args.repeat} runs each)")


if __name__ == "__main__":
    main()
