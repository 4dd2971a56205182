"""A text part of a raw message as the MIME walk finds it (`TextPart`), and the errors of
reading and rewriting one.

A TextPart holds the decoded text and, beside it, what the splicer needs to put edited text back
byte-exactly: the body's span in the raw message, its bytes before and after the transfer
encoding, the line ending, and the maps from characters to bytes (see relay.mimewalk, which
makes them, and relay.splice, which uses them). Pure: no I/O.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

LINE_MAX = 998  # RFC 5322 2.1.1: octets per line, without CRLF
B64_DEFAULT = 76
CHECKPOINT = 64  # characters between two known char -> byte offsets (multi-byte charsets)
IDENTITY_CTES = ("7bit", "8bit", "binary")


class UnsafeEdit(ValueError):
    """An edit that cannot be applied without breaking the message (or a rule we keep)."""


class TooLarge(Exception):
    """A text part whose decoded body is over the size the caller analyses; the message is
    left untouched as a whole (the message is the reason, without content)."""



class Skip(Exception):
    """A part that cannot be rewritten safely; the message is the human-readable reason."""


@dataclass(frozen=True)
class TextPart:
    path: str  # "" for a single-part message, else "1", "2.1", ... (1-based, like IMAP)
    subtype: str  # "plain" or "html"
    charset: str  # Python codec name used to decode ("ascii" when none declared)
    cte: str  # 7bit, 8bit, binary, quoted-printable or base64
    flowed: bool  # format=flowed
    delsp: bool  # DelSp=yes
    text: str  # decoded body
    # where the body is and how to splice into it (relay.splice; not compared, not shown)
    start: int = field(default=0, repr=False, compare=False)  # body span in the raw message
    end: int = field(default=0, repr=False, compare=False)
    body: bytes = field(default=b"", repr=False, compare=False)  # raw[start:end]
    decoded: bytes = field(default=b"", repr=False, compare=False)  # after the CTE
    eol: bytes = field(default=b"\r\n", repr=False, compare=False)  # for lines we add
    same_offsets: bool = field(default=False, repr=False, compare=False)  # char i == byte i
    offsets: array | None = field(default=None, repr=False, compare=False)  # charsets.char_offsets
    qp_map: array | None = field(default=None, repr=False, compare=False)  # decoded -> body
    qp_lines: array | None = field(default=None, repr=False, compare=False)  # line starts
    b64_span: tuple[int, int] = field(default=(0, 0), repr=False, compare=False)
    b64_width: int = field(default=B64_DEFAULT, repr=False, compare=False)
    # per-position lookups, the same for every recipient's copy (render is called per copy)
    memo: dict = field(default_factory=dict, repr=False, compare=False)


def label(path: str) -> str:
    """A part's path as messages name it ("1" for a single-part message)."""
    return path or "1"
