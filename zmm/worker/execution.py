"""One job's life on ComfyUI: building its graph, submitting it safely, and
turning ComfyUI's verdict into the job's outcome (saved files or an error).

`Inflight` is the worker's record of a submitted job; the `Outcome` (zmm.outcome)
is what the worker then writes to the spool. Nothing here loops or sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from zmm import assets, workflows
from zmm.assets import inputs, metadata_for
from zmm.assets.checks import check_image
from zmm.backends.comfy import ComfyClient, HistoryEntry, describe_node_errors
from zmm.errors import ComfyServerError, ComfyUnavailable, WorkflowRejected, ZmmError
from zmm.outcome import Outcome, OutcomeKind, save_images
from zmm.store import Job
from zmm.workflows import graph_parts

# ComfyUI node classes -> the phase a person would call it.
PHASES = {
    "CheckpointLoaderSimple": "loading model", "CheckpointLoader": "loading model",
    "UNETLoader": "loading model", "CLIPTextEncode": "encoding prompt",
    "KSampler": "sampling", "KSamplerAdvanced": "sampling", "SamplerCustom": "sampling",
    "VAEDecode": "decoding", "SaveImage": "saving", "LoraLoader": "loading LoRA",
    "LoadImage": "loading init image", "VAEEncode": "encoding image",
    "LatentUpscaleBy": "upscaling", "ImageUpscaleWithModel": "upscaling",
    "UpscaleModelLoader": "loading upscale model", "ImageScale": "resizing",
}


@dataclass
class Inflight:
    job: Job
    prompt_id: str
    graph: dict[str, Any]
    submitted: float
    started: float | None = None  # monotonic time of execution_start
    last_event: float = 0.0
    error: dict[str, Any] | None = None
    interrupted: bool = False
    stop_reason: str | None = None  # why zmm interrupted it: cancel | silence | signal |
    # preempt | max-run
    max_run_s: float | None = None  # the run-time limit it went past (stop_reason max-run)
    bad_answers: int = 0  # ComfyUI's unreadable answers about it in a row
    attached: bool = True  # False after a reconnect: its events go to an old client id
    phase: str = "submitted"
    progress: tuple[int, int, str] | None = None
    flushed_progress: tuple[str, tuple[int, int, str] | None] | None = None  # (phase, progress)
    last_flush: float = 0.0
    peak_vram: int | None = None  # bytes, the highest NVML reading while it ran

    @property
    def executing(self) -> bool:
        return self.started is not None

    def phase_of(self, node_id: str | None) -> str:
        node = self.graph.get(str(node_id), {}) if node_id is not None else {}
        kind = node.get("class_type", "")
        phase = PHASES.get(kind, f"running {kind}" if kind else "running")
        of_passes = graph_parts.pass_of(node)  # "2/2": the hires pass's sampler
        return f"pass {of_passes} {phase}" if of_passes else phase


def prompt_id_for(job: Job) -> str:
    """The job id itself on the first attempt, so a restarted worker finds the
    result in ComfyUI's history; a suffix after that, since ComfyUI keeps only
    the last history entry per prompt id."""
    return job.id if job.attempts == 0 else f"{job.id}-r{job.attempts}"


class ServerFiles(Protocol):
    """Whoever keeps the worker's list of its server's model files
    (zmm.worker.capability.Capability)."""

    def by_folder(self, *, fresh: Collection[str] = ()) -> dict[str, list[str]]: ...


class GraphBuilder:
    """Binds templates and checks them against the server once per (template,
    model files), reading a folder afresh the first time a graph needs it and
    once more before declaring a miss. The files come from `files`, the worker's
    one list of them (refreshed there, so the claims see what the check saw);
    None: a builder that only binds."""

    def __init__(self, client: ComfyClient, user_dir, assets_root=None,
                 files: ServerFiles | None = None) -> None:
        self.client = client
        self.user_dir = user_dir
        self.assets_root = assets_root  # where the init images' copies are
        self.files = files
        self._checked: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self._read: set[str] = set()  # the folders asked for afresh since the last forget()
        self._nodes: dict[str, Any] | None = None

    def build(self, job: Job) -> dict[str, Any]:
        """The job's graph, checked against the server's nodes and model files."""
        graph = self.bind(job)
        files = workflows.model_files(graph)
        key = (job.workflow, tuple(sorted((folder, name) for folder, names in files.items()
                                          for name in names)))
        if key not in self._checked:
            self._check(graph)
            self._checked.add(key)
        parts = graph_parts.Parts.from_params(job.request.values)
        if parts.init_image is not None:
            self._upload(graph, parts.init_image)
        return graph

    def forget(self) -> None:
        """The server's files changed: check every graph against them afresh."""
        self._checked.clear()
        self._read.clear()

    def bind(self, job: Job) -> dict[str, Any]:
        """The job's graph as submitted, without asking the server (for a job
        already on it)."""
        return workflows.bind_job(job.request.values, job.workflow, job.id, self.user_dir,
                                  enhanced_prompt=job.enhanced_prompt)

    def _upload(self, graph: dict[str, Any], image: graph_parts.InitImage) -> None:
        """Send zmm's copy of the init image under its content-hashed name (so a
        retry or a restarted worker uploads the same bytes to the same name)."""
        data = inputs.load_copy(self.assets_root, image.file)
        answer = self.client.upload_image(image.upload_name, data,
                                          subfolder=graph_parts.INPUT_SUBFOLDER)
        where = "/".join(part for part in (str(answer.get("subfolder") or ""),
                                           str(answer["name"])) if part)
        for node in graph.values():  # the name the server says it stored it under
            if node.get("class_type") == "LoadImage" and node["inputs"].get("image") \
                    == image.reference:
                node["inputs"]["image"] = where

    def _check(self, graph: dict[str, Any]) -> None:
        assert self.files is not None, "a builder without the server's files only binds"
        # A folder is read afresh the first time a graph needs it (the claim's list
        # may be older than the server's files); every folder it needs, and the
        # node types, once more before declaring a miss.
        folders = set(workflows.model_files(graph))
        for fresh in (False, True):
            if self._nodes is None or fresh:
                self._nodes = self.client.object_info()
            # A model file missing from checkpoints/ may sit in diffusion_models/ (or
            # the reverse): the second look reads both, so the error can say so.
            if fresh and folders & {"checkpoints", "diffusion_models"}:
                folders |= {"checkpoints", "diffusion_models"}
            stale = folders if fresh else folders - self._read
            listed = self.files.by_folder(fresh=stale)
            self._read |= stale
            try:
                workflows.check_against_server(graph, self._nodes, listed)
                return
            except WorkflowRejected:
                if fresh:
                    raise


def submit(client: ComfyClient, graph: dict[str, Any], prompt_id: str, client_id: str,
           metadata: dict[str, Any], *, front: bool = False,
           ui_workflow: dict[str, Any] | None = None) -> None:
    """POST /prompt once. After an ambiguous failure (5xx, dropped connection)
    look for the prompt in /queue and /history before saying it was not queued.
    `ui_workflow`: the UI file a job came from, which ComfyUI's save nodes write
    into the PNG's `workflow` chunk (its page opens it from the image)."""
    extra: dict[str, Any] = {"extra_pnginfo": {"zmm": metadata}}
    if ui_workflow is not None:
        extra["extra_pnginfo"]["workflow"] = ui_workflow
    try:
        result = client.submit(graph, prompt_id=prompt_id, client_id=client_id,
                               extra_data=extra, front=front)
    except ComfyServerError:
        if _is_known(client, prompt_id):
            return
        raise
    if result.node_errors:
        # A 200 with node_errors ran only part of the graph: not the job asked for.
        client.delete_from_queue([prompt_id])
        client.interrupt(prompt_id)
        raise WorkflowRejected("ComfyUI accepted only part of the workflow: "
                               + describe_node_errors({"node_errors": result.node_errors}))


def _is_known(client: ComfyClient, prompt_id: str) -> bool:
    try:
        return locate(client, prompt_id) != "lost"
    except (ComfyUnavailable, ComfyServerError):
        return False


def locate(client: ComfyClient, prompt_id: str) -> str:
    """"queued" (pending or running), "done" (in history) or "lost". The queue is
    asked first: ComfyUI moves a finished prompt from its queue into its history
    in one step, so a prompt that leaves the queue between the two questions is
    still found in the history, never taken for lost."""
    state = client.queue()
    if prompt_id in {item.prompt_id for item in state.running + state.pending}:
        return "queued"
    return "done" if client.history(prompt_id) is not None else "lost"


def over_time(inflight: Inflight) -> str:
    return (f"ran longer than {inflight.max_run_s:g} s ({limit_name(inflight)}); "
            "interrupted on ComfyUI")


def limit_name(inflight: Inflight) -> str:
    """Where a job's maximum run time came from: its own request, or the config."""
    return "--max-run-s" if inflight.job.request.max_run_s is not None else "worker.max_run_s"


def is_out_of_memory(error: dict[str, Any]) -> bool:
    text = f"{error.get('exception_type', '')} {error.get('exception_message', '')}".lower()
    return "outofmemory" in text.replace(" ", "") or "out of memory" in text


def judge(inflight: Inflight, entry: HistoryEntry | None, client: ComfyClient, assets_root,
          clock=time.monotonic, brands_dir=None) -> Outcome:
    """ComfyUI's history entry for a finished prompt -> the job's outcome."""
    if entry is None:
        return Outcome(OutcomeKind.REQUEUE, "ComfyUI has no record of the prompt (restarted?); queued again",
                       {}, consume_attempt=True, error_kind="unavailable")
    if entry.status_str == "success" and entry.completed:
        return _collect(inflight, entry, client, assets_root, clock, brands_dir)
    if inflight.interrupted or entry.interrupted:
        reason = inflight.stop_reason
        if reason == "cancel":
            return Outcome(OutcomeKind.CANCELLED, "cancelled by user", {"error_message": "cancelled by user"})
        if reason in ("signal", "preempt"):
            return Outcome(OutcomeKind.REQUEUE, f"interrupted ({reason}); queued again", {})
        if reason == "max-run":
            message = over_time(inflight)
            return Outcome(OutcomeKind.FAILED, message, {"error_message": message})
        if reason == "silence":
            return Outcome(OutcomeKind.REQUEUE, "no word from ComfyUI; interrupted and queued again", {},
                           consume_attempt=True, backoff=True, error_kind="timeout")
        return Outcome(OutcomeKind.REQUEUE, "interrupted on the ComfyUI server; queued again", {},
                       consume_attempt=True, error_kind="unavailable")
    error = inflight.error or entry.error or {}
    if is_out_of_memory(error):
        return Outcome(OutcomeKind.REQUEUE, "ComfyUI ran out of GPU memory; freed it and queued again",
                       {}, consume_attempt=True, error_kind="oom", oom=True)
    first_line = (error.get("exception_message") or "execution failed").strip().splitlines()
    message = (f"ComfyUI node {error.get('node_id', '?')} ({error.get('node_type', '?')}) raised "
               f"{error.get('exception_type', 'an error')}: {first_line[0] if first_line else ''}")
    return Outcome(OutcomeKind.FAILED, message, {"error_message": message}, error_kind="execution")


def verdict(inflight: Inflight, entry: HistoryEntry | None, client: ComfyClient, assets_root,
            clock=time.monotonic, brands_dir=None) -> Outcome:
    """`judge`, with failing to fetch, compose or save the images as outcomes too."""
    try:
        return judge(inflight, entry, client, assets_root, clock, brands_dir)
    except ComfyUnavailable as exc:
        return Outcome(OutcomeKind.REQUEUE,
                       f"ComfyUI went away while fetching outputs: {exc.reason}", {})
    except assets.DiskFull:
        raise  # not the job's fault: the worker waits for space, the images stay on ComfyUI
    except ZmmError as exc:  # an image that cannot be saved or read: fail with why
        return Outcome(OutcomeKind.FAILED, exc.message, {"error_message": exc.message}, error_kind="output")


def free_vram(client: ComfyClient) -> None:
    """Unload ComfyUI's models and free its memory (after an out-of-memory error)."""
    try:
        client.free(unload_models=True, free_memory=True)
    except (ComfyUnavailable, ComfyServerError):
        pass  # the retry will meet the same server state and report it


def _fetched(client: ComfyClient, outputs: list[Any]) -> Iterator[bytes]:
    """Each output's bytes from ComfyUI, checked to be an image, one by one."""
    for out in outputs:
        data = client.view(out)
        check_image(data, f"the image ComfyUI sent as {out.filename}")
        yield data


def _collect(inflight: Inflight, entry: HistoryEntry, client: ComfyClient, assets_root,
             clock, brands_dir=None) -> Outcome:
    job = inflight.job
    outputs = [out for out in entry.outputs if out.type == "output"]
    if not outputs:
        return Outcome(OutcomeKind.FAILED, "the workflow finished without saving an image",
                       {"error_message": "the workflow finished without saving an image"},
                       error_kind="output")
    saved = save_images(assets_root, job, _fetched(client, outputs), metadata_for(job),
                        brands_dir)
    started = inflight.started or inflight.submitted
    return Outcome(OutcomeKind.SUCCEEDED, saved.outputs[0].relative, {
        "backend": "local", "model_used": workflows.graph_model(inflight.graph),
        "generation_time_s": round(clock() - started, 3),
        "cost_usd": job.cost_usd or 0.0,  # what an earlier cloud attempt may have cost
        "error_message": None, **saved.fields,
    }, notices=saved.notes)
