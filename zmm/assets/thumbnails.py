"""Derived images: the 256 px WebP thumbnail next to each output, and the JPEG
that `zmm cleanup --compress-older-than` turns an old PNG into (zmm chunk kept
in a COM segment). Every write goes through `zmm.assets` (safe paths, atomic
replace); Pillow is imported only here, and only when an image is touched.
"""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path, PurePosixPath

from zmm import assets
from zmm.errors import InvalidInput

THUMBNAIL_PX = 256
THUMBNAIL_SUFFIX = ".thumb.webp"
JPEG_QUALITY = 80
# A COM segment's length field is 16 bits and counts itself.
_COM_MAX = 0xFFFF - 2


def thumbnail_name(relative: str) -> str:
    """images/2026-01/<id>.png -> images/2026-01/<id>.thumb.webp (the JPEG a PNG
    is compressed into keeps the same thumbnail)."""
    folder, slash, name = relative.replace("\\", "/").rpartition("/")
    stem, dot, _suffix = name.rpartition(".")  # string work: called once per job by cleanup
    return f"{folder}{slash}{stem if dot and stem else name}{THUMBNAIL_SUFFIX}"


def jpeg_name(relative: str) -> str:
    return str(PurePosixPath(relative).with_suffix(".jpg"))


def make_thumbnail(png_path: Path, assets_root: Path) -> str:
    """Write `<name>.thumb.webp` (at most 256 px on its longest side) next to an
    image inside the assets root; returns its path relative to the root."""
    from PIL import Image, UnidentifiedImageError

    relative = _relative(png_path, assets_root)
    target = assets.safe_path(assets_root, thumbnail_name(relative))
    try:
        with Image.open(assets.safe_path(assets_root, relative)) as opened:
            opened.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
            image: Image.Image = opened
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            buffer = io.BytesIO()
            image.save(buffer, "WEBP", quality=80, method=4)
    except (OSError, UnidentifiedImageError) as exc:
        raise assets.AssetWriteError(f"cannot make a thumbnail of {relative}: {exc}") from None
    assets.write_atomic(target, buffer.getvalue())
    return thumbnail_name(relative)


def compress_to_jpeg(assets_root: Path, relative: str) -> assets.SavedFile:
    """Write the JPEG (quality 80) of a zmm PNG next to it, carrying the PNG's zmm
    chunk in a COM segment; the PNG itself is left for the caller to delete."""
    from PIL import Image, UnidentifiedImageError

    source = assets.safe_path(assets_root, relative)
    target_relative = jpeg_name(relative)
    target = assets.safe_path(assets_root, target_relative)
    data = source.read_bytes()
    try:
        metadata = assets.read_text_chunks(data).get(assets.ZMM_KEY)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            buffer = io.BytesIO()
            _flatten(image).save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    except (assets.JobFailed, OSError, UnidentifiedImageError) as exc:
        raise assets.AssetWriteError(f"cannot convert {relative} to JPEG: {exc}") from None
    jpeg = buffer.getvalue()
    if metadata is not None:
        jpeg = add_jpeg_comment(jpeg, assets.ZMM_KEY, metadata)
    assets.write_atomic(target, jpeg)
    return assets.SavedFile(target_relative, target, len(jpeg), hashlib.sha256(jpeg).hexdigest(),
                            width, height)


def add_jpeg_comment(jpeg: bytes, key: str, text: str) -> bytes:
    """Insert a `key\\0text` COM segment right after SOI (read by
    `zmm.assets.jpeg_comments`)."""
    payload = key.encode("latin-1") + b"\x00" + text.encode("utf-8")
    if len(payload) > _COM_MAX:
        # Splitting would make the metadata unreadable as one value; keep the PNG instead.
        raise assets.AssetWriteError(f"the {key} metadata ({len(payload)} bytes) does not fit "
                                     "in a JPEG comment")
    segment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def _flatten(image):
    """JPEG has no alpha: composite transparent images onto white."""
    from PIL import Image

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).absolute().relative_to(Path(root).absolute()).as_posix()
    except ValueError:
        raise InvalidInput("path", f"{path} is not inside the assets folder {root}") from None
