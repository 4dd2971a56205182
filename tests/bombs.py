"""Hostile images, made on the spot (shared by tests/test_ocr.py, tests/test_cli.py and
bench/hostile_sessions.py): small files whose headers announce, or whose data inflates to,
far more pixels than a screenshot has."""

from __future__ import annotations

import io
import struct
import zlib


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png_bomb(width: int, height: int, rows: int | None = None, row_width: int | None = None
             ) -> bytes:
    """A grey 8-bit PNG whose header says width x height and whose IDAT inflates to `rows`
    rows of `row_width` white pixels (default: exactly what the header says). Each row is
    compressed once and repeated via a stream that zlib makes very small (about 1:1000)."""
    rows = height if rows is None else rows
    row_width = width if row_width is None else row_width
    row = b"\x00" + b"\xff" * row_width
    z = zlib.compressobj(9)
    parts = []
    block = row * max(1, (1 << 20) // len(row))  # about 1 MiB of rows per call
    per_block = len(block) // len(row)
    left = rows
    while left > 0:
        n = min(left, per_block)
        parts.append(z.compress(block if n == per_block else row * n))
        left -= n
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int, quality: int = 90) -> bytes:
    """A real baseline JPEG whose start-of-frame says width x height: a small white image,
    saved by Pillow, with its SOF dimensions rewritten (a decoder fills the rest grey)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, "JPEG", quality=quality)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def jpeg_white(width: int, height: int) -> bytes:
    """A real JPEG of width x height white pixels (compresses to about 1 byte per 60 px)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def pillow_image(fmt: str, width: int, height: int, frames: int = 1) -> bytes:
    """A real blank image in `fmt` (GIF, WEBP, TIFF; TIFF may have several pages)."""
    from PIL import Image

    buf = io.BytesIO()
    im = Image.new("L", (width, height), 255)
    extra: dict[str, object] = {}
    if fmt == "TIFF":
        extra = {"compression": "tiff_adobe_deflate"}
        if frames > 1:
            extra["save_all"] = True
            extra["append_images"] = [im] * (frames - 1)
    if fmt == "WEBP":
        extra = {"lossless": True}
    im.save(buf, fmt, **extra)
    return buf.getvalue()
