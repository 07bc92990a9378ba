"""What this worker's ComfyUI server can run: its model files, read from
`GET /models/<folder>` when the worker connects, every `worker.files_refresh_s`
and after a missing-file failure, recorded in the spool (the backends table)
and handed to the claim as a Route, so the worker only takes jobs whose every
needed file its server has. The server's node definitions (`/object_info`)
are read and recorded at the same times: a job's needs name its graph's node
classes too ('nodes/CLASS'), so the claim also skips jobs whose nodes the
server lacks. The worker's one copy of the files: the GraphBuilder checks
graphs against it (`by_folder`) and keeps none of its own. Also tells a
missing-file rejection (zmm's own pre-check, or ComfyUI's 400
value_not_in_list on a file input) from the others: that job goes back to the
queue for a backend that has the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

from zmm import workflows
from zmm.backends.comfy import ComfyClient
from zmm.errors import ComfyServerError, ComfyUnavailable, ModelFileMissing, WorkflowRejected
from zmm.jsontext import compact
from zmm.outcome import Outcome, OutcomeKind
from zmm.store import Job, Route, Store

# The folders zmm's graphs load files from (workflows.FILE_INPUTS), and `clip`,
# the older name of text_encoders, whose files CLIP loaders offer too.
FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "clip", "vae", "loras",
           "upscale_models")
_SAME_AS = {"clip": "text_encoders"}


class Capability:
    def __init__(self, store: Store, client: ComfyClient, *, name: str, refresh_s: float,
                 notice: Callable[[str], None], monotonic: Callable[[], float]) -> None:
        self.store, self.client, self.name = store, client, name
        self.refresh_s, self.notice, self.monotonic = refresh_s, notice, monotonic
        self.files: list[str] | None = None  # None: the server has not answered yet
        self._defs: dict[str, Any] | None = None  # its node definitions, as last read
        self.route: Route | None = None  # what the claim takes; None: claim nothing
        self._next_refresh = math.inf

    @property
    def known(self) -> bool:
        return self.route is not None

    def refresh(self) -> None:
        """Read the server's files and record them. ComfyUnavailable propagates
        (the worker reconnects); a server error keeps the last list until the
        next refresh."""
        self._next_refresh = self.monotonic() + self.refresh_s
        try:
            files = self._read()
        except ComfyServerError as exc:
            self.notice(f"could not list ComfyUI's model files: {exc.message}")
            return
        try:
            defs: dict[str, Any] | None = self.client.object_info()
        except ComfyServerError as exc:
            self.notice(f"could not read ComfyUI's node definitions: {exc.message}")
            defs = None
        self._defs = defs
        self._keep(files, defs_read=True)

    def by_folder(self, *, fresh: Collection[str] = ()) -> dict[str, list[str]]:
        """The server's files as folder -> names, for checking a graph; the
        `fresh` folders (all, when nothing was read yet) are read again first,
        and a server error propagates (the job cannot be checked)."""
        if self.files is None:
            self._keep(self._read())
        elif fresh:
            stored = {_SAME_AS.get(folder, folder) for folder in fresh}
            kept = [item for item in self.files if item.partition("/")[0] not in stored]
            self._keep(sorted({*kept, *self._read(stored)}))
        listed: dict[str, list[str]] = {folder: [] for folder in FOLDERS if folder not in _SAME_AS}
        for item in self.files or []:
            folder, _, name = item.partition("/")
            listed.setdefault(folder, []).append(name)
        return listed

    def _keep(self, files: list[str], *, defs_read: bool = False) -> None:
        """The files as the claims' route and the spool's row (and the node
        definitions, when they were just read)."""
        self.files = files
        self.route = Route.of(self.name, files + node_needs(self._defs or {}))
        self.store.record_backend_files(self.name, self.client.base_url, files,
                                        self._defs if defs_read else None)

    def maybe_refresh(self) -> None:
        """The timer: refresh once `worker.files_refresh_s` has passed."""
        if self.monotonic() >= self._next_refresh:
            self.refresh()

    def forget(self) -> None:
        """The connection is gone: claim nothing until the server answers again."""
        self.route = None
        self._next_refresh = math.inf

    def _read(self, only: Collection[str] | None = None) -> list[str]:
        """The server's files as 'folder/name' (of the `only` folders, if given)."""
        found: set[str] = set()
        for folder in FOLDERS:
            stored = _SAME_AS.get(folder, folder)
            if only is None or stored in only:
                found.update(f"{stored}/{name}" for name in self.client.model_files(folder))
        return sorted(found)

    # -- a missing file ------------------------------------------------------------

    def after_rejection(self, job: Job, exc: WorkflowRejected, graph: dict[str, Any],
                        builder: Any) -> Outcome | None:
        """For a rejection because the server lacks a model file: refresh the
        list and return the outcome that puts the job back in the queue without
        using an attempt (recording what its graph needs). None for any other
        rejection, and for a file the refreshed list still has (the server
        contradicts itself: fail as for any rejection)."""
        missing = missing_file(exc, graph)
        if missing is None:
            return None
        folder, name = missing
        builder.forget()  # every graph is checked against the refreshed list afresh
        try:
            self.refresh()
        except ComfyUnavailable:
            self.forget()
        if self.files is not None and f"{folder}/{name}" in self.files:
            return None
        word = workflows.FOLDER_WORDS.get(folder, folder)
        message = (f"backend {self.name} has no {word} {name!r}: its file list is refreshed "
                   "and the job waits for a backend that has it (no attempt used)")
        self.notice(f"{job.id}: {message}")
        return Outcome(OutcomeKind.REQUEUE, message, {"needs": compact(workflows.needed_files(graph))},
                       consume_attempt=False)


def node_needs(defs: dict[str, Any]) -> list[str]:
    """A server's node classes as the 'nodes/CLASS' entries of a route."""
    return [f"{workflows.NODE_NEEDS}/{name}" for name in defs]


def missing_file(exc: WorkflowRejected, graph: dict[str, Any]) -> tuple[str, str] | None:
    """(folder, name) of the model file a rejection says the server lacks: zmm's
    pre-check, or a 400 whose every error is value_not_in_list on a file input
    of the graph. None for anything else (an unknown node, a bad value)."""
    if isinstance(exc, ModelFileMissing):
        return exc.folder, exc.name
    body = getattr(exc, "body", None)
    node_errors = body.get("node_errors") if isinstance(body, dict) else None
    if not isinstance(node_errors, dict) or not node_errors:
        return None
    found = []
    for node_id, info in node_errors.items():
        node = graph.get(str(node_id))
        errors = info.get("errors") if isinstance(info, dict) else None
        if not isinstance(node, dict) or not isinstance(errors, list) or not errors:
            return None
        for error in errors:
            if not isinstance(error, dict) or error.get("type") != "value_not_in_list":
                return None
            input_name = (error.get("extra_info") or {}).get("input_name")
            folder = workflows.FILE_INPUTS.get((str(node.get("class_type", "")), str(input_name)))
            value = (node.get("inputs") or {}).get(input_name)
            if folder is None or not isinstance(value, str):
                return None
            found.append((folder, value))
    return found[0]
