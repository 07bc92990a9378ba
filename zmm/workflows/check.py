"""`zmm workflow check`: an API graph against one server's node definitions
and model files, as a list of problems (one line each): node classes it does
not have, values outside an input's range or choices, model files it lacks.
Pure: the definitions and files come in as values.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from zmm.errors import InvalidInput
from zmm.workflows import FILE_INPUTS, inputs


def problems(graph: Mapping[str, Any], defs: Mapping[str, Any],
             files: Collection[str] | None) -> list[str]:
    """Each problem of `graph` on a server with `defs` (/object_info) and `files`
    ('folder/name'; None: not known, so files are not checked)."""
    found: list[str] = []
    for node_id, node in graph.items():
        kind = str(node.get("class_type", ""))
        if kind not in defs:
            found.append(f"node {node_id} ({kind}): the node class is not installed")
            continue
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list):
                continue  # a link
            folder = FILE_INPUTS.get((kind, name))
            if folder is not None and files is not None:
                if isinstance(value, str) and f"{folder}/{value}" not in files:
                    found.append(f"node {node_id} ({kind}) {name}: {value!r} is not in "
                                 f"models/{folder}/ on the server")
                continue
            item = inputs.describe(graph, name, [inputs.Slot(str(node_id), name)], "check", defs)
            if item.type not in ("INT", "FLOAT", "COMBO", "BOOLEAN"):
                continue
            if item.type == "COMBO" and not item.choices:
                continue  # choices the page fills in (remote lists): not checkable here
            try:
                inputs.typed(item, value, name)
            except InvalidInput:
                found.append(f"node {node_id} ({kind}) {name}: {value!r} is not "
                             f"{item.allowed()}")
    return found
