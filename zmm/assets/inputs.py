"""Init images (image-to-image inputs): checking that a user's file is an image
ComfyUI can load (PNG, JPEG or WebP, 64 px to 16384 px a side, at most 64
megapixels, a file of at most 256 MB), and zmm's own content-addressed copy under the assets root
(inputs/<sha256>.<ext>), so a queued job still runs after the user deletes the
original. Two jobs with the same image share one copy.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from zmm.assets import safe_path, write_atomic
from zmm.errors import InvalidInput, NotFound
from zmm.fs import MB, read_user_file

FOLDER = "inputs"
MAX_PIXELS = 64_000_000
SIDES = (64, 16384)  # ComfyUI's LoadImage takes more; its latent nodes stop at 16384
MAX_BYTES = 256 * MB  # 64 megapixels of 32-bit noise, stored, fits; a file read whole
FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


@dataclass(frozen=True)
class InputImage:
    relative: str  # inputs/<sha256>.<ext>
    sha256: str
    width: int
    height: int
    name: str  # the file name as the user gave it
    data: bytes = field(repr=False)


def read(path: Path, field_name: str = "init-image") -> InputImage:
    """The image at `path`, checked; InvalidInput / NotFound naming `field_name`."""
    data = read_user_file(path, field_name, MAX_BYTES)
    from PIL import Image, UnidentifiedImageError  # only when an init image is given

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height) = image.format, image.size
                _check_size(path, field_name, width, height)
                image.verify()  # the PNG chunk checksums, a JPEG's markers
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput(field_name, f"at most 64 megapixels; {path} is larger") from None
    except UnidentifiedImageError:
        raise InvalidInput(field_name, f"a PNG, JPEG or WebP image; {path} is not an "
                           "image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # what Pillow raises for damaged files
        raise InvalidInput(field_name, f"a PNG, JPEG or WebP image; {path} is damaged "
                           f"({exc})") from None
    if kind not in FORMATS:
        raise InvalidInput(field_name, f"a PNG, JPEG or WebP image; {path} is {kind}")
    digest = hashlib.sha256(data).hexdigest()
    return InputImage(f"{FOLDER}/{digest}.{FORMATS[kind]}", digest, width, height, path.name,
                      data)


def _check_size(path: Path, field_name: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise InvalidInput(field_name, f"at most 64 megapixels; {path} is {width}x{height}")
    low, high = SIDES
    if not (low <= width <= high and low <= height <= high):
        raise InvalidInput(field_name, f"each side from {low} to {high} pixels; {path} is "
                           f"{width}x{height}")


def keep(root: Path, image: InputImage) -> Path:
    """zmm's copy of the image (written atomically unless an identical one exists)."""
    path = safe_path(root, image.relative)
    try:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == image.sha256:
            return path
    except OSError:
        pass  # unreadable: write it again below
    write_atomic(path, image.data)
    return path


def load_copy(root: Path, relative: str) -> bytes:
    """The bytes of zmm's copy; NotFound when cleanup or a person removed it."""
    path = safe_path(root, relative)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"the job's init image {path} is gone (removed by cleanup?)") from None
