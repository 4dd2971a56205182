"""An image as grey pixels (relay.greyimage): the size limit, decoding with Pillow (every PNG
filter and colour type, 16-bit, alpha over white, JPEG/WebP/TIFF), the 2x magnifier, and hostile
data (a zlib bomb, a truncated PNG, not an image) refused in bounded memory."""

from __future__ import annotations

import io
import random
import subprocess
import sys
from pathlib import Path

import bombs
import pytest
from pngs import encode_png

from relay import greyimage
from relay.greyimage import MAX_PIXELS, MAX_SIDE, too_large

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("width,height,frames,refused", [
    (1, 1, 1, False),
    (5_000, 5_000, 1, False),  # exactly MAX_PIXELS
    (5_000, 5_001, 1, True),
    (MAX_SIDE, 1, 1, False),
    (MAX_SIDE + 1, 1, 1, True),  # a side over the limit, however few pixels
    (1, MAX_SIDE + 1, 1, True),
    (3_000, 3_000, 2, False),
    (4_000, 4_000, 2, True),  # all pages of a TIFF together
    (MAX_PIXELS, 1, 1, True),
])
def test_too_large(width: int, height: int, frames: int, refused: bool) -> None:
    assert too_large(width, height, frames) is refused


def lum(r: int, g: int, b: int) -> int:
    return (77 * r + 150 * g + 29 * b) >> 8


@pytest.mark.parametrize("ctype", [0, 2, 3, 4, 6, 16, 160])
def test_every_png_colour_type_decodes_to_grey_over_white(ctype: int) -> None:
    """Each row uses another PNG filter (tests/pngs.py). Grey is exact; colour is within one
    level of BT.601 luma (Pillow rounds, ITU-R 601-2), transparency is composed over white."""
    rng = random.Random(ctype)
    w, h = 7, 11
    rgb = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(w * h)]
    grey = [rng.randrange(256) for _ in range(w * h)]
    alpha = [rng.choice([255, 255, 0, 128]) for _ in range(w * h)]
    exact = ctype in (0, 160)
    if ctype == 0:
        png, want = encode_png(w, h, 0, bytes(grey)), grey
    elif ctype == 160:  # 16-bit grey: the high byte (Pillow's own convert("L") clips to 255)
        png = encode_png(w, h, 0, b"".join(bytes([g, 200]) for g in grey), depth=16)
        want = grey
    elif ctype == 16:  # 16-bit RGB
        px = b"".join(bytes([r, 7, g, 7, b, 7]) for r, g, b in rgb)
        png, want = encode_png(w, h, 2, px, depth=16), [lum(*p) for p in rgb]
    elif ctype == 2:
        png, want = encode_png(w, h, 2, b"".join(bytes(p) for p in rgb)), [lum(*p) for p in rgb]
    elif ctype == 3:  # palette, the first four entries partly transparent
        pal = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(16)]
        trns = bytes([0, 128, 255, 64])
        idx = [rng.randrange(16) for _ in range(w * h)]
        png = encode_png(w, h, 3, bytes(idx), palette=b"".join(bytes(p) for p in pal),
                         trns=trns)
        a_of = [*trns, *[255] * 12]
        want = [lum(*pal[i]) * a_of[i] // 255 + 255 - a_of[i] for i in idx]
    elif ctype == 4:
        png = encode_png(w, h, 4, b"".join(bytes([g, a]) for g, a in zip(grey, alpha, strict=True)))
        want = [g * a // 255 + 255 - a for g, a in zip(grey, alpha, strict=True)]
    else:
        png = encode_png(w, h, 6, b"".join(bytes([*p, a]) for p, a in zip(rgb, alpha, strict=True)))
        want = [lum(*p) * a // 255 + 255 - a for p, a in zip(rgb, alpha, strict=True)]
    decoded = greyimage.decode_grey(png)
    assert decoded is not None and decoded[:2] == (w, h)
    off = [abs(x - y) for x, y in zip(decoded[2], want, strict=True)]
    assert max(off) <= (0 if exact else 1), off


def test_magnifier_is_bilinear_on_the_input_pixels() -> None:
    """Output pixel (2x, 2y) is input pixel (x, y); those between are the rounded means of
    their neighbours; the last row and column repeat."""
    img = bytes([0, 100, 200, 50, 60, 70])  # 3 x 2
    pgm = greyimage.pgm2x(3, 2, img)
    assert pgm.startswith(b"P5\n6 4\n255\n")
    big = pgm[len(b"P5\n6 4\n255\n"):]
    assert big[0:6] == bytes([0, 50, 100, 150, 200, 200])
    assert big[12:18] == bytes([50, 55, 60, 65, 70, 70])
    assert big[6:12] == bytes([25, 53, 80, 108, 135, 135])  # 52.5 and 107.5 round up
    assert big[18:24] == big[12:18]  # the last row repeats itself
    assert greyimage.magnified_pgm(encode_png(3, 2, 0, img)) == pgm
    assert greyimage.magnified_pgm(b"\xff\xd8\xff\xe0 a jpeg") is None  # broken: not decodable


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_other_formats_are_magnified_too(fmt: str) -> None:
    """JPEG, WebP and TIFF screenshots are decoded and magnified like PNG."""
    from PIL import Image

    img = bytes(range(0, 240, 10)) * 4  # 24 x 4 grey ramp
    buf = io.BytesIO()
    Image.frombytes("L", (24, 4), img).save(buf, fmt, **({"quality": 100} if fmt != "TIFF"
                                                        else {}))
    pgm = greyimage.magnified_pgm(buf.getvalue())
    assert pgm is not None and pgm.startswith(b"P5\n48 8\n255\n")
    decoded = Image.open(buf).convert("L").tobytes()
    assert pgm == greyimage.pgm2x(24, 4, decoded)


@pytest.mark.parametrize("data", [
    encode_png(40, 30, 0, bytes(1_200))[:-60],  # truncated inside IDAT
    encode_png(40, 30, 0, bytes(1_200))[:40],  # the header and nothing else
    b"\x89PNG\r\n\x1a\n garbage",
    b"GIF89a" + bytes(100),
    b"/etc/passwd\n",
])
def test_broken_or_foreign_data_is_not_decoded(data: bytes) -> None:
    assert greyimage.decode_grey(data) is None


def test_opening_leaves_pillow_s_own_limit_as_it_was() -> None:
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    with greyimage.open_image(bombs.png_bomb(100_000, 100_000, rows=1, row_width=10)) as im:
        assert im.size == (100_000, 100_000)  # 10 GP announced: opened, nothing decoded
    assert Image.MAX_IMAGE_PIXELS == before
    assert greyimage.decode_grey(bombs.png_bomb(100_000, 100_000, rows=1, row_width=10)) is None


PEAK = """
import resource, sys
sys.path[:0] = [{tests!r}, {root!r}]
import bombs
from relay import greyimage
data = {make}
out = greyimage.decode_grey(data)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, out[:2] if out else None,
      out is not None and out[2] == b"\\xff" * len(out[2]))
"""


def peak_kib(make: str) -> tuple[int, str, str]:
    code = PEAK.format(tests=str(ROOT / "tests"), root=str(ROOT), make=make)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split(maxsplit=1)
    size, white = out[1].rsplit(maxsplit=1)
    return int(out[0]), size, white


def test_png_zlib_bomb_behind_a_small_header_inflates_only_what_the_header_says() -> None:
    """100 MB of rows behind a 100-row header: decoded to the 100 rows the header announces,
    with no more memory (peak RSS of a fresh interpreter) than an honest PNG of that size."""
    bomb = bombs.png_bomb(1_000, 100, rows=100_000)
    assert len(bomb) < 1_000_000
    honest_kib, honest, _ = peak_kib("bombs.png_bomb(1_000, 100)")
    bomb_kib, size, white = peak_kib("bombs.png_bomb(1_000, 100, rows=100_000)")
    assert size == honest == "(1000, 100)" and white == "True"
    assert bomb_kib < honest_kib + 10_000, (bomb_kib, honest_kib)
