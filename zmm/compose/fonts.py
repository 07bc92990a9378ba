"""Fonts for composition: Pillow's bundled scalable font (`builtin`) or a
TrueType/OpenType file, loaded at a size (cached), and the characters a font
has glyphs for, read from its `cmap` table, so missing glyphs are refused when
a job is queued rather than drawn as boxes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import unicodedata
from io import BytesIO
from pathlib import Path
from typing import Any

from zmm.errors import InvalidInput, NotFound
from zmm.fs import MB, read_user_file

BUILTIN = "builtin"
MAX_BYTES = 64 * MB  # a font file (CJK fonts run to about 20 MB)
BUILTIN_NAME = "Pillow's built-in Aileron Regular"


class FontError(Exception):
    """A font file that cannot be read or has no usable character map."""


@functools.lru_cache(maxsize=1)
def builtin_bytes() -> bytes:
    from PIL import ImageFont

    font = ImageFont.load_default(size=12)  # FreeType, Pillow >= 10.1
    data = getattr(font, "font_bytes", None)
    if not isinstance(data, bytes):
        raise FontError("this Pillow has no built-in scalable font (Pillow >= 10.1 with "
                        "FreeType is needed)")
    return data


def read(source: str) -> bytes:
    """The bytes of `source`: BUILTIN or a font file's path (read again only
    when the file changes: a `--from` file names the same brand on every line)."""
    if source == BUILTIN:
        return builtin_bytes()
    try:
        info = os.stat(source)
        return _read(source, info.st_mtime_ns, info.st_size)
    except OSError as exc:
        raise FontError(f"cannot read {source} ({exc.strerror or exc})") from None
    except (InvalidInput, NotFound) as exc:  # a FIFO, a device, a huge file
        raise FontError(str(exc)) from None


@functools.lru_cache(maxsize=16)
def _read(source: str, _mtime_ns: int, _size: int) -> bytes:
    return read_user_file(Path(source), "font", MAX_BYTES)


@functools.lru_cache(maxsize=256)
def at_size(source: str, size: int, digest: str) -> Any:
    """A Pillow font for `source` at `size` px (`digest`: the bytes' sha256, so a
    changed file is loaded again)."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(BytesIO(read(source)), size)
    except OSError as exc:
        raise FontError(f"Pillow cannot load it ({exc})") from None


@functools.lru_cache(maxsize=16)
def digest(data: bytes) -> str:
    # Cached: `read` hands out the same bytes object until a file changes (whose
    # hash Python keeps), so a font's sha256 is computed once, not per job.
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=32)
def _coverage(data_digest: str, data: bytes) -> frozenset[int]:
    return frozenset(_cmap(data))


def coverage(data: bytes) -> frozenset[int]:
    """Every code point the font maps to a glyph."""
    return _coverage(digest(data), data)


def first_missing(text: str, covered: frozenset[int]) -> str | None:
    """The first character of `text` the font cannot draw (spaces, line breaks
    and other invisible format characters need no glyph)."""
    for char in text:
        if char.isspace() or unicodedata.category(char) in ("Cf", "Cc"):
            continue
        if ord(char) not in covered:
            return char
    return None


def describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"{char!r} (U+{ord(char):04X}{' ' + name if name else ''})"


# -- the sfnt cmap table ----------------------------------------------------------


def _cmap(data: bytes) -> set[int]:
    try:
        offset = _face_offset(data)
        table = _table(data, offset, b"cmap")
        return _best_subtable(data, table)
    except (struct.error, IndexError):
        raise FontError("not a TrueType/OpenType font (its tables cannot be read)") from None


def _face_offset(data: bytes) -> int:
    if data[:4] == b"ttcf":  # a collection: its first face
        return struct.unpack(">I", data[12:16])[0]
    if data[:4] not in (b"\x00\x01\x00\x00", b"OTTO", b"true"):
        raise FontError("not a TrueType/OpenType font")
    return 0


def _table(data: bytes, face: int, tag: bytes) -> int:
    count = struct.unpack(">H", data[face + 4:face + 6])[0]
    for number in range(count):
        entry = face + 12 + 16 * number
        if data[entry:entry + 4] == tag:
            return struct.unpack(">I", data[entry + 8:entry + 12])[0]
    raise FontError(f"the font has no {tag.decode()} table")


def _best_subtable(data: bytes, table: int) -> set[int]:
    """Unicode subtables, full repertoire (format 12) first."""
    count = struct.unpack(">H", data[table + 2:table + 4])[0]
    found: dict[int, int] = {}
    for number in range(count):
        platform, encoding, offset = struct.unpack(
            ">HHI", data[table + 4 + 8 * number:table + 12 + 8 * number])
        if platform == 0 or (platform == 3 and encoding in (1, 10)):
            kind = struct.unpack(">H", data[table + offset:table + offset + 2])[0]
            found.setdefault(kind, table + offset)
    if 12 in found:
        return _format12(data, found[12])
    if 4 in found:
        return _format4(data, found[4])
    raise FontError("the font has no Unicode character map (cmap format 4 or 12)")


def _format12(data: bytes, start: int) -> set[int]:
    groups = struct.unpack(">I", data[start + 12:start + 16])[0]
    points: set[int] = set()
    for number in range(groups):
        first, last, glyph = struct.unpack(">III", data[start + 16 + 12 * number:
                                                        start + 28 + 12 * number])
        points.update(range(first + (1 if glyph == 0 else 0), last + 1))
    return points


def _format4(data: bytes, start: int) -> set[int]:
    segments = struct.unpack(">H", data[start + 6:start + 8])[0] // 2
    ends_at = start + 14
    starts_at = ends_at + 2 * segments + 2
    deltas_at = starts_at + 2 * segments
    ranges_at = deltas_at + 2 * segments
    points: set[int] = set()
    for number in range(segments):
        end, first = (struct.unpack(">H", data[at + 2 * number:at + 2 * number + 2])[0]
                      for at in (ends_at, starts_at))
        delta = struct.unpack(">h", data[deltas_at + 2 * number:deltas_at + 2 * number + 2])[0]
        where = ranges_at + 2 * number
        range_offset = struct.unpack(">H", data[where:where + 2])[0]
        for point in range(first, min(end, 0xFFFE) + 1):
            if range_offset == 0:
                glyph = (point + delta) & 0xFFFF
            else:
                at = where + range_offset + 2 * (point - first)
                glyph = struct.unpack(">H", data[at:at + 2])[0]
                glyph = (glyph + delta) & 0xFFFF if glyph else 0
            if glyph:
                points.add(point)
    return points
