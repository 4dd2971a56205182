"""Which declared charsets a text part can be rewritten in, and where its characters are in
its bytes. Pure: no I/O.

A charset that is stateful or not ASCII-compatible (UTF-16, ISO-2022-JP, EBCDIC) can only be
rewritten as a whole, that is in a base64 body; in any other charset an edit is spliced into
the decoded bytes, located through `char_offsets`.
"""

from __future__ import annotations

import codecs
from array import array

from .textpart import CHECKPOINT, Skip

# Python codecs that are no MIME charset at all
NOT_CHARSETS = frozenset({
    "unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "charmap",
    "mbcs", "oem", "utf-8-sig", "palmos",
})
# stateful or not ASCII-compatible: only rewritable as a whole (base64)
STATEFUL_PREFIXES = ("iso2022", "utf-7", "utf-16", "utf-32", "hz")
_PROBE = bytes(range(0x20, 0x7F)) + b"\t\r\n"


def codec_for(name: str | None, cte: str) -> tuple[str, bool]:
    """(codec name, ascii_compatible) for a declared charset; raises Skip."""
    if name is None:
        return "ascii", True
    try:
        codec = codecs.lookup(name.strip()).name
        b"".decode(codec)  # a text encoding, not a bytes-to-bytes codec
    except (LookupError, ValueError):
        raise Skip(f"unknown charset {name!r}") from None
    if codec in NOT_CHARSETS:
        raise Skip(f"unknown charset {name!r}")
    compatible = not codec.startswith(STATEFUL_PREFIXES)
    if compatible:
        try:
            compatible = (_PROBE.decode(codec) == _PROBE.decode("ascii")
                          and _PROBE.decode("ascii").encode(codec) == _PROBE)
        except (UnicodeError, LookupError):
            compatible = False
    if not compatible and cte != "base64":
        raise Skip(f"charset {name!r} is stateful or not ASCII-compatible (CTE {cte})")
    return codec, compatible


def char_offsets(text: str, decoded: bytes, codec: str) -> array:
    """Byte offset in `decoded` of every CHECKPOINT-th character of `text` (a stateless,
    ASCII-compatible charset), checked piece by piece against the bytes."""
    offsets = array("Q", [0])
    pos = 0
    for k in range(0, len(text), CHECKPOINT):
        piece = text[k:k + CHECKPOINT].encode(codec)
        if decoded[pos:pos + len(piece)] != piece:
            raise Skip(f"cannot map {codec} characters to bytes")
        pos += len(piece)
        offsets.append(pos)
    if pos != len(decoded):
        raise Skip(f"cannot map {codec} characters to bytes")
    return offsets
