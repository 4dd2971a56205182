"""An image as grey pixels, for OCR: how large an image may be, a PNG decoder and a 2x
magnifier in the standard library, and the height of the text's ink.

Small text (a 1x screenshot) gives coarse word boxes. The Tesseract driver (relay.ocr) reads a
PNG whose text is small magnified 2x (bilinear, pure Python): that brings 1x screenshots to the
accuracy of 2x ones. Other formats (JPEG, WebP, TIFF...) are decoded with Pillow when it is there.

Hostile images: `too_large` is the one size decision (MAX_PIXELS, MAX_SIDE); the PNG decoder here
never inflates more than the header's size announces (a zlib bomb stops there), and nothing over
MAGNIFY_MAX_PIXELS is decoded at all.
"""

from __future__ import annotations

import io
import statistics
import struct
import warnings
import zlib
from itertools import accumulate

MAX_PIXELS = 25_000_000  # an 8K screen is 33 MP, a 4K one 8.3 MP; a full-page capture of a
# long mail at 2x (1,600 x 15,000) is 24 MP
MAX_SIDE = 30_000  # px, either side (Tesseract's own limit is 32,767)
MAGNIFY_MAX_PIXELS = 12_000_000  # input pixels; larger images are read as they are


def too_large(width: int, height: int, frames: int = 1) -> bool:
    """Whether decoding an image of this size (all pages of a TIFF together) is refused."""
    return width > MAX_SIDE or height > MAX_SIDE or width * height * frames > MAX_PIXELS


# --- PNG decoding and 2x magnification, standard library only ---------------------------
# Whole rows and images are handled as big integers with one 16-bit lane per byte, so that
# sums and shifts run in C; only PNG's Average and Paeth filters need a Python loop.


class _Unsupported(Exception):
    pass


def _widen(b: bytes | bytearray) -> int:
    buf = bytearray(2 * len(b))
    buf[1::2] = b
    return int.from_bytes(buf, "big")


def _narrow(x: int, n: int) -> bytes:
    """Low byte of each of the n lanes of x."""
    return x.to_bytes(2 * n + 2, "big")[3::2]


def _avg(a: bytes | bytearray, b: bytes | bytearray) -> bytes:
    return _narrow((_widen(a) + _widen(b)) >> 1, len(a))


def _unfilter(raw: bytes, row_bytes: int, height: int, bpp: int) -> bytearray:
    out = bytearray(row_bytes * height)
    prev: bytes | bytearray = bytes(row_bytes)
    stride = row_bytes + 1
    if len(raw) < stride * height:
        raise _Unsupported("truncated PNG data")
    for y in range(height):
        ftype = raw[y * stride]
        line = raw[y * stride + 1:(y + 1) * stride]
        cur: bytes | bytearray
        if ftype == 0:
            cur = line
        elif ftype == 2:  # Up
            cur = _narrow(_widen(line) + _widen(prev), row_bytes)
        elif ftype == 1:  # Sub
            cur = bytearray(row_bytes)
            for c in range(bpp):
                cur[c::bpp] = bytes(map((255).__and__, accumulate(line[c::bpp])))
        elif ftype in (3, 4):  # Average, Paeth
            cur = bytearray(line)
            for i in range(row_bytes):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                if ftype == 3:
                    cur[i] = (cur[i] + ((a + b) >> 1)) & 255
                    continue
                c = prev[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else:
            raise _Unsupported(f"PNG filter {ftype}")
        out[y * row_bytes:(y + 1) * row_bytes] = cur
        prev = cur
    return out


def _over_white(grey: bytes, alpha: bytes | bytearray) -> bytes:
    if not bytes(alpha).strip(b"\xff"):
        return grey  # opaque, as screenshots are
    return bytes(g * a // 255 + 255 - a for g, a in zip(grey, alpha, strict=True))


def png_grey(data: bytes, max_rows: int | None = None) -> tuple[int, int, bytes]:
    """Decode a non-interlaced 8- or 16-bit PNG (its first max_rows rows) to 8-bit grey over
    white. Raises _Unsupported for other kinds."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise _Unsupported("not a PNG")
    pos, idat, palette, trns = 8, [], b"", b""
    width = height = depth = ctype = interlace = -1
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IEND":
            break
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if (channels is None or interlace != 0 or depth not in (8, 16) or width <= 0 or height <= 0
            or (ctype == 3 and depth != 8) or width * height > MAGNIFY_MAX_PIXELS):
        raise _Unsupported(f"PNG colour type {ctype}, depth {depth}, interlace {interlace}")
    bpp = channels * depth // 8
    if max_rows is not None and max_rows < height:
        height = max_rows
    # never inflate more than the rows need: a zlib bomb behind a small header stops here
    raw = zlib.decompressobj().decompress(b"".join(idat), (width * bpp + 1) * height)
    pix = _unfilter(raw, width * bpp, height, bpp)
    if depth == 16:
        pix = pix[0::2]  # high bytes
    n = width * height
    if ctype == 3:
        grey_of = bytes(
            (77 * palette[3 * i] + 150 * palette[3 * i + 1] + 29 * palette[3 * i + 2]) >> 8
            if 3 * i + 2 < len(palette) else 0 for i in range(256))
        alpha_of = bytes(trns[i] if i < len(trns) else 255 for i in range(256))
        return width, height, _over_white(pix.translate(grey_of), pix.translate(alpha_of))
    if ctype in (0, 4):
        grey = bytes(pix[0::channels])
    else:
        r, g, b = _widen(pix[0::channels]), _widen(pix[1::channels]), _widen(pix[2::channels])
        grey = _narrow((77 * r + 150 * g + 29 * b) >> 8, n)
    if ctype in (4, 6):
        grey = _over_white(grey, pix[channels - 1::channels])
    return width, height, grey


def magnify2(width: int, height: int, grey: bytes) -> bytes:
    """Bilinear 2x magnification of an 8-bit grey image (rows of `width` bytes)."""
    right = bytearray(grey[1:] + grey[-1:])
    right[width - 1::width] = grey[width - 1::width]  # the last column repeats itself
    wide = bytearray(2 * len(grey))
    wide[0::2] = grey
    wide[1::2] = _avg(grey, right)
    row = 2 * width
    mid = _avg(wide, wide[row:] + wide[-row:])
    parts = []
    for y in range(height):
        parts.append(wide[y * row:(y + 1) * row])
        parts.append(mid[y * row:(y + 1) * row])
    return b"".join(parts)


def decode_grey(image: bytes, max_rows: int | None = None) -> tuple[int, int, bytes] | None:
    """The image as 8-bit grey rows: PNG with the standard library, any other format (JPEG,
    WebP, TIFF...) with Pillow; None if it cannot be decoded here."""
    if image.startswith(b"\x89PNG"):
        try:
            return png_grey(image, max_rows)
        except (_Unsupported, zlib.error, struct.error, IndexError, ValueError):
            return None
    try:
        from PIL import Image
    except ImportError:  # without Pillow, only PNG is magnified
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as im:
                if too_large(im.width, im.height) or im.width * im.height > MAGNIFY_MAX_PIXELS:
                    return None  # as png_grey: read as it is
                im.draft("L", im.size)  # JPEG: decode straight to grey (a third of RGB)
                if max_rows is not None and im.height > max_rows:
                    im = im.crop((0, 0, im.width, max_rows))  # before converting
                grey = im.convert("L")
                return grey.width, grey.height, grey.tobytes()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def pgm2x(width: int, height: int, grey: bytes) -> bytes:
    """8-bit grey rows magnified 2x, as a binary PGM (what tesseract reads)."""
    return b"P5\n%d %d\n255\n" % (2 * width, 2 * height) + magnify2(width, height, grey)


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
