"""UI-format conversion against ComfyUI's own page: run zmm's converter over a
folder of UI workflows and compare each result, node for node (class_type and
inputs; `_meta` is ignored), with the API graph the page exported for the same
file. Also times the conversion of the largest file (median of --repeat runs).

    python bench/workflow_convert_bench.py CORPUS_DIR EXPECTED_DIR OBJECT_INFO.json

CORPUS_DIR/NAME.json pairs with EXPECTED_DIR/NAME.api.json (or NAME.json). Nothing is downloaded;
the files come from a local ComfyUI (see docs/benchmarks.md). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from zmm.errors import ZmmError
from zmm.workflows import ui_format


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    found = []
    for node_id in sorted(set(got) | set(want)):
        if node_id not in got:
            found.append(f"node {node_id} ({want[node_id].get('class_type')}) missing")
        elif node_id not in want:
            found.append(f"node {node_id} ({got[node_id].get('class_type')}) extra")
        elif got[node_id].get("class_type") != want[node_id].get("class_type"):
            found.append(f"node {node_id} class {got[node_id].get('class_type')} "
                         f"!= {want[node_id].get('class_type')}")
        else:
            mine, theirs = got[node_id].get("inputs", {}), want[node_id].get("inputs", {})
            for name in sorted(set(mine) | set(theirs)):
                if mine.get(name, "<absent>") != theirs.get(name, "<absent>"):
                    found.append(f"node {node_id} ({want[node_id]['class_type']}) input {name}: "
                                 f"{json.dumps(mine.get(name, '<absent>'))[:80]} != "
                                 f"{json.dumps(theirs.get(name, '<absent>'))[:80]}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("expected", type=Path)
    parser.add_argument("object_info", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    defs = json.loads(args.object_info.read_text())
    total, matched, largest = 0, 0, None
    for source in sorted(args.corpus.glob("*.json")):
        reference = next((path for path in (args.expected / f"{source.stem}.api.json",
                                             args.expected / source.name) if path.is_file()), None)
        if reference is None:
            continue
        total += 1
        workflow = json.loads(source.read_text())
        if largest is None or source.stat().st_size > largest.stat().st_size:
            largest = source
        want = json.loads(reference.read_text())
        want = want.get("output", want) if isinstance(want, dict) else want
        try:
            got = ui_format.to_api(workflow, defs, choose=lambda options: options[0])
        except ZmmError as exc:
            print(f"{source.name}: error: {exc.message}")
            continue
        found = differences(got, want)
        if found:
            print(f"{source.name}: {len(found)} difference(s)")
            for line in found[:10]:
                print(f"  {line}")
        else:
            matched += 1
    if not total:
        print("no pairs found", file=sys.stderr)
        return 1
    print(f"exact matches: {matched}/{total} ({100 * matched / total:.1f}%)")
    if largest is not None:
        workflow = json.loads(largest.read_text())
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            try:
                ui_format.to_api(workflow, defs)
            except ZmmError:
                break
            times.append(time.perf_counter() - start)
        if times:
            print(f"largest: {largest.name} ({largest.stat().st_size} bytes): "
                  f"median {statistics.median(times) * 1000:.2f} ms over {len(times)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
