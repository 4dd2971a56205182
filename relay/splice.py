"""Byte-exact splicing of whitespace edits into a message's text parts: `render()`.

Edits are (start, end, replacement) offsets into a TextPart's decoded text. They are checked
(`check_edits`: sorted, no line end touched, printable ASCII only), mapped to the decoded bytes
(`byte_edits`), and spliced into the body in its own transfer encoding: 7bit/8bit in place,
quoted-printable line by line with soft breaks where a line would pass 76 octets (relay.qp),
base64 re-encoded at the body's line width. Every byte outside the edited regions stays as it
was, and every edited body is decoded again and compared with the edited text; anything that
would break a rule raises UnsafeEdit. Pure: no I/O.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence
from typing import AnyStr

from . import qp
from .textpart import CHECKPOINT, LINE_MAX, TextPart, UnsafeEdit, label

MEMO_MAX = 200_000  # cached edit positions per part
_PRINTABLE = re.compile(r"[\t -~]*")


def check_edits(part: TextPart, edits: Sequence[tuple[int, int, str]]
                ) -> list[tuple[int, int, str]]:
    text = part.text
    n = len(text)
    out: list[tuple[int, int, str]] = []
    last = 0
    valid: dict[str, bool] = {}
    for edit in edits:
        try:
            start, end, new = edit
        except (TypeError, ValueError):
            raise UnsafeEdit(f"malformed edit {edit!r}") from None
        if not (isinstance(start, int) and isinstance(end, int) and isinstance(new, str)):
            raise UnsafeEdit(f"malformed edit {edit!r}")
        if not last <= start <= end <= n:
            raise UnsafeEdit("edits out of range, overlapping or unsorted")
        old = text[start:end]
        ok = valid.get(new)
        if ok is None:
            ok = valid[new] = _PRINTABLE.fullmatch(new) is not None
        if "\r" in old or "\n" in old or not ok:
            raise UnsafeEdit("an edit may not touch a line end or insert anything but "
                             "printable ASCII")
        if old or new:
            at_end = end == n or text[end] in "\r\n"
            if at_end and (old + new)[-1:] in (" ", "\t"):
                raise UnsafeEdit("whitespace edit at a line end")
            at_start = start == 0 or text[start - 1] in "\r\n"
            if part.flowed and at_start and (old + new)[:1] in (" ", "\t"):
                raise UnsafeEdit("edit at the start of a flowed line")
        last = end
        if old != new:
            out.append((start, end, new))
    return out


def apply(text: AnyStr, edits: Sequence[tuple[int, int, AnyStr]]) -> AnyStr:
    """`text` (str or bytes) with each (start, end, new) edit made, edits sorted."""
    pieces: list[AnyStr] = []
    pos = 0
    for start, end, new in edits:
        pieces.append(text[pos:start])
        pieces.append(new)
        pos = end
    pieces.append(text[pos:])
    return text[:0].join(pieces)



def byte_edits(part: TextPart, edits: Sequence[tuple[int, int, str]]
               ) -> list[tuple[int, int, bytes]]:
    """The edits as offsets into the decoded bytes (ASCII-compatible charsets)."""
    codec, text, dec, memo = part.charset, part.text, part.decoded, part.memo
    out: list[tuple[int, int, bytes]] = []
    for start, end, new in edits:
        new_b = new.encode(codec)
        if part.same_offsets:
            bs, be = start, end
        elif (start, end) in memo:
            bs, be = memo[start, end]
        else:
            assert part.offsets is not None
            k = start // CHECKPOINT
            lc, lb = k * CHECKPOINT, part.offsets[k]
            prefix = text[lc:start].encode(codec)
            old_b = text[start:end].encode(codec)
            bs = lb + len(prefix)
            be = bs + len(old_b)
            if dec[lb:bs] != prefix or dec[bs:be] != old_b:
                raise UnsafeEdit(f"cannot locate an edit in the {codec} bytes")
            if len(memo) < MEMO_MAX:
                memo[start, end] = bs, be
        out.append((bs, be, new_b))
    return out




def _render_identity(part: TextPart, bedits: list[tuple[int, int, bytes]]) -> bytes:
    body = apply(part.body, bedits)
    shift = 0
    for start, end, new in bedits:
        if part.cte == "7bit" and not new.isascii():
            raise UnsafeEdit("8-bit bytes in a 7bit part")
        pos = start + shift
        shift += len(new) - (end - start)
        a = body.rfind(b"\n", 0, pos) + 1
        b = body.find(b"\n", pos)
        line = body[a:len(body) if b < 0 else b].rstrip(b"\r")
        if len(line) > LINE_MAX:
            raise UnsafeEdit(f"a line would exceed {LINE_MAX} octets")
    return body


def _render_qp(part: TextPart, bedits: list[tuple[int, int, bytes]]) -> bytes:
    body, dec = part.body, part.decoded
    where, lines = part.qp_map, part.qp_lines
    assert where is not None and lines is not None
    ops: list[tuple[int, int, bytes, int]] = []  # (a, b, new, -1) on the body, in order
    for bs, be, new_b in bedits:
        if bs == be:  # pure insertion before decoded byte bs
            if bs >= len(dec):
                raise UnsafeEdit("insertion at the end of the body")
            a = where[bs]
            ops.append((a, a, qp.encode(new_b, False), -1))
            continue
        key = ("qp", bs, be)
        if key in part.memo:
            a, b, rest, at_line_end = part.memo[key]
            ops.append((a, b, qp.encode(new_b, at_line_end), -1))
            ops.extend(rest)
            continue
        # the encoded run: one segment per encoded line it spans (soft breaks in between)
        a, b, spans, at_line_end = qp.encoded_run(body, where, bs, be)
        rest = [(s, e, b"", -1) for s, e in spans]
        if len(part.memo) < MEMO_MAX:
            part.memo[key] = a, b, rest, at_line_end
        ops.append((a, b, qp.encode(new_b, at_line_end), -1))
        ops.extend(rest)
    out: list[bytes] = []
    pos = 0
    for ls, le, ce, content, _ in qp.edited_lines(body, lines, ops):
        out.append(body[pos:ls])
        out.append(qp.wrap(content, body[ce:le] or part.eol))
        pos = ce
    out.append(body[pos:])
    return b"".join(out)


def _render_b64(part: TextPart, new_text: str) -> bytes:
    try:
        data = new_text.encode(part.charset)
    except UnicodeError:
        raise UnsafeEdit("edited text does not encode") from None
    enc = binascii.b2a_base64(data, newline=False)
    w = part.b64_width
    core = part.eol.join(enc[i:i + w] for i in range(0, len(enc), w))
    a, b = part.b64_span
    return part.body[:a] + core + part.body[b:]


def _decode_body(part: TextPart, body: bytes) -> str:
    if part.cte == "quoted-printable":
        data = binascii.a2b_qp(body)
    elif part.cte == "base64":
        data = binascii.a2b_base64(body)
    else:
        data = body
    return data.decode(part.charset)


def _render_part(part: TextPart, edits: Sequence[tuple[int, int, str]]) -> bytes:
    checked = check_edits(part, edits)
    if not checked:
        return part.body
    new_text = apply(part.text, checked)
    if part.cte == "base64":
        body = _render_b64(part, new_text)
    else:
        if part.offsets is None and not part.same_offsets:
            raise UnsafeEdit(f"{part.charset} can only be rewritten whole")
        bedits = byte_edits(part, checked)
        if part.cte == "quoted-printable":
            body = _render_qp(part, bedits)
        else:
            body = _render_identity(part, bedits)
    try:
        ok = _decode_body(part, body) == new_text
    except (UnicodeError, binascii.Error, ValueError):
        ok = False
    if not ok:
        raise UnsafeEdit("the edited body would not decode to the edited text")
    return body


def render(raw: bytes, parts: Sequence[TextPart],
           edits: Mapping[str, Sequence[tuple[int, int, str]]]) -> bytes:
    """Return the message with edits applied. edits maps part.path -> list of (start, end,
    replacement), offsets into part.text, non-overlapping, sorted. Every byte outside the
    edited regions of those bodies is identical to `raw`. Raises UnsafeEdit if the result would
    break a rule (line length, 7-bit, QP trailing whitespace, decoding, ...)."""
    try:
        by_path: dict[str, TextPart] = {}
        for part in parts:
            if part.path in by_path and by_path[part.path] is not part:
                other = by_path[part.path]
                if (other.start, other.end) != (part.start, part.end):
                    raise UnsafeEdit(f"two different parts named {label(part.path)}")
            by_path[part.path] = part
        todo: list[tuple[TextPart, Sequence[tuple[int, int, str]]]] = []
        for path, part_edits in edits.items():
            part = by_path.get(path)
            if part is None:
                raise UnsafeEdit(f"edits for unknown part {label(path)}")
            if raw[part.start:part.end] != part.body:
                raise UnsafeEdit(f"part {label(path)} does not belong to this message")
            todo.append((part, part_edits))
        todo.sort(key=lambda t: t[0].start)
        out: list[bytes] = []
        pos = 0
        for part, part_edits in todo:
            if part.start < pos:
                raise UnsafeEdit("overlapping parts")
            out.append(raw[pos:part.start])
            try:
                out.append(_render_part(part, part_edits))
            except UnsafeEdit as e:
                if len(todo) > 1:
                    raise UnsafeEdit(f"part {label(part.path)}: {e}") from e
                raise
            pos = part.end
        if not out:
            return raw
        out.append(raw[pos:])
        return b"".join(out)
    except UnsafeEdit:
        raise
    except Exception as e:
        raise UnsafeEdit(f"cannot render ({type(e).__name__}: {e})") from e
