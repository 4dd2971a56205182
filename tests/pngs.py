"""PNG files made on the spot, with every filter type and colour type (shared by
tests/test_greyimage.py and tests/test_ocr.py)."""

from __future__ import annotations

import struct
import zlib


def encode_png(width: int, height: int, ctype: int, pixels: bytes, depth: int = 8,
               palette: bytes = b"", trns: bytes = b"") -> bytes:
    """A PNG using every filter type in turn (row y uses filter y % 5)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    bpp = channels * depth // 8
    stride = width * bpp
    raw = bytearray()
    prev = bytes(stride)
    for y in range(height):
        cur = pixels[y * stride:(y + 1) * stride]
        f = y % 5
        raw.append(f)
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, 0][f]
            if f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            raw.append((cur[i] - pred) & 255)
        prev = cur

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth,
                                                            ctype, 0, 0, 0))
    if palette:
        out += chunk(b"PLTE", palette)
    if trns:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")
