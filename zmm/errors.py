"""The one error registry: every failure zmm reports, its exit code and meaning.

Modules raise `ZmmError` subclasses; only the CLI boundary turns them into an
`error: ...` line (plus `hint: ...`) on stderr and an exit code, and under
`--json` into the document's `error` object, whose `code` is the exit code's
word (`CODE_WORDS`). A failed job's `error_kind` (`ERROR_KINDS`) says why it
failed, and decides the exit code of `zmm generate` and `zmm wait`. Nothing here
does I/O. The README's exit-code table is checked against `EXIT_CODES`.
"""

from __future__ import annotations

OK = 0
JOB_FAILED = 1
USAGE = 2
NOT_FOUND = 3
BACKEND_UNAVAILABLE = 4
CONFLICT = 5
WORKFLOW_REJECTED = 6
SPOOL_UNUSABLE = 7
TIMED_OUT = 8
INTERRUPTED = 130

# code -> one-line meaning; the README's table must list exactly these.
EXIT_CODES: dict[int, str] = {
    OK: "success (for generate/wait: every job succeeded)",
    JOB_FAILED: "a job failed or was cancelled",
    USAGE: "usage error or invalid input; nothing was written",
    NOT_FOUND: "no such job, workflow, model or file",
    BACKEND_UNAVAILABLE: "ComfyUI, Ollama, NVML or a cloud API could not be reached",
    CONFLICT: "conflict: the job is in the wrong state, or a lock is held",
    WORKFLOW_REJECTED: "ComfyUI rejected the workflow (unknown node, checkpoint or input)",
    SPOOL_UNUSABLE: "the spool database is unreadable, corrupt or locked for too long",
    TIMED_OUT: "gave up waiting (--timeout); the jobs go on in the spool",
    INTERRUPTED: "interrupted (Ctrl-C); queued jobs stay queued",
}

# exit code -> the stable word of the JSON `error.code` (docs/json-output.md).
CODE_WORDS: dict[int, str] = {
    JOB_FAILED: "job_failed",
    USAGE: "usage",
    NOT_FOUND: "not_found",
    BACKEND_UNAVAILABLE: "unavailable",
    CONFLICT: "conflict",
    WORKFLOW_REJECTED: "rejected",
    SPOOL_UNUSABLE: "spool",
    TIMED_OUT: "timeout",
    INTERRUPTED: "interrupted",
}

# A failed or cancelled job's `error_kind` -> (the exit code `zmm generate` and
# `zmm wait` give for it, meaning). A closed list: the spool's CHECK holds the same.
ERROR_KINDS: dict[str, tuple[int, str]] = {
    "rejected": (WORKFLOW_REJECTED, "ComfyUI refused the graph (unknown node, model file or "
                 "input) or the job could not be built; retrying the same job will not help"),
    "unavailable": (BACKEND_UNAVAILABLE, "ComfyUI kept failing to take or keep the job, "
                    "or kept answering what zmm cannot read"),
    "crash": (JOB_FAILED, "ComfyUI crashed while running the job, each time it was tried"),
    "execution": (JOB_FAILED, "a node raised an error while the graph ran"),
    "oom": (JOB_FAILED, "out of GPU memory, also after freeing memory and retrying"),
    "timeout": (JOB_FAILED, "no word from ComfyUI for too long, each time it was tried, "
                "or the job ran past its maximum run time (worker.max_run_s)"),
    "output": (JOB_FAILED, "no image came out, or it could not be fetched, composed or saved"),
    "cloud": (JOB_FAILED, "no cloud provider could make the image"),
    "enhance": (BACKEND_UNAVAILABLE, "--enhance=required and the local LLM could not "
                "write the prompt"),
    "cancelled": (JOB_FAILED, "cancelled by a user"),
}


def kind_exit_code(kinds: list[str | None]) -> int:
    """The exit code for jobs that did not succeed, from their error kinds: the
    kinds' code when they all agree on one, else 1 (job failed)."""
    codes = {ERROR_KINDS.get(kind or "", (JOB_FAILED, ""))[0] for kind in kinds}
    return codes.pop() if len(codes) == 1 else JOB_FAILED


class ZmmError(Exception):
    """Base of every error zmm reports to a user. `code` is the word of its exit
    code in JSON (`CODE_WORDS`)."""

    exit_code: int = JOB_FAILED

    @property
    def code(self) -> str:
        return CODE_WORDS.get(self.exit_code, "job_failed")

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInput(ZmmError):
    """A value the user gave is not allowed. `field` names it."""

    exit_code = USAGE

    def __init__(self, field: str, allowed: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {allowed}", hint=hint)
        self.field = field
        self.allowed = allowed


class NotFound(ZmmError):
    exit_code = NOT_FOUND


class BackendUnavailable(ZmmError):
    """A server zmm talks to could not be reached (refused, DNS, timeout)."""

    exit_code = BACKEND_UNAVAILABLE


class ComfyUnavailable(BackendUnavailable):
    def __init__(self, url: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"ComfyUI at {url} is unreachable: {reason}", hint=hint)
        self.url = url
        self.reason = reason


class OllamaUnavailable(BackendUnavailable):
    def __init__(self, url: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"Ollama at {url} is unreachable: {reason}", hint=hint)
        self.url = url
        self.reason = reason


class GpuUnavailable(BackendUnavailable):
    """No NVIDIA driver / NVML library on this machine."""


class OllamaError(ZmmError):
    """Ollama answered with an error status. `detail` is Ollama's own `{"error": ...}`
    text. A 400 means Ollama refused what was asked (e.g. a keep_alive without a
    unit): a usage error. Anything else (500, 503 busy, a non-Ollama answer) is
    the backend's side; unknown models are `NotFound`, not this."""

    exit_code = BACKEND_UNAVAILABLE

    def __init__(self, status: int, detail: str, *, hint: str | None = None) -> None:
        super().__init__(f"Ollama answered {status}: {detail}", hint=hint)
        self.status = status
        self.detail = detail
        if status == 400:
            self.exit_code = USAGE


class EnhanceFailed(ZmmError):
    """The local LLM could not improve a prompt: Ollama down or too slow, no such
    model, an error answer or an empty one. `cause` says which, in words; the
    exit code is the cause's (3 for a model Ollama does not have, else 4)."""

    exit_code = BACKEND_UNAVAILABLE

    def __init__(self, cause: str, *, exit_code: int = BACKEND_UNAVAILABLE,
                 hint: str | None = None) -> None:
        super().__init__(f"prompt enhancement failed: {cause}", hint=hint)
        self.cause = cause
        self.exit_code = exit_code


class ComfyServerError(ZmmError):
    """ComfyUI answered with a 5xx or an unreadable body: the request may or may not
    have taken effect, so callers must check before repeating it."""

    exit_code = BACKEND_UNAVAILABLE


class Conflict(ZmmError):
    exit_code = CONFLICT


class WorkerAlreadyRunning(Conflict):
    pass


class WorkflowRejected(ZmmError):
    """ComfyUI (or zmm's own pre-check) refused a workflow graph."""

    exit_code = WORKFLOW_REJECTED


class ModelFileMissing(WorkflowRejected):
    """The server lacks a model file the graph loads (`folder`/`name`): another
    backend may have it, so the worker puts the job back instead of failing it."""

    def __init__(self, message: str, *, folder: str, name: str,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.folder = folder
        self.name = name


class SpoolUnusable(ZmmError):
    exit_code = SPOOL_UNUSABLE


class JobFailed(ZmmError):
    exit_code = JOB_FAILED


class TimedOut(ZmmError):
    exit_code = TIMED_OUT


class Interrupted(ZmmError):
    """Ctrl-C (SIGINT) while a command waited; what was done stays done."""

    exit_code = INTERRUPTED

