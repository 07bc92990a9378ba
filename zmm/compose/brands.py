"""Brands: `$ZMM_HOME/brands/NAME.toml` (fonts, colours, an optional logo and a
layout per style) and the built-in `default`, read into a checked `Brand`.

Every problem is an `InvalidInput` naming the file and the key, raised before
anything is written (the format is documented in docs/branding.md). Loading
reads the fonts and the logo once to prove they load; nothing is drawn here.
"""

from __future__ import annotations

import io
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from zmm import jobs
from zmm.compose import fonts, layout
from zmm.errors import InvalidInput, NotFound
from zmm.fs import MB, read_user_file, read_user_text

DEFAULT = "default"
MAX_TOML_BYTES = 1 * MB
MAX_IMAGE_BYTES = 64 * MB  # a logo
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COLOUR = re.compile(r"^#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")

# The brand zmm ships: Pillow's own font, so no download is ever needed. A file
# $ZMM_HOME/brands/default.toml replaces it.
DEFAULT_TOML = """
[fonts]
title = "builtin"
text = "builtin"

[colors]
band = "#0f1720"
title = "#ffffff"
subtitle = "#d5dde5"
footer = "#9fb0c0"
accent = "#f0a500"
"""

_SECTIONS = {
    "fonts": {"title": True, "text": False},
    "colors": {"band": True, "title": True, "subtitle": False, "footer": False, "accent": False},
    "logo": {"file": True, "height": False},
}
_TOP = ("name", "fonts", "colors", "logo", "layout")

RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class Brand:
    name: str
    where: str  # the file, or "built-in" for the shipped default
    title_font: str  # fonts.BUILTIN or an absolute path
    text_font: str
    band: RGBA
    title: RGBA
    subtitle: RGBA
    footer: RGBA
    accent: RGBA | None
    logo: str | None  # an absolute path
    logo_height: float
    layouts: dict[str, layout.Layout]

    def layout_for(self, style: str | None) -> layout.Layout:
        return self.layouts.get(style or "none", self.layouts["none"])

    def font_of(self, role: str) -> str:
        return self.title_font if role == "title" else self.text_font

    def font_label(self, role: str) -> str:
        source = self.font_of(role)
        return fonts.BUILTIN_NAME if source == fonts.BUILTIN else Path(source).name


def folder(home: Path) -> Path:
    return home / "brands"


def available(brands_dir: Path) -> list[str]:
    """The brands a job may name: the files in `brands_dir` and `default`."""
    found = {DEFAULT}
    if brands_dir.is_dir():
        found |= {path.stem for path in brands_dir.glob("*.toml") if _NAME.match(path.stem)}
    return sorted(found)


def parse_name(value: Any) -> str:
    name = jobs.parse_text("brand", value, max_len=64)
    if not _NAME.match(name):
        raise InvalidInput("brand", "a name of letters, digits, '.', '_' and '-' (the file "
                           "$ZMM_HOME/brands/NAME.toml)")
    return name


def load(name: str, brands_dir: Path) -> Brand:
    """The checked brand `name`; an unknown name lists the brands there are."""
    name = parse_name(name)
    path = brands_dir / f"{name}.toml"
    if not path.is_file():
        if name == DEFAULT:
            return _build(name, "built-in", tomllib.loads(DEFAULT_TOML), brands_dir)
        raise InvalidInput("brand", f"no brand {name!r}; brands: "
                           + ", ".join(available(brands_dir)) + f" (files in {brands_dir})")
    text = read_user_text(path, str(path), MAX_TOML_BYTES)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(str(path), f"not valid TOML ({exc})") from None
    except RecursionError:
        raise InvalidInput(str(path), "TOML tables, not arrays nested hundreds deep") from None
    return _build(name, str(path), table, brands_dir)


def _build(name: str, where: str, table: dict[str, Any], brands_dir: Path) -> Brand:
    def bad(key: str, allowed: str) -> InvalidInput:
        return InvalidInput(f"{where}: {key}", allowed)

    for key in table:
        if key not in _TOP:
            raise bad(key, "unknown key; allowed: " + ", ".join(_TOP))
    sections = {section: _section(table, section, bad) for section in _SECTIONS}
    font_files = {role: _font(sections["fonts"].get(role), f"fonts.{role}", brands_dir, bad)
                  for role in ("title", "text") if role in sections["fonts"]}
    colours = {key: _colour(value, f"colors.{key}", bad)
               for key, value in sections["colors"].items()}
    logo, logo_height = None, 0.6
    if "logo" in table:
        logo = _logo(sections["logo"]["file"], brands_dir, bad)
        logo_height = _number(sections["logo"].get("height", 0.6), "logo.height", (0.1, 1.0), bad)
    title = colours["title"]
    subtitle = colours.get("subtitle", title)
    return Brand(name=name, where=where, title_font=font_files["title"],
                 text_font=font_files.get("text", font_files["title"]),
                 band=colours["band"], title=title, subtitle=subtitle,
                 footer=colours.get("footer", subtitle), accent=colours.get("accent"),
                 logo=logo, logo_height=logo_height,
                 layouts=_layouts(table.get("layout", {}), bad))


def _section(table: dict[str, Any], section: str, bad) -> dict[str, Any]:
    keys = _SECTIONS[section]
    if section not in table:
        if section == "logo":
            return {}
        raise bad(section, f"missing; a [{section}] table with " + ", ".join(
            key for key, required in keys.items() if required))
    value = table[section]
    if not isinstance(value, dict):
        raise bad(section, "a table")
    for key in value:
        if key not in keys:
            raise bad(f"{section}.{key}", "unknown key; allowed: " + ", ".join(keys))
    for key, required in keys.items():
        if required and key not in value:
            raise bad(f"{section}.{key}", "missing (required)")
    return value


def _font(value: Any, key: str, brands_dir: Path, bad) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad(key, f"a font file (relative to {brands_dir}) or \"builtin\"")
    source = fonts.BUILTIN if value.strip() == fonts.BUILTIN else \
        str((brands_dir / Path(value).expanduser()).resolve())
    try:
        data = fonts.read(source)
        fonts.at_size(source, 12, fonts.digest(data))
        fonts.coverage(data)
    except fonts.FontError as exc:
        raise bad(key, f"the font {value!r} does not load: {exc}") from None
    return source


def _colour(value: Any, key: str, bad) -> RGBA:
    if not isinstance(value, str) or not _COLOUR.match(value):
        raise bad(key, f"a colour #rrggbb or #rrggbbaa, not {value!r}")
    digits = value[1:] + ("ff" if len(value) == 7 else "")
    red, green, blue, alpha = (int(digits[i:i + 2], 16) for i in range(0, 8, 2))
    return red, green, blue, alpha


def _logo(value: Any, brands_dir: Path, bad) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad("logo.file", f"an image file (relative to {brands_dir})")
    path = (brands_dir / Path(value).expanduser()).resolve()
    from PIL import Image, UnidentifiedImageError

    try:
        data = read_user_file(path, "logo.file", MAX_IMAGE_BYTES)
    except (InvalidInput, NotFound) as exc:
        raise bad("logo.file", f"the image {value!r} does not load ({exc})") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise bad("logo.file", f"the image {value!r} does not load ({exc})") from None
    return str(path)


def _number(value: Any, key: str, bounds: tuple[float, float], bad) -> float:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:
        raise bad(key, f"a number from {low:g} to {high:g}")
    return float(value)


def _layouts(table: Any, bad) -> dict[str, layout.Layout]:
    """The layout of every style: the style's default < [layout] < [layout.STYLE]."""
    if not isinstance(table, dict):
        raise bad("layout", "a table")
    shared = {key: value for key, value in table.items() if not isinstance(value, dict)}
    per_style = {key: value for key, value in table.items() if isinstance(value, dict)}
    for style in per_style:
        if style not in jobs.STYLES:
            raise bad(f"layout.{style}", "unknown style; one of " + ", ".join(jobs.STYLES))
    common = _layout_values(shared, "layout", bad)
    result = {}
    for style in jobs.STYLES:
        values = dict(common, **_layout_values(per_style.get(style, {}), f"layout.{style}", bad))
        try:
            result[style] = layout.with_overrides(layout.for_style(style), values)
        except ValueError as exc:
            raise bad(f"layout.{style}" if style in per_style else "layout", str(exc)) from None
    return result


def _layout_values(table: dict[str, Any], prefix: str, bad) -> dict[str, Any]:
    names = {field.name for field in fields(layout.Layout)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise bad(f"{prefix}.{key}", "unknown key; allowed: " + ", ".join(layout.KEY_RULES))
        rule, allowed = layout.KEY_RULES[key]
        where = f"{prefix}.{key}"
        if rule == "choice":
            if value not in allowed:
                raise bad(where, "one of " + ", ".join(allowed))
            values[key] = value
        elif rule == "integer":
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not allowed[0] <= value <= allowed[1]:
                raise bad(where, f"an integer from {allowed[0]} to {allowed[1]}")
            values[key] = value
        else:
            values[key] = _number(value, where, allowed, bad)
    return values
