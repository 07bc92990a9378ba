"""Output files: where a job's images go, writing them atomically, the zmm PNG
metadata chunk, and path safety (nothing is read or written outside the
assets root, whatever a template, a server or a spool row says).

The zmm chunk is made (`metadata_for`), written (`save_output`) and read back
(`zmm_metadata`, `image_chunks`, `recorded_request`) here and nowhere else. It is
inserted into ComfyUI's PNG bytes as they are (no re-encoding), so ComfyUI's own
`prompt` and `workflow` chunks survive untouched and the image opens its
workflow in ComfyUI's page.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmm
from zmm.errors import InvalidInput, JobFailed
from zmm.fs import private_dirs, read_user_file
from zmm.jsontext import compact

if TYPE_CHECKING:
    from zmm.store import Job

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"
ZMM_KEY = "zmm"


class AssetWriteError(JobFailed):
    """The image could not be saved (disk full, folder not writable)."""


class DiskFull(AssetWriteError):
    """The image could not be saved because the disk (or the quota) is full: a
    worker waits for space rather than fail the job."""


@dataclass(frozen=True)
class SavedFile:
    relative: str  # to the assets root, with forward slashes
    path: Path
    size: int
    sha256: str
    width: int
    height: int


def relative_name(job_id: str, created_at: str, index: int) -> str:
    """images/YYYY-MM/<job-id>.png, then <job-id>-1.png, -2, ... for more outputs."""
    month = created_at[:7]
    suffix = "" if index == 0 else f"-{index}"
    return f"images/{month}/{job_id}{suffix}.png"


def safe_path(root: Path, relative: str) -> Path:
    """`root / relative`, refusing anything that could land outside `root`:
    absolute paths, `..`, drive letters, and symlinks on the way."""
    text = relative.replace("\\", "/")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if text.startswith("/") or (len(text) > 1 and text[1] == ":") or ".." in parts or not parts:
        raise InvalidInput("path", f"{relative!r} is not a path inside the assets folder")
    root_resolved = root.resolve()
    candidate = root.joinpath(*parts)
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise InvalidInput("path", f"{relative!r} goes through a symlink ({current})")
    resolved = candidate.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise InvalidInput("path", f"{relative!r} resolves outside the assets folder")
    return candidate


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and os.replace, so a reader
    (or a crash) never sees half a file; on failure nothing is left behind."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        private_dirs(path.parent)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # the folder itself may be what is broken
            temporary.unlink()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"cannot save {path}: the disk is full ({exc.strerror})",
                           hint="free disk space (`zmm cleanup`)") from None
        raise AssetWriteError(
            f"cannot save {path}: {exc.strerror or exc}",
            hint="free disk space or make the assets folder writable; the job can be retried",
        ) from None


def save_output(root: Path, relative: str, png: bytes, metadata: dict[str, Any]) -> SavedFile:
    data = add_text_chunk(png, ZMM_KEY, compact(metadata))
    path = safe_path(root, relative)
    write_atomic(path, data)
    width, height = png_size(data)
    return SavedFile(relative, path, len(data), hashlib.sha256(data).hexdigest(), width, height)


def png_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise JobFailed("ComfyUI returned an output that is not a PNG image")
    return struct.unpack(">II", data[16:24])


def _chunks(data: bytes):
    """(offset, type, payload) for every chunk of a PNG."""
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        yield offset, kind, data[offset + 8:offset + 8 + length]
        offset += 12 + length


def add_text_chunk(png: bytes, key: str, text: str) -> bytes:
    """Insert an uncompressed iTXt chunk before IEND (replacing one with the same key)."""
    png_size(png)
    payload = key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
    chunk = struct.pack(">I", len(payload)) + b"iTXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"iTXt" + payload) & 0xFFFFFFFF)
    kept = bytearray(PNG_SIGNATURE)
    for offset, kind, body in _chunks(png):
        raw = png[offset:offset + 12 + len(body)]
        if kind in (b"tEXt", b"iTXt", b"zTXt") and body.split(b"\x00", 1)[0] == key.encode():
            continue
        if kind == b"IEND":
            kept += chunk
        kept += raw
    return bytes(kept)


def read_text_chunks(data: bytes) -> dict[str, str]:
    """Every tEXt / iTXt / zTXt chunk of a PNG as key -> text."""
    png_size(data)
    found: dict[str, str] = {}
    for _, kind, body in _chunks(data):
        key, _, rest = body.partition(b"\x00")
        if kind == b"tEXt":
            found[key.decode("latin-1")] = rest.decode("latin-1")
        elif kind == b"zTXt":
            found[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            compressed, _method = rest[0], rest[1]
            _lang, _, rest = rest[2:].partition(b"\x00")
            _translated, _, text = rest.partition(b"\x00")
            found[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
    return found


def zmm_metadata(path: Path) -> dict[str, Any]:
    """The zmm chunk of an image zmm saved (for `generate --from-image`)."""
    chunks = image_chunks(path)
    if ZMM_KEY not in chunks:
        raise InvalidInput("from-image", f"{path} has no zmm metadata (was it made by zmm?)")
    try:
        meta = json.loads(chunks[ZMM_KEY])
    except (ValueError, RecursionError):  # not JSON, too deep, or an integer too long
        raise InvalidInput("from-image", f"{path} has a damaged zmm chunk") from None
    if not isinstance(meta, dict):
        raise InvalidInput("from-image", f"{path} has a damaged zmm chunk")
    return meta


def image_chunks(path: Path) -> dict[str, str]:
    """Every text chunk of a PNG (or zmm's comments of a JPEG): zmm's, and
    ComfyUI's own `prompt` (the API graph) and `workflow` (the UI file)."""
    from zmm.assets.inputs import MAX_BYTES

    data = read_user_file(path, "from-image", MAX_BYTES)
    try:
        chunks = jpeg_comments(data) if data.startswith(JPEG_SIGNATURE) else read_text_chunks(data)
    except (JobFailed, zlib.error, UnicodeDecodeError, IndexError, struct.error):
        # IndexError, struct.error: a chunk cut short (a truncated or forged file)
        raise InvalidInput("from-image", f"{path} is not a PNG or JPEG image") from None
    return chunks


def metadata_for(job: Job) -> dict[str, Any]:
    """The zmm chunk of a job's saved PNG: enough to queue the same job again
    (`--from-image`), the model's family and every file it loaded included."""
    params = job.request
    return {"job_id": job.id, "prompt": job.prompt, "negative": job.negative_prompt,
            "seed": job.seed, "model": job.model_requested, "width": job.width,
            "height": job.height, "steps": job.steps, "cfg": params.get("cfg"),
            "sampler": params.get("sampler"), "scheduler": params.get("scheduler"),
            "quality": job.quality_tier, "style": job.style, "workflow": job.workflow,
            "family": params.family, "loader": params.get("loader"),
            "files": params.model_files, "guidance": params.get("guidance"),
            "shift": params.get("shift"), "priority": job.priority, "requester": job.requester,
            "zmm_version": zmm.__version__, **params.parts,
            **({"enhanced_prompt": job.enhanced_prompt} if job.enhanced_prompt else {})}


# The chunk's keys that are request fields of the same name (flags, `--from` lines).
_REQUEST_KEYS = ("prompt", "negative", "quality", "style", "seed", "steps", "cfg", "model",
                 "priority", "requester")


def recorded_request(meta: dict[str, Any]) -> dict[str, Any]:
    """The request fields a zmm chunk records, as `--from` fields (its size as WxH)."""
    raw = {key: meta.get(key) for key in _REQUEST_KEYS}
    if meta.get("width") and meta.get("height"):
        raw["size"] = f"{meta['width']}x{meta['height']}"
    return raw


def jpeg_comments(data: bytes) -> dict[str, str]:
    """`key\\0text` COM segments of a JPEG as key -> text: where `zmm cleanup
    --compress-older-than` keeps the zmm chunk of a PNG it converted."""
    if not data.startswith(JPEG_SIGNATURE):
        raise JobFailed("not a JPEG image")
    found: dict[str, str] = {}
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # image data follows: no more headers
            break
        length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
        if marker == 0xFE:
            key, sep, text = data[offset + 4:offset + 2 + length].partition(b"\x00")
            if sep:
                found[key.decode("latin-1")] = text.decode("utf-8")
        offset += 2 + length
    return found
