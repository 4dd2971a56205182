"""The MIME walk: the raw message's tree read from its bytes, with the exact byte span of every
leaf body, and each text/plain and text/html body that can be rewritten safely decoded into a
`TextPart`.

`Walker` reads header blocks, boundaries, preamble and epilogue itself, so that it knows where
every body starts and ends; the email package only reads header values (parameters, RFC
2231). A part that cannot be rewritten safely is skipped with a human-readable reason; a
header block readers could end in different places is remembered (`malformed`) for
relay.ambiguity. Nothing is ever re-serialised. Pure: no I/O.
"""

from __future__ import annotations

import binascii
import email.message
import email.utils
import re
from dataclasses import dataclass

from . import b64, charsets, qp
from .textpart import B64_DEFAULT, IDENTITY_CTES, Skip, TextPart, TooLarge, label

MAX_DEPTH = 40  # nesting of multiparts / attached messages we follow

KNOWN_CTES = (*IDENTITY_CTES, "quoted-printable", "base64")
TEXT_SUBTYPES = ("plain", "html")

_HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_TOKEN_TYPE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


class _Malformed(Skip):
    """A header block holding a line that is not a header field (readers disagree on where
    such a block ends)."""


@dataclass
class _Entity:
    headers: email.message.Message
    body_start: int
    has_separator: bool


def _line_ending(data: bytes, default: bytes = b"\r\n") -> bytes:
    nl = data.find(b"\n")
    if nl < 0:
        return default
    return b"\r\n" if nl > 0 and data[nl - 1] == 13 else b"\n"


def _parse_entity(raw: bytes, start: int, end: int) -> _Entity:
    """Split raw[start:end] into its header block and body; read the header fields.
    Raises Skip on a header block that readers could disagree about."""
    fields: list[tuple[str, str]] = []
    pos = start
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        line = raw[pos:line_end]
        content = line[:-1] if line.endswith(b"\n") else line
        if content.endswith(b"\r"):
            content = content[:-1]
        if b"\r" in content:  # the email package would see a line break here
            raise _Malformed("bare CR in a header block")
        if not content and line.endswith(b"\n"):
            msg = email.message.Message()
            for name, value in fields:
                msg[name] = value
            return _Entity(msg, line_end, True)
        if content[:1] in (b" ", b"\t"):
            if not fields or not content.strip():
                raise _Malformed("malformed header block")
            name, value = fields[-1]
            fields[-1] = (name, value + content.decode("latin-1"))
        elif _HEADER_FIELD.match(content):
            name, _, value = content.decode("latin-1").partition(":")
            fields.append((name.strip(), value.lstrip(" \t")))
        else:
            raise _Malformed("malformed header block")
        pos = line_end
    msg = email.message.Message()
    for name, value in fields:
        msg[name] = value
    return _Entity(msg, end, False)


def _single(msg: email.message.Message, name: str) -> str | None:
    values = msg.get_all(name) or []
    if len(values) > 1:
        raise Skip(f"{len(values)} {name} headers")
    return None if not values else str(values[0])


def _param(msg: email.message.Message, name: str) -> str | None:
    value = msg.get_param(name)
    if value is None:
        return None
    return str(email.utils.collapse_rfc2231_value(value))


def _make_part(raw: bytes, ent: _Entity, end: int, path: str, subtype: str, cte: str,
               eol: bytes) -> TextPart:
    msg = ent.headers
    declared = _param(msg, "charset")
    charset = msg.get_content_charset()
    if declared is not None and charset is None:
        raise Skip(f"unknown charset {declared!r}")
    if charset is not None and not charset.strip():
        raise Skip("empty charset")
    if cte not in KNOWN_CTES:
        raise Skip(f"unknown Content-Transfer-Encoding {cte!r}")
    codec, compatible = charsets.codec_for(charset, cte)
    start = ent.body_start
    body = raw[start:end]
    qp_map = qp_lines = None
    b64_span, width = (0, 0), B64_DEFAULT
    if cte == "quoted-printable":
        decoded, qp_map, qp_lines = qp.decode(body)
    elif cte == "base64":
        decoded, b64_span, width = b64.decode(body)
    else:
        decoded = body
    if charset is None and not decoded.isascii():
        raise Skip("8-bit bytes but no charset declared")
    try:
        text = decoded.decode(codec)
        if text.encode(codec) != decoded:
            raise Skip(f"{charset} text does not re-encode to the same bytes")
    except UnicodeError:
        raise Skip(f"body does not decode as {charset or 'us-ascii'}") from None
    same = False
    offsets = None
    if compatible and cte != "base64":
        same = len(text) == len(decoded) and all(len(c.encode(codec)) == 1 for c in set(text))
        if not same:
            offsets = charsets.char_offsets(text, decoded, codec)
    b64_eol = _line_ending(body[b64_span[0]:b64_span[1]], eol) if cte == "base64" else eol
    flowed = (_param(msg, "format") or "").strip().lower() == "flowed"
    delsp = (_param(msg, "delsp") or "").strip().lower() == "yes"
    return TextPart(
        path=path, subtype=subtype, charset=codec, cte=cte, flowed=flowed, delsp=delsp,
        text=text, start=start, end=end, body=body, decoded=decoded,
        eol=b64_eol if cte == "base64" else _line_ending(body, eol), same_offsets=same,
        offsets=offsets, qp_map=qp_map, qp_lines=qp_lines,
        b64_span=b64_span, b64_width=width,
    )


def decoded_size(body: bytes, cte: str) -> int:
    """Size of a body after its Content-Transfer-Encoding, without building the structures
    analysis needs (C codecs, memory about the size of the body)."""
    if cte == "quoted-printable":
        return len(binascii.a2b_qp(body))
    if cte == "base64":
        return len(binascii.a2b_base64(body))  # lenient: only for the size
    return len(body)


class Walker:
    """The walk over one raw message: `walk()` fills `parts` (the rewritable text parts) and
    `reasons` (one per text part skipped); `boundaries`, `delimiters` and `malformed` are what
    relay.ambiguity compares with another reader."""

    def __init__(self, raw: bytes, max_text: int | None = None) -> None:
        self.raw = raw
        self.max_text = max_text
        self.eol = _line_ending(raw[:4096])
        self.parts: list[TextPart] = []
        self.reasons: list[str] = []
        self.boundaries: set[bytes] = set()  # every boundary a multipart declared
        self.delimiters: set[int] = set()  # where the delimiter lines we used start
        self.malformed: str | None = None  # the first malformed header block, where

    def skip(self, path: str, what: str, reason: str) -> None:
        self.reasons.append(f"part {label(path)}{f' ({what})' if what else ''}: {reason}")

    def walk(self, start: int, end: int, path: str, prefix: str, default_type: str,
             block: str | None, boundaries: tuple[bytes, ...], depth: int) -> None:
        try:
            self._walk(start, end, path, prefix, default_type, block, boundaries, depth)
        except _Malformed as e:
            self.malformed = self.malformed or f"part {label(path)}: {e}"
            self.skip(path, "", str(e))
        except Skip as e:
            self.skip(path, "", str(e))
        except TooLarge:
            raise
        except Exception as e:  # never let a malformed message escape as an error
            self.skip(path, "", f"could not be parsed ({type(e).__name__})")

    def _walk(self, start: int, end: int, path: str, prefix: str, default_type: str,
              block: str | None, boundaries: tuple[bytes, ...], depth: int) -> None:
        ent = _parse_entity(self.raw, start, end)
        msg = ent.headers
        declared = _single(msg, "Content-Type")
        cte_header = _single(msg, "Content-Transfer-Encoding")
        disposition = _single(msg, "Content-Disposition")
        if declared is None:
            ctype = default_type
        else:
            main = declared.split(";", 1)[0].strip()
            if not _TOKEN_TYPE.fullmatch(main):
                raise Skip(f"invalid Content-Type {main[:60]!r}")
            ctype = main.lower()
        maintype, subtype = ctype.split("/", 1)
        cte = (cte_header or "7bit").strip().lower()
        if maintype == "multipart":
            self._multipart(ent, end, prefix, ctype, cte, block, boundaries, depth)
            return
        if maintype == "message" and subtype in ("rfc822", "global"):
            if depth >= MAX_DEPTH:
                raise Skip("nested too deeply")
            if cte not in IDENTITY_CTES:
                self.skip(path, ctype, "attached message left unchanged")
                return
            if ent.has_separator:
                self.walk(ent.body_start, end, f"{prefix}.1" if prefix else "1", prefix,
                          "text/plain", block or "inside an attached message", boundaries,
                          depth + 1)
            return
        if maintype != "text":
            return
        if block:
            self.skip(path, ctype, block)
            return
        if subtype not in TEXT_SUBTYPES:
            self.skip(path, ctype, "only text/plain and text/html are rewritten")
            return
        if disposition is not None and disposition.split(";", 1)[0].strip().lower() == \
                "attachment":
            self.skip(path, ctype, "attachment")
            return
        if not ent.has_separator:
            self.skip(path, ctype, "no body")
            return
        if self.max_text is not None and end - ent.body_start > self.max_text:
            # decoding never makes a body bigger: only a body over the limit needs measuring
            size = decoded_size(self.raw[ent.body_start:end], cte)
            if size > self.max_text:
                raise TooLarge(f"part {label(path)} ({ctype}) has {size} bytes of text, "
                               f"over the limit of {self.max_text}")
        try:
            self.parts.append(_make_part(self.raw, ent, end, path, subtype, cte, self.eol))
        except Skip as e:
            self.skip(path, ctype, str(e))

    def _multipart(self, ent: _Entity, end: int, prefix: str, ctype: str, cte: str,
                   block: str | None, boundaries: tuple[bytes, ...], depth: int) -> None:
        path = prefix
        if depth >= MAX_DEPTH:
            raise Skip("nested too deeply")
        if cte not in IDENTITY_CTES:
            raise Skip(f"{ctype} with Content-Transfer-Encoding {cte!r}")
        boundary_str = ent.headers.get_boundary()
        if not boundary_str:
            raise Skip(f"{ctype} without a boundary")
        boundary = boundary_str.encode("latin-1")
        self.boundaries.add(boundary)
        if boundary in boundaries:
            raise Skip(f"{ctype} reuses an enclosing boundary")
        if not ent.has_separator:
            raise Skip(f"{ctype} without a body")
        subtype = ctype.split("/", 1)[1]
        if subtype in ("signed", "encrypted") and not block:
            block = f"inside multipart/{subtype} (rewriting would break it)"
        child_default = "message/rfc822" if subtype == "digest" else "text/plain"
        delim = re.compile(rb"(?m)^--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
        found = list(delim.finditer(self.raw, ent.body_start, end))
        bare_cr = re.compile(rb"\r(?!\n)--" + re.escape(boundary))
        if bare_cr.search(self.raw, ent.body_start, end):
            raise Skip(f"{ctype} with a boundary after a bare CR (ambiguous)")
        if not found:
            raise Skip(f"{ctype} without any boundary line")
        closes = [i for i, m in enumerate(found) if m.group(1)]
        if closes and closes[0] != len(found) - 1:
            raise Skip(f"{ctype} with boundary lines after the closing one")
        if found[0].group(1):
            raise Skip(f"{ctype} without any body part")
        inner = (*boundaries, boundary)
        self.delimiters.update(m.start() for m in found)
        for i, m in enumerate(found):
            if m.group(1):
                break
            part_start = m.end()
            if i + 1 < len(found):
                part_end = found[i + 1].start()
                if part_end > part_start:  # the line ending before a delimiter belongs to it
                    part_end -= 2 if self.raw[part_end - 2:part_end] == b"\r\n" else 1
            else:
                # no closing boundary: the last part runs to the end (at the end of the
                # message, less its final line ending, as the email package reads it)
                part_end = end
                if end == len(self.raw) and self.raw.endswith(b"\n") and end > part_start:
                    part_end -= 2 if self.raw.endswith(b"\r\n") and end - 1 > part_start else 1
            child = f"{path}.{i + 1}" if path else str(i + 1)
            self.walk(part_start, part_end, child, child, child_default, block, inner,
                      depth + 1)
