"""Output files: paths never leave the assets root; the zmm chunk is added
without re-encoding the PNG and reads back; writes are atomic."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from zmm import assets
from zmm.errors import InvalidInput


def png(size=(8, 6), text=None) -> bytes:
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize("relative", ["../x.png", "/etc/passwd", "images/../../x", "C:\\x.png",
                                      "", ".", "a/../../b"])
def test_safe_path_refuses_escapes(tmp_path, relative):
    with pytest.raises(InvalidInput):
        assets.safe_path(tmp_path, relative)


def test_safe_path_refuses_symlinks_out_of_the_root(tmp_path):
    root, outside = tmp_path / "assets", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "images").symlink_to(outside)
    with pytest.raises(InvalidInput, match="symlink"):
        assets.safe_path(root, "images/2026-11/x.png")
    assert assets.safe_path(root, "thumbs/x.png") == root / "thumbs" / "x.png"


def test_zmm_chunk_is_added_keeping_comfyuis_bytes_and_reads_back():
    original = png(text={"prompt": json.dumps({"3": {"class_type": "KSampler"}})})
    meta = {"job_id": "mmg-1", "prompt": "ünïcode ✓", "seed": 42}
    tagged = assets.add_text_chunk(original, "zmm", json.dumps(meta))
    chunks = assets.read_text_chunks(tagged)
    assert json.loads(chunks["zmm"]) == meta and "KSampler" in chunks["prompt"]
    assert tagged[:len(original) - 12] == original[:-12]  # everything before IEND untouched
    image = Image.open(io.BytesIO(tagged))
    image.load()  # Pillow validates every CRC
    assert image.size == (8, 6) and json.loads(image.text["zmm"])["seed"] == 42
    again = assets.add_text_chunk(tagged, "zmm", json.dumps({"seed": 1}))
    assert json.loads(assets.read_text_chunks(again)["zmm"]) == {"seed": 1}  # replaced, not doubled


def test_save_output_is_atomic_private_and_measured(tmp_path):
    saved = assets.save_output(tmp_path, "images/2026-11/mmg-1.png", png((16, 8)), {"seed": 1})
    assert (saved.width, saved.height) == (16, 8) and saved.size == saved.path.stat().st_size
    assert oct(saved.path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in saved.path.parent.iterdir()] == ["mmg-1.png"]  # no temp file left


def test_not_a_png_is_refused():
    with pytest.raises(Exception, match="not a PNG"):
        assets.add_text_chunk(b"GIF89a....", "zmm", "{}")


def test_relative_names_for_several_outputs():
    assert assets.relative_name("mmg-1", "2026-11-23T10:00:00.000000Z", 0) == "images/2026-11/mmg-1.png"
    assert assets.relative_name("mmg-1", "2026-11-23T10:00:00.000000Z", 2) == "images/2026-11/mmg-1-2.png"
