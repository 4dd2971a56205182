"""Quoted-printable (RFC 2045 6.7) as the splicer needs it: strict decoding that keeps where each
decoded byte was encoded, encoding of inserted bytes, and soft line breaks. Pure: no I/O.
"""

from __future__ import annotations

import binascii
import re
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence

from .textpart import Skip, UnsafeEdit

QP_LINE_MAX = 76  # RFC 2045 6.7 (5): encoded line length, without the line ending

_QP_BAD = re.compile(rb"[^\t\n\r -~]|\r(?!\n)")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_QP_LITERAL = re.compile(rb"[\t -<>-~]*")


def decode(body: bytes) -> tuple[bytes, array, array]:
    """Strict quoted-printable decoding. Returns the decoded bytes, the body offset of each
    decoded byte's encoding, and the body offsets where encoded lines start."""
    if _QP_BAD.search(body):
        raise Skip("quoted-printable body with bytes outside printable ASCII or a bare CR")
    out = bytearray()
    where = array("I")
    lines = array("I")
    pos, n = 0, len(body)
    while pos < n:
        lines.append(pos)
        nl = body.find(b"\n", pos)
        if nl < 0:
            cend = line_end = n
        else:
            line_end = nl + 1
            cend = nl - 1 if nl > pos and body[nl - 1] == 13 else nl
        if cend > pos and body[cend - 1] in (9, 32):
            raise Skip("quoted-printable line with trailing whitespace")
        i, soft = pos, False
        while i < cend:
            eq = body.find(b"=", i, cend)
            stop = cend if eq < 0 else eq
            out += body[i:stop]
            where.extend(range(i, stop))
            if eq < 0:
                i = cend
                break
            if eq + 1 == cend:
                soft = True
                i = cend
                break
            if eq + 2 < cend and body[eq + 1] in _HEX and body[eq + 2] in _HEX:
                out.append(int(body[eq + 1:eq + 3], 16))
                where.append(eq)
                i = eq + 3
            else:
                raise Skip("quoted-printable body with an invalid '=' escape")
        if not soft:
            out += body[cend:line_end]
            where.extend(range(cend, line_end))
        pos = line_end
    decoded = bytes(out)
    if binascii.a2b_qp(body) != decoded:
        raise Skip("quoted-printable body that decoders could read differently")
    return decoded, where, lines


def encode(data: bytes, at_line_end: bool) -> bytes:
    """Quoted-printable form of `data` (ASCII); trailing whitespace encoded if at a line end."""
    if _QP_LITERAL.fullmatch(data):
        out = data
    else:
        out = b"".join(bytes((c,)) if 32 <= c <= 126 and c != 61 or c == 9 else b"=%02X" % c
                       for c in data)
    if at_line_end and out[-1:] in (b" ", b"\t"):
        out = out[:-1] + b"=%02X" % out[-1]
    return out


def wrap(content: bytes, eol: bytes) -> bytes:
    """Soft-break an encoded line (no line ending) longer than QP_LINE_MAX. Every '=' in valid
    encoded content starts an =XX escape or is the final soft-break marker."""
    n = len(content)
    if n <= QP_LINE_MAX:
        return content
    pieces: list[bytes] = []
    s = 0
    while n - s > QP_LINE_MAX:
        c = s + QP_LINE_MAX - 1  # the piece plus its "=" fills the line
        first = c
        while c > s:
            if content[c - 1] == 61:  # never inside an =XX escape
                c -= 1
            elif c - 2 >= s and content[c - 2] == 61:
                c -= 2
            elif content.startswith((b"From ", b"."), c):  # keep mbox / SMTP quirks away
                c -= 1
            else:
                break
        if c <= s:
            c = first
            if content[c - 1] == 61:
                c -= 1
            elif content[c - 2] == 61:
                c -= 2
        if c <= s:
            raise UnsafeEdit("cannot wrap a quoted-printable line")
        pieces.append(content[s:c] + b"=")
        s = c
    pieces.append(content[s:])
    return eol.join(pieces)


def encoded_run(body: bytes, where: Sequence[int], bs: int, be: int
                ) -> tuple[int, int, list[tuple[int, int]], bool]:
    """Where the decoded bytes bs..be (be > bs) stand in the encoded `body` (`where`: each
    decoded byte's encoded offset): the first encoded line's segment (a, b), the segments on
    the lines after it (a run crossing soft line breaks), and whether b ends a line."""
    a = where[bs]
    b = a + (3 if body[a] == 61 else 1)
    rest: list[tuple[int, int]] = []
    for k in range(bs + 1, be):
        s = where[k]
        length = 3 if body[s] == 61 else 1
        if s == (rest[-1][1] if rest else b):
            if rest:
                rest[-1] = (rest[-1][0], s + length)
            else:
                b = s + length
        else:
            rest.append((s, s + length))
    return a, b, rest, b == len(body) or body[b] in (10, 13)


def line_of(body: bytes, lines: Sequence[int], pos: int) -> tuple[int, int, int, int]:
    """The encoded line holding offset `pos` (`lines`: the line starts): its index, start,
    end (after its line ending) and content end (before it)."""
    k = bisect_right(lines, pos) - 1
    ls = lines[k]
    le = lines[k + 1] if k + 1 < len(lines) else len(body)
    ce = le
    if ce > ls and body[ce - 1] == 10:
        ce -= 2 if ce - 1 > ls and body[ce - 2] == 13 else 1
    return k, ls, le, ce


def edited_lines(body: bytes, lines: Sequence[int], ops: Sequence[tuple[int, int, bytes, int]]
                 ) -> Iterator[tuple[int, int, int, bytes, list[tuple[int, int]]]]:
    """The encoded lines that edits touch, in order. `ops`: (start, end, new bytes, tag) on
    the encoded body, sorted. For each line: its start, end (after its line ending), content
    end, its new content (before wrapping), and (tag, offset in that content of the edit's
    new bytes) per edit. UnsafeEdit when edits are out of order or overlap, cross a line end,
    or leave a line ending in whitespace."""
    i = 0
    while i < len(ops):
        _, ls, le, ce = line_of(body, lines, ops[i][0])  # earlier lines: all their ops used
        pieces: list[bytes] = []
        placed: list[tuple[int, int]] = []
        size, p = 0, ls
        while i < len(ops) and ops[i][0] < le:
            a, b, new, tag = ops[i]
            if a < p or b > ce:
                raise UnsafeEdit("edits overlap or cross a quoted-printable line end")
            pieces.append(body[p:a])
            size += a - p
            placed.append((tag, size))
            pieces.append(new)
            size += len(new)
            p = b
            i += 1
        pieces.append(body[p:ce])
        content = b"".join(pieces)
        if content[-1:] in (b" ", b"\t"):
            raise UnsafeEdit("quoted-printable line would end in whitespace")
        yield ls, le, ce, content, placed
