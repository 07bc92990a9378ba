"""Composition: exact text and branding drawn onto a generated image with
Pillow, after the image exists and before it is saved (no GPU involved).

A job's `compose` parameter is {title, subtitle, footer, brand}: checked here
when the job is queued (brand, fonts, logo, glyphs), drawn by `render`, laid
out by `layout`, with brands read by `brands`. The image without text is kept
beside the composed one under `plain_name`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zmm import jobs
from zmm.errors import InvalidInput

FIELDS = ("title", "subtitle", "footer", "brand")
TEXT_FIELDS = ("title", "subtitle", "footer")
_MAX_LEN = {"title": 300, "subtitle": 500, "footer": 300}
PLAIN_SUFFIX = ".plain.png"


def from_request(raw: dict[str, Any], brands_dir: Path) -> dict[str, str] | None:
    """The request's composition, checked, or None when it asks for no text."""
    texts = {name: _text(name, raw.get(name)) for name in TEXT_FIELDS}
    texts = {name: text for name, text in texts.items() if text}
    brand_given = raw.get("brand") not in (None, "")
    if not texts:
        if brand_given:
            raise InvalidInput("brand", "only with --title, --subtitle or --footer (the text "
                               "the brand is drawn with)")
        return None
    from zmm.compose import brands

    brand = brands.load(str(raw["brand"]) if brand_given else brands.DEFAULT, brands_dir)
    check_glyphs(brand, texts)
    return dict(texts, brand=brand.name)


def _text(name: str, value: Any) -> str:
    if value in (None, ""):
        return ""
    text = jobs.parse_text(name, value, max_len=_MAX_LEN[name], required=False)
    return text.replace("\r\n", "\n").replace("\\n", "\n")


def check_glyphs(brand: Any, texts: dict[str, str]) -> None:
    """Refuse a character the field's font cannot draw, naming both."""
    from zmm.compose import fonts

    for name in TEXT_FIELDS:
        if not texts.get(name):
            continue
        role = "title" if name == "title" else "text"
        covered = fonts.coverage(fonts.read(brand.font_of(name)))
        missing = fonts.first_missing(texts[name], covered)
        if missing is not None:
            raise InvalidInput(name, f"the {role} font of brand {brand.name!r} "
                               f"({brand.font_label(name)}) has no glyph for "
                               f"{fonts.describe(missing)}; use a brand whose font has it")


def compose(png: bytes, composition: dict[str, Any], style: str | None,
            brands_dir: Path, notes: list[str] | None = None) -> bytes:
    """`png` with the composition's text in its brand's layout for `style`; a
    note in `notes` when the image is too small for all of the text."""
    from zmm.compose import brands, render

    brand = brands.load(str(composition.get("brand") or brands.DEFAULT), brands_dir)
    texts = {name: str(composition[name]) for name in TEXT_FIELDS if composition.get(name)}
    check_glyphs(brand, texts)
    return render.compose_png(png, texts, brand, style, notes)


def plain_name(relative: str) -> str:
    """images/2026-12/<id>.png -> images/2026-12/<id>.plain.png"""
    stem = relative[:-4] if relative.lower().endswith(".png") else relative
    return stem + PLAIN_SUFFIX
