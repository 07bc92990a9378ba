"""Bad input for the graph parts' fields (--lora, --init-image, --denoise,
--upscale, --upscale-denoise, and their --from columns): one line naming the
field, exit 2 (3 for a missing file), nothing written: no job, no copy."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from tests.cli.test_cli import job_count


def _png_header_only(path, width, height) -> None:
    """A PNG whose header claims width x height (Pillow reads sizes from it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture
def images(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 9000, 8000)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (32, 32)).save(tiny)
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (64, 64)).save(gif)
    return {"good": str(good), "text": str(text), "huge": str(huge), "tiny": str(tiny),
            "gif": str(gif), "missing": str(tmp_path / "gone.png")}


BAD = [
    (["--lora", "a.safetensors:abc"], 2, "lora: strength 'abc' is not a number"),
    (["--lora", "a.safetensors:300"], 2, "lora: NAME[:STRENGTH]"),
    (["--lora", "../evil.safetensors"], 2, "lora: NAME[:STRENGTH]"),
    (["--init-image", "{good}", "--denoise", "0"], 2,
     "denoise: a number greater than 0 and at most 1"),
    (["--init-image", "{good}", "--denoise", "1.5"], 2, "denoise: a number greater than 0"),
    (["--init-image", "{good}", "--denoise", "much"], 2, "denoise: a number greater than 0"),
    (["--denoise", "0.5"], 2, "denoise: only with --init-image"),
    (["--init-image", "{good}", "--aspect", "16:9"], 2, "aspect: not with --init-image"),
    (["--init-image", "{text}"], 2, "init-image: a PNG, JPEG or WebP image;"),
    (["--init-image", "{huge}"], 2, "init-image: at most 64 megapixels;"),
    (["--init-image", "{tiny}"], 2, "init-image: each side from 64 to 16384 pixels"),
    (["--init-image", "{gif}"], 2, "is GIF"),
    (["--init-image", "{missing}"], 3, "init-image:"),
    (["--upscale", "1"], 2, "upscale: a number greater than 1 and at most 4"),
    (["--upscale", "4.5"], 2, "upscale: a number greater than 1 and at most 4"),
    (["--upscale", "two"], 2, "upscale: a number greater than 1 and at most 4"),
    (["--upscale", "2", "--upscale-denoise", "0"], 2, "upscale-denoise: a number greater than 0"),
    (["--upscale-denoise", "0.3"], 2, "upscale-denoise: only with --upscale"),
    (["--lora", "a.safetensors", "--backend", "cloud"], 2,
     "backend: --lora, --init-image and --upscale run only on ComfyUI"),
    (["--upscale", "2", "--allow-cloud"], 2, "allow-cloud: --lora, --init-image and --upscale"),
]


@pytest.mark.parametrize("args,code,message", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_part_input_names_the_field_and_writes_nothing(cli, settings, images, args, code,
                                                           message):
    args = [arg.format(**images) for arg in args]
    result = cli("generate", "x", "--size", "64x64", *args, "--no-wait") \
        if "--aspect" not in args else cli("generate", "x", *args, "--no-wait")
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert result.stdout == ""
    assert job_count(settings) == 0
    assert not (settings.assets_dir / "inputs").exists()


def test_from_file_takes_loras_as_a_list_or_a_semicolon_string(cli, settings, tmp_path, images):
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "one", "lora": ["a.safetensors:0.5", '
                     '{"name": "b.safetensors", "strength": -1}]}\n'
                     '{"prompt": "two", "lora": "c.safetensors;d.safetensors:2"}\n'
                     f'{{"prompt": "three", "init_image": "{images["good"]}", "denoise": 0.3}}\n')
    result = cli("generate", "--from", str(batch), "--no-wait", "--size", "64x64")
    assert result.exit_code == 0, result.stderr
    from zmm.store import Store

    with Store(settings.spool_path) as store:
        rows = [store.get(job_id).request.as_dict() for job_id in result.stdout.split()]
    assert rows[0]["loras"] == [{"name": "a.safetensors", "strength": 0.5},
                                {"name": "b.safetensors", "strength": -1.0}]
    assert rows[1]["loras"] == [{"name": "c.safetensors", "strength": 1.0},
                                {"name": "d.safetensors", "strength": 2.0}]
    assert rows[2]["denoise"] == 0.3 and rows[2]["init_image"]["file"].startswith("inputs/")
    assert (settings.assets_dir / rows[2]["init_image"]["file"]).is_file()


def test_a_bad_line_in_from_names_the_line_and_keeps_no_copy(cli, settings, tmp_path, images):
    batch = tmp_path / "jobs.csv"
    batch.write_text(f"prompt,init_image,upscale\none,{images['good']},\ntwo,,9\n")
    result = cli("generate", "--from", str(batch), "--no-wait")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: line 3: upscale: a number greater than 1")
    assert job_count(settings) == 0 and not (settings.assets_dir / "inputs").exists()


def test_history_show_lists_the_parts(cli, settings, images):
    result = cli("generate", "x", "--init-image", images["good"], "--denoise", "0.25",
                 "--lora", "a.safetensors:0.5", "--upscale", "1.5", "--no-wait")
    assert result.exit_code == 0, result.stderr
    shown = cli("history", "show", result.stdout.strip())
    assert shown.exit_code == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert "a.safetensors:0.5" in lines["loras"]
    assert "good.png, 64x64) denoise 0.25" in lines["init_image"]
    assert "x1.5, denoise 0.5, nearest-exact" in lines["upscale"]
