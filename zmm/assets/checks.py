"""Checking that bytes a server sent are an image worth saving, before zmm saves
them: Pillow must open them, their size must stay under a pixel cap, and every
pixel must decode (a PNG signature followed by junk is refused, not stored).
"""

from __future__ import annotations

import io
import struct
import warnings

from zmm.errors import JobFailed

# The most pixels zmm accepts in one output: 16384 x 16384, four times the largest
# image any shipped workflow makes at a 4x upscale.
MAX_PIXELS = 16384 * 16384


class NotAnImage(JobFailed):
    """What a server sent as an image does not decode (or is too large to)."""


def check_image(data: bytes, source: str, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the image in `data`; NotAnImage, naming `source`, if
    it does not decode in full or has more than `max_pixels` pixels."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise NotAnImage(f"{source} is {width}x{height} pixels, more than the "
                                     f"{max_pixels:,} zmm accepts")
                image.load()
    except NotAnImage:
        raise
    except Image.DecompressionBombError as exc:
        raise NotAnImage(f"{source} is too large to decode ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise NotAnImage(f"{source} is not an image that decodes "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return width, height

