"""Composition at the pixel level (zmm.compose): the band is the only place the
composed image differs from the plain one, text stays inside its box however
long it is, the same input gives the same bytes, and every style's default
layout holds at every aspect ratio zmm generates."""

from __future__ import annotations

import functools
import random
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from zmm import compose, jobs
from zmm.compose import brands, fonts, layout, render
from zmm.errors import InvalidInput

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SIZES = sorted({size for table in jobs.ASPECTS.values() for size in table.values()})
LONG = ("An extraordinarily long report title that keeps going well past any sensible length "
        "so that it must wrap over many lines and shrink, and even then perhaps be cut ") * 4


@functools.lru_cache(maxsize=64)
def noise_png(width: int, height: int, seed: int = 1, mode: str = "RGB") -> bytes:
    """A busy image (random 4x4-pixel blocks, which PNG still compresses), so any
    drawing shows as a difference."""
    rng = random.Random(seed)
    small = (-(-width // 4), -(-height // 4))
    image = Image.frombytes(mode, small, rng.randbytes(small[0] * small[1] * len(mode)))
    image = image.resize((small[0] * 4, small[1] * 4), Image.Resampling.NEAREST)
    image = image.crop((0, 0, width, height))
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def decoded(png: bytes) -> Image.Image:
    image = Image.open(BytesIO(png))
    image.load()
    return image


def write_brand(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def default_brand(tmp_path) -> brands.Brand:
    return brands.load("default", tmp_path / "brands")


def boxes(brand, style, width, height, texts, logo_size=None):
    _, band, area, logo_box, lines = render.plan(brand, style, width, height, texts, logo_size,
                                                 render.Fonts(brand))
    return band, area, logo_box, lines


def inside(inner: tuple[int, int, int, int], box: layout.Box) -> bool:
    left, top, right, bottom = inner
    return left >= box.left and top >= box.top and right <= box.right and bottom <= box.bottom


TEXTS = {"title": "Quarterly GPU fleet report", "subtitle": "Utilisation and cost, Q3",
         "footer": "internal - platform team"}


@pytest.mark.parametrize("style", jobs.STYLES)
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_the_band_is_the_only_difference_at_every_style_and_aspect(tmp_path, style, size):
    width, height = size
    brand = default_brand(tmp_path)
    plain = noise_png(width, height)
    composed = decoded(compose.compose(plain, dict(TEXTS, brand="default"), style,
                                       tmp_path / "brands"))
    assert composed.size == (width, height)
    band, area, _, lines = boxes(brand, style, width, height, TEXTS)
    changed = ImageChops.difference(decoded(plain), composed).getbbox()
    assert changed is not None and inside(changed, band), (changed, band)
    # The band covers its box (its fill changes it all, not only where text is).
    assert changed == (band.left, band.top, band.right, band.bottom)
    assert [line.role for line in lines][:1] == ["title"] and {"subtitle", "footer"} <= {
        line.role for line in lines}
    assert min(line.size for line in lines) >= brand.layout_for(style).min_px


def transparent_band(tmp_path, **colours) -> brands.Brand:
    """A brand whose band is invisible and has no accent bar: only text changes pixels."""
    write_brand(tmp_path / "brands", "clear", """
[fonts]
title = "builtin"
[colors]
band = "#00000000"
title = "#ff00ff"
[layout]
opacity = 0.0
""")
    return brands.load("clear", tmp_path / "brands")


@pytest.mark.parametrize("style", jobs.STYLES)
@pytest.mark.parametrize("size", [(1344, 768), (432, 768), (512, 512)],
                         ids=["16:9", "9:16-sd15", "1:1-sd15"])
def test_long_text_shrinks_and_stays_inside_its_box(tmp_path, style, size):
    width, height = size
    brand = transparent_band(tmp_path)
    texts = {"title": LONG * 3, "subtitle": LONG * 3, "footer": LONG * 3}
    plain = noise_png(width, height, seed=7)
    composed = decoded(render.compose_png(plain, texts, brand, style))
    _, area, _, lines = boxes(brand, style, width, height, texts)
    changed = ImageChops.difference(decoded(plain), composed).getbbox()
    assert changed is not None and inside(changed, area), (changed, area)
    measure = render.Fonts(brand)
    for line in lines:
        assert line.x >= 0 and line.x + measure.measure(line.role, line.size, line.text) \
            <= area.width + 0.5
        assert line.y + measure.line_height(line.role, line.size) <= area.height
    assert lines[-1].text.endswith(layout.ELLIPSIS)  # that much text cannot all fit


def test_a_short_title_is_drawn_larger_than_a_long_one(tmp_path):
    brand = default_brand(tmp_path)
    short = boxes(brand, "report-cover", 1344, 768, {"title": "Q3"})[3]
    long = boxes(brand, "report-cover", 1344, 768, {"title": LONG[:200]})[3]
    assert short[0].size > long[0].size and len(long) > 1


def test_the_same_image_text_and_brand_give_the_same_bytes(tmp_path):
    plain = noise_png(640, 480, seed=3)
    composition = dict(TEXTS, brand="default")
    first = compose.compose(plain, composition, "report-cover", tmp_path / "brands")
    second = compose.compose(plain, composition, "report-cover", tmp_path / "brands")
    assert first == second
    other = compose.compose(plain, dict(composition, title="Another title"), "report-cover",
                            tmp_path / "brands")
    assert other != first


def test_an_alpha_image_keeps_its_alpha_and_text_chunks_survive(tmp_path):
    image = Image.frombytes("RGBA", (256, 256), random.Random(2).randbytes(256 * 256 * 4))
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", '{"3": {}}')
    out = BytesIO()
    image.save(out, "PNG", pnginfo=info)
    composed = decoded(compose.compose(out.getvalue(), {"title": "T", "brand": "default"},
                                       "none", tmp_path / "brands"))
    assert composed.mode == "RGBA" and composed.text["prompt"] == '{"3": {}}'


@pytest.mark.skipif(not DEJAVU.exists(), reason="needs DejaVu Sans")
def test_non_ascii_text_is_drawn_with_a_font_that_has_it(tmp_path):
    write_brand(tmp_path / "brands", "dejavu", f"""
[fonts]
title = "{DEJAVU}"
[colors]
band = "#202020"
title = "#ffffff"
""")
    composition = {"title": "Café Zürich – Ærø", "subtitle": "Ελληνικά, кириллица",
                   "brand": "dejavu"}
    assert compose.from_request(composition, tmp_path / "brands") == dict(composition)
    plain = noise_png(512, 512)
    composed = compose.compose(plain, composition, "report-cover", tmp_path / "brands")
    assert decoded(composed).size == (512, 512)
    with pytest.raises(InvalidInput) as caught:
        compose.from_request({"title": "中文", "brand": "dejavu"}, tmp_path / "brands")
    assert caught.value.field == "title" and "U+4E2D" in caught.value.allowed


def test_the_default_font_refuses_a_character_it_lacks_naming_field_and_character(tmp_path):
    with pytest.raises(InvalidInput) as caught:
        compose.from_request({"title": "ok", "footer": "Café"}, tmp_path / "brands")
    assert caught.value.field == "footer"
    assert "'é' (U+00E9 LATIN SMALL LETTER E WITH ACUTE)" in caught.value.allowed
    assert fonts.BUILTIN_NAME in caught.value.allowed


def test_a_logo_is_drawn_inside_the_band_beside_the_text(tmp_path):
    folder = tmp_path / "brands"
    folder.mkdir()
    Image.new("RGBA", (200, 100), (0, 255, 0, 255)).save(folder / "logo.png")
    write_brand(folder, "logo", """
[fonts]
title = "builtin"
[colors]
band = "#000000"
title = "#ffffff"
[logo]
file = "logo.png"
""")
    brand = brands.load("logo", folder)
    plain = noise_png(1024, 1024)
    composed = decoded(render.compose_png(plain, {"title": LONG[:120]}, brand, "report-cover"))
    band, area, logo_box, _ = boxes(brand, "report-cover", 1024, 1024, {"title": LONG[:120]},
                                    (200, 100))
    assert logo_box is not None and inside((logo_box.left, logo_box.top, logo_box.right,
                                            logo_box.bottom), band)
    assert logo_box.left > area.right  # beside the text, never under it
    middle = ((logo_box.left + logo_box.right) // 2, (logo_box.top + logo_box.bottom) // 2)
    assert composed.convert("RGB").getpixel(middle) == (0, 255, 0)


# -- layout, pure -------------------------------------------------------------------


def ten_px(role: str, size: int, text: str) -> float:
    return 10.0 * len(text) * size / 10


def test_wrap_breaks_at_spaces_and_inside_words_too_long_for_a_line():
    lines = layout.wrap("aa bbb cccccccccccc d", 50, lambda text: len(text) * 10 <= 50)
    assert lines == ["aa", "bbb", "ccccc", "ccccc", "cc d"]
    assert all(len(line) * 10 <= 50 for line in lines)
    assert layout.wrap("one\ntwo", 500, lambda text: True) == ["one", "two"]


def test_fit_picks_the_largest_size_that_fits_then_cuts_with_an_ellipsis():
    box = layout.Box(0, 0, 200, 40)
    chosen = layout.Layout(title_size=0.5, min_px=5)
    lines = layout.fit({"title": "abcd"}, box, chosen, 100, ten_px, lambda role, size: size)
    assert len(lines) == 1 and lines[0].size == 40  # the box's height, under 0.5 x 100
    cut = layout.fit({"title": "word " * 200}, box, chosen, 100, ten_px,
                     lambda role, size: size)
    assert all(line.size == 5 for line in cut) and cut[-1].text.endswith(layout.ELLIPSIS)
    assert max(line.y + line.size for line in cut) <= 40


@pytest.mark.parametrize("style", [*jobs.STYLES, "some-future-style"])
def test_every_style_has_a_layout_whose_band_lies_on_the_image(style):
    chosen = layout.for_style(style)
    for width, height in SIZES:
        band = layout.band_box(chosen, width, height)
        assert 0 <= band.left < band.right <= width and 0 <= band.top < band.bottom <= height


def test_panels_sit_at_their_corner_within_the_margin():
    panel = layout.Layout(kind="panel", position="top-right", width=0.4, height=0.2, margin=0.05)
    box = layout.band_box(panel, 1000, 500)
    assert (box.right, box.top) == (1000 - 25, 25) and box.width == 400 and box.height == 100


def test_shortfall_names_what_was_left_out_and_what_was_shortened():
    def line(role, text):
        return layout.Line(role, 10, text, 0, 0)

    texts = {"title": "A long title here", "subtitle": "More", "footer": "Small print"}
    assert layout.shortfall(texts, [line("title", "A long"), line("title", "title here"),
                                    line("subtitle", "More"), line("footer", "Small print")]) is None
    assert layout.shortfall(texts, [line("title", "A long ti" + layout.ELLIPSIS)]) == (
        "the image is too small for all of its text: title shortened, subtitle left out, "
        "footer left out")
    assert layout.shortfall({"title": "T", "footer": "  "}, []) == (
        "the image is too small for all of its text: title left out")


def test_a_tiny_image_with_a_long_title_says_so_and_a_short_one_does_not(tmp_path):
    notes: list[str] = []
    compose.compose(noise_png(64, 64), {"title": LONG, "brand": "default"}, "report-cover",
                    tmp_path / "brands", notes)
    assert notes == ["the image is too small for all of its text: title shortened"]
    roomy: list[str] = []
    compose.compose(noise_png(1024, 1024), {"title": "Q3", "brand": "default"}, "report-cover",
                    tmp_path / "brands", roomy)
    assert roomy == []
