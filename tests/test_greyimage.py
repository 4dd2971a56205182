"""An image as grey pixels (relay.greyimage): the size limit, the standard-library PNG decoder
(every filter and colour type, a zlib bomb), the 2x magnifier, and other formats through Pillow."""

from __future__ import annotations

import io
import random

import bombs
import pytest
from pngs import encode_png

from relay import greyimage
from relay.greyimage import MAX_PIXELS, MAX_SIDE, too_large


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


@pytest.mark.parametrize("ctype", [0, 2, 3, 4, 6, 16])
def test_png_decoder_all_filters_and_colour_types(ctype: int) -> None:
    rng = random.Random(ctype)
    w, h = 7, 11
    rgb = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(w * h)]
    grey = [rng.randrange(256) for _ in range(w * h)]
    alpha = [rng.choice([255, 255, 0, 128]) for _ in range(w * h)]
    if ctype == 0:
        png, want = encode_png(w, h, 0, bytes(grey)), grey
    elif ctype == 16:  # 16-bit RGB
        px = b"".join(bytes([r, 7, g, 7, b, 7]) for r, g, b in rgb)
        png, want = encode_png(w, h, 2, px, depth=16), [lum(*p) for p in rgb]
    elif ctype == 2:
        png, want = encode_png(w, h, 2, b"".join(bytes(p) for p in rgb)), [lum(*p) for p in rgb]
    elif ctype == 3:
        pal = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(16)]
        idx = [rng.randrange(16) for _ in range(w * h)]
        png = encode_png(w, h, 3, bytes(idx), palette=b"".join(bytes(p) for p in pal))
        want = [lum(*pal[i]) for i in idx]
    elif ctype == 4:
        png = encode_png(w, h, 4, b"".join(bytes([g, a]) for g, a in zip(grey, alpha, strict=True)))
        want = [g * a // 255 + 255 - a for g, a in zip(grey, alpha, strict=True)]
    else:
        png = encode_png(w, h, 6, b"".join(bytes([*p, a]) for p, a in zip(rgb, alpha, strict=True)))
        want = [lum(*p) * a // 255 + 255 - a for p, a in zip(rgb, alpha, strict=True)]
    assert greyimage.png_grey(png) == (w, h, bytes(want))


def test_magnify2_is_bilinear() -> None:
    img = bytes([0, 100, 200, 50, 60, 70])  # 3 x 2
    big = greyimage.magnify2(3, 2, img)
    assert len(big) == 6 * 4
    assert big[0:6] == bytes([0, 50, 100, 150, 200, 200])
    assert big[12:18] == bytes([50, 55, 60, 65, 70, 70])
    assert big[6:12] == bytes([25, 52, 80, 107, 135, 135])
    assert big[18:24] == big[12:18]  # the last row repeats itself
    pgm = greyimage.magnified_pgm(encode_png(3, 2, 0, img))
    assert pgm is not None and pgm.startswith(b"P5\n6 4\n255\n") and pgm.endswith(big)
    assert greyimage.magnified_pgm(b"\xff\xd8\xff\xe0 a jpeg") is None  # broken: not decodable


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_other_formats_are_magnified_too(fmt: str) -> None:
    """JPEG, WebP and TIFF screenshots are decoded (Pillow) and magnified like PNG."""
    from PIL import Image

    img = bytes(range(0, 240, 10)) * 4  # 24 x 4 grey ramp
    buf = io.BytesIO()
    Image.frombytes("L", (24, 4), img).save(buf, fmt, **({"quality": 100} if fmt != "TIFF"
                                                        else {}))
    pgm = greyimage.magnified_pgm(buf.getvalue())
    assert pgm is not None and pgm.startswith(b"P5\n48 8\n255\n")
    decoded = Image.open(buf).convert("L").tobytes()
    assert pgm.endswith(greyimage.magnify2(24, 4, decoded))



def test_png_zlib_bomb_behind_a_small_header_inflates_only_what_the_header_says() -> None:
    import tracemalloc

    bomb = bombs.png_bomb(1_000, 100, rows=100_000)  # 100 MB of rows behind a 100-row header
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    try:
        width, height, grey = greyimage.png_grey(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (width, height, grey) == (1_000, 100, b"\xff" * 100_000)
    assert peak < 10_000_000

