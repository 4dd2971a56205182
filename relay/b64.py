"""Base64 bodies (RFC 2045 6.8): strict decoding that keeps where the encoded lines are and how
wide they are, so that a rewritten body is cut the same way. Pure: no I/O.
"""

from __future__ import annotations

import binascii
import re

from .textpart import B64_DEFAULT, LINE_MAX, Skip

_B64_LINE = re.compile(rb"[A-Za-z0-9+/=]*")


def decode(body: bytes) -> tuple[bytes, tuple[int, int], int]:
    """Strict base64 decoding: (decoded, span of the encoded lines in body, line width)."""
    ws = b" \t\r\n"
    core_start = len(body) - len(body.lstrip(ws))
    core_end = len(body.rstrip(ws))
    if core_start > core_end:
        core_start = core_end
    core = body[core_start:core_end]
    lines = core.splitlines()
    for line in lines:
        if not _B64_LINE.fullmatch(line):
            raise Skip("base64 body with characters outside the base64 alphabet")
    try:
        decoded = binascii.a2b_base64(b"".join(lines), strict_mode=True)
    except (binascii.Error, ValueError):
        raise Skip("invalid base64 body") from None
    width = len(lines[0]) if len(lines) > 1 else B64_DEFAULT
    if not 0 < width <= LINE_MAX:
        raise Skip("base64 body with unusable line length")
    return decoded, (core_start, core_end), width
