"""Drawing a brand's band, logo and text onto an image with Pillow.

Text is drawn onto a layer the size of its box and only then pasted, so no
glyph can land outside the box whatever a font's metrics say. The output is
a PNG whose bytes depend only on the image, the text and the brand; the
source's text chunks (ComfyUI's `prompt`, zmm's own) are carried over.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from zmm.compose import fonts
from zmm.compose.brands import Brand
from zmm.compose.layout import Box, Layout, Line, band_box, fit, shortfall, split_logo, text_box
from zmm.errors import JobFailed


class Fonts:
    """The brand's fonts by role and size, with Pillow's measurements."""

    def __init__(self, brand: Brand) -> None:
        self.brand = brand
        self._digests: dict[str, str] = {}

    def get(self, role: str, size: int) -> Any:
        source = self.brand.font_of(role)
        if source not in self._digests:
            self._digests[source] = fonts.digest(fonts.read(source))
        return fonts.at_size(source, max(1, size), self._digests[source])

    def measure(self, role: str, size: int, text: str) -> float:
        return float(self.get(role, size).getlength(text))

    def line_height(self, role: str, size: int) -> int:
        ascent, descent = self.get(role, size).getmetrics()
        return max(1, ascent + descent)


def plan(brand: Brand, style: str | None, width: int, height: int, texts: dict[str, str],
         logo_size: tuple[int, int] | None, measurer: Fonts) -> tuple[Layout, Box, Box,
                                                                       Box | None, list[Line]]:
    """(layout, band, text box, logo box, lines) for an image of this size."""
    chosen = brand.layout_for(style)
    band = band_box(chosen, width, height)
    inner = text_box(chosen, band, width, height)
    area, logo_box = split_logo(inner, logo_size, chosen.align, brand.logo_height)
    lines = fit(texts, area, chosen, min(width, height), measurer.measure, measurer.line_height)
    return chosen, band, area, logo_box, lines


def compose_png(png: bytes, texts: dict[str, str], brand: Brand, style: str | None,
                notes: list[str] | None = None) -> bytes:
    """The image `png` with the brand's band and `texts` (title, subtitle, footer);
    what of the text did not fit is said in `notes` (layout.shortfall)."""
    from PIL import Image, ImageDraw, PngImagePlugin

    try:
        source = Image.open(BytesIO(png))
        source.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise JobFailed(f"the image to compose onto cannot be read ({exc})") from None
    info = {key: value for key, value in getattr(source, "text", {}).items()}
    had_alpha = source.mode in ("RGBA", "LA") or "transparency" in source.info
    canvas = source.convert("RGBA")
    logo = _logo(brand)
    measurer = Fonts(brand)
    chosen, band, area, logo_box, lines = plan(brand, style, canvas.width, canvas.height,
                                               texts, logo.size if logo else None, measurer)
    note = shortfall(texts, lines)
    if note is not None and notes is not None:
        notes.append(note)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    red, green, blue, alpha = brand.band
    draw.rectangle((band.left, band.top, band.right - 1, band.bottom - 1),
                   fill=(red, green, blue, round(alpha * chosen.opacity)))
    if brand.accent is not None:
        _accent(draw, chosen, band, brand.accent, min(canvas.width, canvas.height))
    canvas = Image.alpha_composite(canvas, overlay)
    if logo is not None and logo_box is not None and logo_box.width and logo_box.height:
        fitted = logo.resize((logo_box.width, logo_box.height), Image.Resampling.LANCZOS)
        canvas.alpha_composite(fitted, (logo_box.left, logo_box.top))
    if lines and area.width and area.height:
        canvas.alpha_composite(_text_layer(lines, area, brand, measurer), (area.left, area.top))
    result = canvas if had_alpha else canvas.convert("RGB")
    chunks = PngImagePlugin.PngInfo()
    for key, value in sorted(info.items()):
        if isinstance(value, str):
            chunks.add_text(key, value)
    out = BytesIO()
    result.save(out, "PNG", pnginfo=chunks, compress_level=6)
    return out.getvalue()


def _accent(draw: Any, chosen: Layout, band: Box, colour: tuple[int, int, int, int],
            short_side: int) -> None:
    """A thin bar on the band's edge that faces the image."""
    thickness = max(2, round(short_side * 0.006))
    if chosen.kind == "band" and chosen.position == "top":
        box = (band.left, band.bottom - thickness, band.right - 1, band.bottom - 1)
    elif chosen.kind == "band":
        box = (band.left, band.top, band.right - 1, band.top + thickness - 1)
    else:
        box = (band.left, band.top, band.left + thickness - 1, band.bottom - 1)
    draw.rectangle(box, fill=colour)


def _text_layer(lines: list[Line], area: Box, brand: Brand, measurer: Fonts) -> Any:
    from PIL import Image, ImageDraw

    layer = Image.new("RGBA", (area.width, area.height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    colours = {"title": brand.title, "subtitle": brand.subtitle, "footer": brand.footer}
    for line in lines:
        draw.text((line.x, line.y), line.text, font=measurer.get(line.role, line.size),
                  fill=colours[line.role], anchor="la")
    return layer


def _logo(brand: Brand) -> Any:
    if brand.logo is None:
        return None
    from PIL import Image

    try:
        with Image.open(brand.logo) as opened:
            return opened.convert("RGBA")
    except OSError as exc:
        raise JobFailed(f"brand {brand.name}: the logo {brand.logo} no longer loads "
                        f"({exc})") from None
