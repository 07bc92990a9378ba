"""Where text goes on an image, and at what size: the layout of a style (a band
across the image or a panel inside it), the boxes it gives an image of a given
size, word wrapping to a width and shrinking text until it fits its box.

Pure: measuring is a function passed in (zmm.compose.render gives Pillow's), so
no font, image or file is touched here. Nothing placed can leave its box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

KINDS = ("band", "panel")
BAND_POSITIONS = ("top", "bottom")
PANEL_POSITIONS = ("top-left", "top", "top-right", "center", "bottom-left", "bottom",
                   "bottom-right")
ALIGNS = ("left", "center", "right")
ROLES = ("title", "subtitle", "footer")
ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class Layout:
    """One style's layout. Fractions are of the image: `width`/`height` of its
    sides, `margin` (a panel's distance from the edges), `padding` (inside the
    box) and `title_size` (the largest title) of its shorter side."""

    kind: str = "band"
    position: str = "bottom"
    width: float = 1.0  # a band always spans the image
    height: float = 0.2
    margin: float = 0.04
    padding: float = 0.04
    opacity: float = 0.75  # of the band colour
    align: str = "left"
    title_size: float = 0.07
    subtitle_scale: float = 0.55  # of the title's size
    footer_scale: float = 0.38
    min_px: int = 8  # text never shrinks below this; what still does not fit is cut


# The layout every style gets unless a brand says otherwise.
STYLE_LAYOUTS: dict[str, Layout] = {
    "report-cover": Layout(position="bottom", height=0.30, padding=0.045, opacity=0.78,
                           title_size=0.085),
    "dashboard-thumbnail": Layout(position="bottom", height=0.26, padding=0.04, opacity=0.88,
                                  title_size=0.11, subtitle_scale=0.5, footer_scale=0.36),
    "infographic": Layout(position="top", height=0.20, padding=0.035, opacity=0.85,
                          align="center", title_size=0.075),
    "technical-diagram": Layout(position="bottom", height=0.14, padding=0.025, opacity=0.9,
                                title_size=0.05),
}
FALLBACK = Layout()  # `none` and any style without its own


def for_style(style: str | None) -> Layout:
    return STYLE_LAYOUTS.get(style or "none", FALLBACK)


# Each key a brand file may set in [layout], with what it allows (checked by zmm.compose.brands).
KEY_RULES: dict[str, tuple[str, Any]] = {
    "kind": ("choice", KINDS), "position": ("choice", BAND_POSITIONS + PANEL_POSITIONS),
    "width": ("fraction", (0.05, 1.0)), "height": ("fraction", (0.03, 1.0)),
    "margin": ("fraction", (0.0, 0.4)), "padding": ("fraction", (0.0, 0.4)),
    "opacity": ("fraction", (0.0, 1.0)), "align": ("choice", ALIGNS),
    "title_size": ("fraction", (0.005, 0.5)), "subtitle_scale": ("fraction", (0.05, 1.0)),
    "footer_scale": ("fraction", (0.05, 1.0)), "min_px": ("integer", (1, 200)),
}


def with_overrides(base: Layout, values: dict[str, Any]) -> Layout:
    """`base` with checked values; a band's position must be top or bottom."""
    layout = replace(base, **values)
    if layout.kind == "band" and layout.position not in BAND_POSITIONS:
        raise ValueError(f"position: a band is at one of {', '.join(BAND_POSITIONS)}")
    return layout


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return max(0, self.right - self.left)

    @property
    def height(self) -> int:
        return max(0, self.bottom - self.top)

    def inset(self, amount: int) -> Box:
        amount = max(0, min(amount, (self.width - 1) // 2, (self.height - 1) // 2))
        return Box(self.left + amount, self.top + amount, self.right - amount,
                   self.bottom - amount)


def band_box(layout: Layout, width: int, height: int) -> Box:
    """The filled band or panel of `layout` on a `width` x `height` image."""
    box_h = max(1, min(height, round(height * layout.height)))
    if layout.kind == "band":
        top = 0 if layout.position == "top" else height - box_h
        return Box(0, top, width, top + box_h)
    box_w = max(1, min(width, round(width * layout.width)))
    margin = round(min(width, height) * layout.margin)
    vertical, _, horizontal = layout.position.partition("-")
    if layout.position in ("top", "bottom", "center"):
        vertical, horizontal = layout.position, "center"
    left = {"left": margin, "right": width - margin - box_w}.get(horizontal,
                                                                 (width - box_w) // 2)
    top = {"top": margin, "bottom": height - margin - box_h}.get(vertical, (height - box_h) // 2)
    left, top = max(0, min(left, width - box_w)), max(0, min(top, height - box_h))
    return Box(left, top, left + box_w, top + box_h)


def text_box(layout: Layout, band: Box, width: int, height: int) -> Box:
    """The band less its padding: where text (and the logo) may be drawn."""
    return band.inset(round(min(width, height) * layout.padding))


def split_logo(inner: Box, logo_size: tuple[int, int] | None, align: str,
               share: float = 0.6) -> tuple[Box, Box | None]:
    """(text box, logo box): the logo `share` of the box's height, at most a
    third of its width, on the side the text is not aligned to."""
    if logo_size is None or inner.width < 4 or inner.height < 4:
        return inner, None
    logo_w, logo_h = logo_size
    target_h = max(1, round(inner.height * share))
    target_w = max(1, round(logo_w * target_h / max(1, logo_h)))
    if target_w > inner.width // 3:
        target_w = max(1, inner.width // 3)
        target_h = max(1, min(target_h, round(logo_h * target_w / max(1, logo_w))))
    gap = max(1, round(inner.height * 0.12))
    top = inner.top + (inner.height - target_h) // 2
    if align == "right":
        logo = Box(inner.left, top, inner.left + target_w, top + target_h)
        return Box(logo.right + gap, inner.top, inner.right, inner.bottom), logo
    logo = Box(inner.right - target_w, top, inner.right, top + target_h)
    return Box(inner.left, inner.top, logo.left - gap, inner.bottom), logo


# measure(role, size_px, text) -> width in px; line_height(role, size_px) -> px.
Measure = Callable[[str, int, str], float]
LineHeight = Callable[[str, int], int]


@dataclass(frozen=True)
class Line:
    role: str
    size: int
    text: str
    x: int  # relative to the text box
    y: int


def wrap(text: str, max_width: int, fits: Callable[[str], bool]) -> list[str]:
    """Greedy word wrap; explicit newlines break too, and a word too long for a
    line is broken between characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if fits(candidate):
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            for char in word:  # the word alone may still be too long
                if current and not fits(current + char):
                    lines.append(current)
                    current = ""
                current += char
        if current:
            lines.append(current)
    return lines


def fit(texts: dict[str, str], box: Box, layout: Layout, image_short_side: int,
        measure: Measure, line_height: LineHeight) -> list[Line]:
    """The lines of `texts` (by role) at the largest title size that fits `box`,
    placed relative to it; below `layout.min_px` lines are cut with an ellipsis."""
    present = [role for role in ROLES if texts.get(role, "").strip()]
    if not present or box.width < 1 or box.height < 1:
        return []
    largest = max(layout.min_px, round(image_short_side * layout.title_size))
    low, high = layout.min_px, largest
    while low < high:  # the largest size whose lines fit; `low` always fits or is the minimum
        middle = (low + high + 1) // 2
        if _height(_wrapped(texts, present, middle, layout, box, measure), line_height) \
                <= box.height:
            low = middle
        else:
            high = middle - 1
    blocks = _wrapped(texts, present, low, layout, box, measure)
    if _height(blocks, line_height) > box.height:
        blocks = _cut(blocks, box, measure, line_height)
    return _place(blocks, box, layout, measure, line_height)


def shortfall(texts: dict[str, str], lines: list[Line]) -> str | None:
    """What `fit` could not draw of `texts`, as a note for the job (None: all of it):
    "the image is too small for all of its text: subtitle left out, title shortened"."""
    said = []
    for role in ROLES:
        wanted = "".join(texts.get(role, "").split())
        if not wanted:
            continue
        drawn = "".join("".join(line.text for line in lines if line.role == role).split())
        if not drawn:
            said.append(f"{role} left out")
        elif drawn != wanted:
            said.append(f"{role} shortened")
    return "the image is too small for all of its text: " + ", ".join(said) if said else None


def _sizes(title_px: int, layout: Layout) -> dict[str, int]:
    return {"title": title_px,
            "subtitle": max(layout.min_px, round(title_px * layout.subtitle_scale)),
            "footer": max(layout.min_px, round(title_px * layout.footer_scale))}


def _wrapped(texts: dict[str, str], present: list[str], title_px: int, layout: Layout,
             box: Box, measure: Measure) -> list[tuple[str, int, list[str]]]:
    sizes = _sizes(title_px, layout)
    blocks = []
    for role in present:
        def fits(line: str, role: str = role) -> bool:
            return measure(role, sizes[role], line) <= box.width

        blocks.append((role, sizes[role], wrap(texts[role].strip(), box.width, fits)))
    return blocks


def _gap(size: int) -> int:
    return round(size * 0.35)


def _height(blocks: list[tuple[str, int, list[str]]], line_height: LineHeight) -> int:
    total = sum(line_height(role, size) * len(lines) for role, size, lines in blocks)
    return total + sum(_gap(size) for _, size, _ in blocks[1:])


def _cut(blocks: list[tuple[str, int, list[str]]], box: Box, measure: Measure,
         line_height: LineHeight) -> list[tuple[str, int, list[str]]]:
    """Keep the lines that fit, in reading order; the last kept line ends in an ellipsis."""
    kept: list[tuple[str, int, list[str]]] = []
    used = 0
    for role, size, lines in blocks:
        gap = _gap(size) if kept else 0
        room = (box.height - used - gap) // max(1, line_height(role, size))
        if room <= 0:
            break
        kept.append((role, size, lines[:room]))
        used += gap + line_height(role, size) * min(room, len(lines))
        if room < len(lines):
            break
    if kept:
        role, size, lines = kept[-1]
        last = lines[-1]
        while last and measure(role, size, last + ELLIPSIS) > box.width:
            last = last[:-1]
        kept[-1] = (role, size, [*lines[:-1], last.rstrip() + ELLIPSIS])
    return kept


def _place(blocks: list[tuple[str, int, list[str]]], box: Box, layout: Layout,
           measure: Measure, line_height: LineHeight) -> list[Line]:
    """Lines centred as a block in the box's height, aligned in its width."""
    y = max(0, (box.height - _height(blocks, line_height)) // 2)
    placed: list[Line] = []
    for number, (role, size, lines) in enumerate(blocks):
        if number:
            y += _gap(size)
        for text in lines:
            spare = max(0, box.width - round(measure(role, size, text)))
            x = {"left": 0, "center": spare // 2, "right": spare}[layout.align]
            placed.append(Line(role, size, text, x, y))
            y += line_height(role, size)
    return placed
