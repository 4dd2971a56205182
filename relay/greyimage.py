"""An image as grey pixels, for OCR: how large an image may be, decoding to grey over white and
the 2x magnifier (both with Pillow), and the height of the text's ink.

Small text (a 1x screenshot) gives coarse word boxes. The Tesseract driver (relay.ocr) reads an
image whose text is small magnified 2x (bilinear): that brings 1x screenshots, PNG or JPEG, to
the accuracy of 2x ones.

Hostile images: `too_large` is the one size decision (MAX_PIXELS, MAX_SIDE). `open_image` reads
the header only, and every caller applies `too_large` to its size before a pixel is decoded;
nothing over MAGNIFY_MAX_PIXELS is decoded at all. Pillow's PNG decoder inflates only the rows the
header announces (a zlib bomb stops there) and refuses truncated data.
"""

from __future__ import annotations

import io
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

MAX_PIXELS = 25_000_000  # an 8K screen is 33 MP, a 4K one 8.3 MP; a full-page capture of a
# long mail at 2x (1,600 x 15,000) is 24 MP
MAX_SIDE = 30_000  # px, either side (Tesseract's own limit is 32,767)
MAGNIFY_MAX_PIXELS = 12_000_000  # input pixels; larger images are read as they are
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

_OPENING = threading.Lock()  # Image.MAX_IMAGE_PIXELS is one global of the process


def too_large(width: int, height: int, frames: int = 1) -> bool:
    """Whether decoding an image of this size (all pages of a TIFF together) is refused."""
    return width > MAX_SIDE or height > MAX_SIDE or width * height * frames > MAX_PIXELS


@contextmanager
def open_image(data: bytes) -> Iterator[Image.Image]:
    """The image opened lazily: Pillow has read its header, no pixel. Pillow's own
    decompression-bomb check (its MAX_IMAGE_PIXELS, a process global) is set aside while it
    opens, because the caller applies `too_large` to the header's size, and a refusal then
    names that size. Raises one of DECODE_ERRORS when the header cannot be read."""
    with _OPENING:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    with im:
        yield im


def _grey(im: Image.Image) -> Image.Image:
    """8-bit grey over white (screenshots are opaque; a transparent PNG is read as a page)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return im.convert("I").point(lambda i: i * (1 / 256)).convert("L")  # high byte
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, "white"), rgba).convert("L")
    return im.convert("L")


def decode_grey(image: bytes) -> tuple[int, int, bytes] | None:
    """The image (its first page) as 8-bit grey rows over white; None if it cannot be decoded,
    is over the size limit or has more than MAGNIFY_MAX_PIXELS (it is then read as it is)."""
    try:
        with open_image(image) as im:
            if too_large(im.width, im.height) or im.width * im.height > MAGNIFY_MAX_PIXELS:
                return None
            im.draft("L", im.size)  # JPEG: decode straight to grey (a third of RGB)
            grey = _grey(im)
            return grey.width, grey.height, grey.tobytes()
    except DECODE_ERRORS:
        return None


def pgm2x(width: int, height: int, grey: bytes) -> bytes:
    """8-bit grey rows magnified 2x (bilinear), as a binary PGM (what tesseract reads).

    Output pixel (2x, 2y) is input pixel (x, y) and the ones between are the means of their
    neighbours (the last row and column repeat): Image.resize over a box a quarter of a pixel
    right and down, in an image one row and column larger. Pillow's default alignment (pixel
    centres) reads fewer gaps: see README, "Screenshots: decoding and magnifying"."""
    im = Image.frombytes("L", (width, height), grey)
    pad = Image.new("L", (width + 1, height + 1))
    pad.paste(im, (0, 0))
    pad.paste(im.crop((width - 1, 0, width, height)), (width, 0))
    pad.paste(pad.crop((0, height - 1, width + 1, height)), (0, height))
    big = pad.resize((2 * width, 2 * height), Image.Resampling.BILINEAR,
                     box=(0.25, 0.25, width + 0.25, height + 0.25))
    return b"P5\n%d %d\n255\n" % big.size + big.tobytes()


def magnified_pgm(image: bytes) -> bytes | None:
    """The image magnified 2x as a binary PGM, or None if it cannot be decoded here."""
    decoded = decode_grey(image)
    return pgm2x(*decoded) if decoded else None


def ink_line_height(width: int, height: int, grey: bytes) -> float | None:
    """Median height (px) of the bands of rows that hold contrast, i.e. of the text lines'
    ink, about one em; None unless there are enough such bands to tell."""
    bands, run = [], 0
    for y in range(height):
        row = grey[y * width:(y + 1) * width]
        if max(row) - min(row) > 96:
            run += 1
        elif run:
            bands.append(run)
            run = 0
    bands = [b for b in bands + [run] if b >= 4]
    return statistics.median(bands) if len(bands) >= 5 else None
