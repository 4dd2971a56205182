"""The text parts of a raw message, and byte-exact splicing of whitespace edits into them.

`analyse()` (and `text_parts()`, its parts and reasons) walks the MIME tree of the raw bytes
itself (header blocks, boundaries, preamble, epilogue), so that it knows the exact byte span
of every leaf body, and decodes each text/plain and text/html body that can be rewritten
safely. `render()` splices edits of those decoded texts back into the message: every byte
outside the edited regions stays as it was. The email package reads header values
(parameters, RFC 2231) and, in `analyse(strict=True)`, the whole message a second time: where
it or any other reader could see another structure, the message is ambiguous (a typed
Ambiguity) and nothing in it is rewritten. Nothing is ever re-serialised.

Pure: no I/O.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.message
import email.policy
import email.utils
import re
from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Ambiguity", "Analysis", "BoundaryLikeLine", "MalformedHeaderLine", "OtherStructure",
           "ParserDefect", "TextPart", "TooLarge", "UnsafeEdit", "analyse", "decoded_size",
           "render", "text_parts"]

QP_LINE_MAX = 76  # RFC 2045 6.7 (5): encoded line length, without the line ending
LINE_MAX = 998  # RFC 5322 2.1.1: octets per line, without CRLF
B64_DEFAULT = 76
MAX_DEPTH = 40  # nesting of multiparts / attached messages we follow
MEMO_MAX = 200_000  # cached edit positions per part
CHECKPOINT = 64  # characters between two known char -> byte offsets (multi-byte charsets)

IDENTITY_CTES = ("7bit", "8bit", "binary")
KNOWN_CTES = (*IDENTITY_CTES, "quoted-printable", "base64")
TEXT_SUBTYPES = ("plain", "html")

# Python codecs that are no MIME charset at all
NOT_CHARSETS = frozenset({
    "unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "charmap",
    "mbcs", "oem", "utf-8-sig", "palmos",
})
# stateful or not ASCII-compatible: only rewritable as a whole (base64)
STATEFUL_PREFIXES = ("iso2022", "utf-7", "utf-16", "utf-32", "hz")
_PROBE = bytes(range(0x20, 0x7F)) + b"\t\r\n"

_HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_TOKEN_TYPE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_QP_BAD = re.compile(rb"[^\t\n\r -~]|\r(?!\n)")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_B64_LINE = re.compile(rb"[A-Za-z0-9+/=]*")
_PRINTABLE = re.compile(r"[\t -~]*")
_QP_LITERAL = re.compile(rb"[\t -<>-~]*")


class UnsafeEdit(ValueError):
    """An edit that cannot be applied without breaking the message (or a rule we keep)."""


class TooLarge(Exception):
    """A text part whose decoded body is over the size the caller analyses; the message is
    left untouched as a whole (the message is the reason, without content)."""


class _Skip(Exception):
    """A part that cannot be rewritten safely; the message is the human-readable reason."""


class _Malformed(_Skip):
    """A header block holding a line that is not a header field (readers disagree on where
    such a block ends)."""


# --- why a whole message is left as it is (typed, like email.errors.MessageDefect) ---------


class Ambiguity:
    """A MIME structure that readers could disagree about: the message is delivered as it is,
    since a copy must differ only in text whitespace as every reader sees it."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail

    def __str__(self) -> str:
        what = (self.__doc__ or "").strip().split("\n")[0].rstrip(".")
        return f"{type(self).__name__} ({what}{': ' + self.detail if self.detail else ''})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.detail == self.detail  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.detail))


class ParserDefect(Ambiguity):
    """Python's email package records defects."""


class OtherStructure(Ambiguity):
    """Readers see another MIME tree, text body or parameter.

    The email package reads another tree or body than relay.mime, or a parameter is repeated
    (the email package takes the first, other readers the last)."""


class BoundaryLikeLine(Ambiguity):
    """A line inside a part starts like a boundary delimiter of the message."""


class MalformedHeaderLine(Ambiguity):
    """A header block holds a line that is not a header field."""


@dataclass(frozen=True)
class TextPart:
    path: str  # "" for a single-part message, else "1", "2.1", ... (1-based, like IMAP)
    subtype: str  # "plain" or "html"
    charset: str  # Python codec name used to decode ("ascii" when none declared)
    cte: str  # 7bit, 8bit, binary, quoted-printable or base64
    flowed: bool  # format=flowed
    delsp: bool  # DelSp=yes
    text: str  # decoded body
    # private: where the body is and how to splice into it
    _start: int = field(default=0, repr=False, compare=False)  # body span in the raw message
    _end: int = field(default=0, repr=False, compare=False)
    _body: bytes = field(default=b"", repr=False, compare=False)  # raw[_start:_end]
    _decoded: bytes = field(default=b"", repr=False, compare=False)  # after the CTE
    _eol: bytes = field(default=b"\r\n", repr=False, compare=False)  # for lines we add
    _same_offsets: bool = field(default=False, repr=False, compare=False)  # char i == byte i
    _offsets: array | None = field(default=None, repr=False, compare=False)  # see _char_offsets
    _qp_map: array | None = field(default=None, repr=False, compare=False)  # decoded -> body
    _qp_lines: array | None = field(default=None, repr=False, compare=False)  # line starts
    _b64_span: tuple[int, int] = field(default=(0, 0), repr=False, compare=False)
    _b64_width: int = field(default=B64_DEFAULT, repr=False, compare=False)
    # per-position lookups, the same for every recipient's copy (render is called per copy)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)


# --- parsing ------------------------------------------------------------------------------


@dataclass
class _Entity:
    headers: email.message.Message
    body_start: int
    has_separator: bool


def _label(path: str) -> str:
    return path or "1"


def _line_ending(data: bytes, default: bytes = b"\r\n") -> bytes:
    nl = data.find(b"\n")
    if nl < 0:
        return default
    return b"\r\n" if nl > 0 and data[nl - 1] == 13 else b"\n"


def _parse_entity(raw: bytes, start: int, end: int) -> _Entity:
    """Split raw[start:end] into its header block and body; read the header fields.
    Raises _Skip on a header block that readers could disagree about."""
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
        raise _Skip(f"{len(values)} {name} headers")
    return None if not values else str(values[0])


def _param(msg: email.message.Message, name: str) -> str | None:
    value = msg.get_param(name)
    if value is None:
        return None
    return str(email.utils.collapse_rfc2231_value(value))


def _codec_for(name: str | None, cte: str) -> tuple[str, bool]:
    """(codec name, ascii_compatible) for a declared charset; raises _Skip."""
    if name is None:
        return "ascii", True
    try:
        codec = codecs.lookup(name.strip()).name
        b"".decode(codec)  # a text encoding, not a bytes-to-bytes codec
    except (LookupError, ValueError):
        raise _Skip(f"unknown charset {name!r}") from None
    if codec in NOT_CHARSETS:
        raise _Skip(f"unknown charset {name!r}")
    compatible = not codec.startswith(STATEFUL_PREFIXES)
    if compatible:
        try:
            compatible = (_PROBE.decode(codec) == _PROBE.decode("ascii")
                          and _PROBE.decode("ascii").encode(codec) == _PROBE)
        except (UnicodeError, LookupError):
            compatible = False
    if not compatible and cte != "base64":
        raise _Skip(f"charset {name!r} is stateful or not ASCII-compatible (CTE {cte})")
    return codec, compatible


def _qp_decode(body: bytes) -> tuple[bytes, array, array]:
    """Strict quoted-printable decoding. Returns the decoded bytes, the body offset of each
    decoded byte's encoding, and the body offsets where encoded lines start."""
    if _QP_BAD.search(body):
        raise _Skip("quoted-printable body with bytes outside printable ASCII or a bare CR")
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
            raise _Skip("quoted-printable line with trailing whitespace")
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
                raise _Skip("quoted-printable body with an invalid '=' escape")
        if not soft:
            out += body[cend:line_end]
            where.extend(range(cend, line_end))
        pos = line_end
    decoded = bytes(out)
    if binascii.a2b_qp(body) != decoded:
        raise _Skip("quoted-printable body that decoders could read differently")
    return decoded, where, lines


def _b64_decode(body: bytes) -> tuple[bytes, tuple[int, int], int]:
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
            raise _Skip("base64 body with characters outside the base64 alphabet")
    try:
        decoded = binascii.a2b_base64(b"".join(lines), strict_mode=True)
    except (binascii.Error, ValueError):
        raise _Skip("invalid base64 body") from None
    width = len(lines[0]) if len(lines) > 1 else B64_DEFAULT
    if not 0 < width <= LINE_MAX:
        raise _Skip("base64 body with unusable line length")
    return decoded, (core_start, core_end), width


def _char_offsets(text: str, decoded: bytes, codec: str) -> array:
    """Byte offset in `decoded` of every CHECKPOINT-th character of `text` (a stateless,
    ASCII-compatible charset), checked piece by piece against the bytes."""
    offsets = array("Q", [0])
    pos = 0
    for k in range(0, len(text), CHECKPOINT):
        piece = text[k:k + CHECKPOINT].encode(codec)
        if decoded[pos:pos + len(piece)] != piece:
            raise _Skip(f"cannot map {codec} characters to bytes")
        pos += len(piece)
        offsets.append(pos)
    if pos != len(decoded):
        raise _Skip(f"cannot map {codec} characters to bytes")
    return offsets


def _make_part(raw: bytes, ent: _Entity, end: int, path: str, subtype: str, cte: str,
               eol: bytes) -> TextPart:
    msg = ent.headers
    declared = _param(msg, "charset")
    charset = msg.get_content_charset()
    if declared is not None and charset is None:
        raise _Skip(f"unknown charset {declared!r}")
    if charset is not None and not charset.strip():
        raise _Skip("empty charset")
    if cte not in KNOWN_CTES:
        raise _Skip(f"unknown Content-Transfer-Encoding {cte!r}")
    codec, compatible = _codec_for(charset, cte)
    start = ent.body_start
    body = raw[start:end]
    qp_map = qp_lines = None
    b64_span, width = (0, 0), B64_DEFAULT
    if cte == "quoted-printable":
        decoded, qp_map, qp_lines = _qp_decode(body)
    elif cte == "base64":
        decoded, b64_span, width = _b64_decode(body)
    else:
        decoded = body
    if charset is None and not decoded.isascii():
        raise _Skip("8-bit bytes but no charset declared")
    try:
        text = decoded.decode(codec)
        if text.encode(codec) != decoded:
            raise _Skip(f"{charset} text does not re-encode to the same bytes")
    except UnicodeError:
        raise _Skip(f"body does not decode as {charset or 'us-ascii'}") from None
    same = False
    offsets = None
    if compatible and cte != "base64":
        same = len(text) == len(decoded) and all(len(c.encode(codec)) == 1 for c in set(text))
        if not same:
            offsets = _char_offsets(text, decoded, codec)
    b64_eol = _line_ending(body[b64_span[0]:b64_span[1]], eol) if cte == "base64" else eol
    flowed = (_param(msg, "format") or "").strip().lower() == "flowed"
    delsp = (_param(msg, "delsp") or "").strip().lower() == "yes"
    return TextPart(
        path=path, subtype=subtype, charset=codec, cte=cte, flowed=flowed, delsp=delsp,
        text=text, _start=start, _end=end, _body=body, _decoded=decoded,
        _eol=b64_eol if cte == "base64" else _line_ending(body, eol), _same_offsets=same,
        _offsets=offsets, _qp_map=qp_map, _qp_lines=qp_lines,
        _b64_span=b64_span, _b64_width=width,
    )


def decoded_size(body: bytes, cte: str) -> int:
    """Size of a body after its Content-Transfer-Encoding, without building the structures
    analysis needs (C codecs, memory about the size of the body)."""
    if cte == "quoted-printable":
        return len(binascii.a2b_qp(body))
    if cte == "base64":
        return len(binascii.a2b_base64(body))  # lenient: only for the size
    return len(body)


class _Walker:
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
        self.reasons.append(f"part {_label(path)}{f' ({what})' if what else ''}: {reason}")

    def walk(self, start: int, end: int, path: str, prefix: str, default_type: str,
             block: str | None, boundaries: tuple[bytes, ...], depth: int) -> None:
        try:
            self._walk(start, end, path, prefix, default_type, block, boundaries, depth)
        except _Malformed as e:
            self.malformed = self.malformed or f"part {_label(path)}: {e}"
            self.skip(path, "", str(e))
        except _Skip as e:
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
                raise _Skip(f"invalid Content-Type {main[:60]!r}")
            ctype = main.lower()
        maintype, subtype = ctype.split("/", 1)
        cte = (cte_header or "7bit").strip().lower()
        if maintype == "multipart":
            self._multipart(ent, end, prefix, ctype, cte, block, boundaries, depth)
            return
        if maintype == "message" and subtype in ("rfc822", "global"):
            if depth >= MAX_DEPTH:
                raise _Skip("nested too deeply")
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
                raise TooLarge(f"part {_label(path)} ({ctype}) has {size} bytes of text, "
                               f"over the limit of {self.max_text}")
        try:
            self.parts.append(_make_part(self.raw, ent, end, path, subtype, cte, self.eol))
        except _Skip as e:
            self.skip(path, ctype, str(e))

    def _multipart(self, ent: _Entity, end: int, prefix: str, ctype: str, cte: str,
                   block: str | None, boundaries: tuple[bytes, ...], depth: int) -> None:
        path = prefix
        if depth >= MAX_DEPTH:
            raise _Skip("nested too deeply")
        if cte not in IDENTITY_CTES:
            raise _Skip(f"{ctype} with Content-Transfer-Encoding {cte!r}")
        boundary_str = ent.headers.get_boundary()
        if not boundary_str:
            raise _Skip(f"{ctype} without a boundary")
        boundary = boundary_str.encode("latin-1")
        self.boundaries.add(boundary)
        if boundary in boundaries:
            raise _Skip(f"{ctype} reuses an enclosing boundary")
        if not ent.has_separator:
            raise _Skip(f"{ctype} without a body")
        subtype = ctype.split("/", 1)[1]
        if subtype in ("signed", "encrypted") and not block:
            block = f"inside multipart/{subtype} (rewriting would break it)"
        child_default = "message/rfc822" if subtype == "digest" else "text/plain"
        delim = re.compile(rb"(?m)^--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
        found = list(delim.finditer(self.raw, ent.body_start, end))
        bare_cr = re.compile(rb"\r(?!\n)--" + re.escape(boundary))
        if bare_cr.search(self.raw, ent.body_start, end):
            raise _Skip(f"{ctype} with a boundary after a bare CR (ambiguous)")
        if not found:
            raise _Skip(f"{ctype} without any boundary line")
        closes = [i for i, m in enumerate(found) if m.group(1)]
        if closes and closes[0] != len(found) - 1:
            raise _Skip(f"{ctype} with boundary lines after the closing one")
        if found[0].group(1):
            raise _Skip(f"{ctype} without any body part")
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


@dataclass(frozen=True)
class Analysis:
    parts: list[TextPart]  # the text parts that can be rewritten ([] when ambiguous)
    skipped: list[str]  # one human-readable reason per text part left as it is
    ambiguity: Ambiguity | None = None  # why the whole message is left as it is


def _email_leaves(msg: email.message.Message, path: str,
                  out: dict[str, email.message.Message]) -> None:
    if msg.is_multipart():
        for i, sub in enumerate(msg.get_payload()):
            if isinstance(sub, email.message.Message):
                _email_leaves(sub, f"{path}.{i + 1}" if path else str(i + 1), out)
    else:
        out[path] = msg


def _ambiguity(raw: bytes, walker: _Walker) -> Ambiguity | None:
    """Why readers could disagree about this message's structure, or None. relay.mime's walk
    is one reader; Python's email package (compat32, as most Python mail tools use it) is
    another, and a line that starts like a delimiter is read as one by lenient parsers."""
    if walker.malformed:
        return MalformedHeaderLine(walker.malformed)
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    defects = sorted({type(d).__name__ for p in msg.walk() for d in p.defects})
    if defects:
        return ParserDefect(", ".join(defects))
    for p in msg.walk():  # first-wins (the email package) or last-wins (others) readers
        names = [k.strip().lower() for k, _ in (p.get_params() or [])[1:]]
        for name in ("boundary", "charset", "format", "delsp"):
            if names.count(name) > 1:
                return OtherStructure(f"{names.count(name)} {name} parameters")
    bounds = set(walker.boundaries)
    for p in msg.walk():
        b = p.get_boundary() if p.is_multipart() else None
        if b:
            bounds.add(b.encode("latin-1", "replace"))
    starts = tuple(b"--" + b for b in bounds)
    if starts:
        like = re.compile(rb"(?m)^(?:" + b"|".join(re.escape(x) for x in starts) + rb")")
        for m in like.finditer(raw):
            if m.start() not in walker.delimiters:
                return BoundaryLikeLine(f"at byte {m.start()}")
    leaves: dict[str, email.message.Message] = {}
    _email_leaves(msg, "", leaves)
    for part in walker.parts:
        leaf = leaves.get(part.path)
        if leaf is None or leaf.get_content_type() != f"text/{part.subtype}":
            return OtherStructure(f"no text/{part.subtype} at part {_label(part.path)}")
        cte = str(leaf.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if cte in IDENTITY_CTES:  # the raw body bytes, as the email package holds them
            body = leaf.get_payload(decode=True)
        else:  # quoted-printable and base64 bodies are ASCII (relay.mime checked)
            payload = leaf.get_payload()
            body = payload.encode("ascii", "replace") if isinstance(payload, str) else b""
        if cte != part.cte or body != part._body:
            return OtherStructure(f"another body or encoding at part {_label(part.path)}")
        if part.cte == "quoted-printable" and starts and any(s in part._body for s in starts):
            # a soft line break could put it at the start of a line in a copy
            return BoundaryLikeLine(f"inside quoted-printable part {_label(part.path)}")
    return None


def analyse(raw: bytes, strict: bool = True, max_text: int | None = None) -> Analysis:
    """Every text/plain and text/html leaf part of the message (any nesting of multiparts) that
    can be rewritten safely, and one human-readable reason per text part that was skipped.
    `strict`: a message whose MIME structure readers could disagree about (see Ambiguity) has
    no parts to rewrite, and says why. Raises TooLarge, before decoding it, on a text part
    whose decoded body has more than `max_text` bytes."""
    try:
        if isinstance(raw, bytearray | memoryview):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            return Analysis([], [f"message is {type(raw).__name__}, not bytes"])
        walker = _Walker(raw, max_text)
        walker.walk(0, len(raw), "", "", "text/plain", None, (), 0)
        if strict:
            try:
                why = _ambiguity(raw, walker)
            except Exception as e:  # a reader that fails is a reader that disagrees
                why = ParserDefect(f"email package raised {type(e).__name__}")
            if why is not None:
                return Analysis([], [*walker.reasons, f"message: {why}"], why)
        return Analysis(walker.parts, walker.reasons)
    except TooLarge:
        raise
    except Exception as e:  # pragma: no cover - belt and braces
        return Analysis([], [f"message could not be parsed ({type(e).__name__})"])


def text_parts(raw: bytes, max_text: int | None = None) -> tuple[list[TextPart], list[str]]:
    """analyse(raw, strict=False): the parts relay.mime alone finds, and the reasons."""
    found = analyse(raw, strict=False, max_text=max_text)
    return found.parts, found.skipped


# --- rendering ----------------------------------------------------------------------------


def _check_edits(part: TextPart, edits: Sequence[tuple[int, int, str]]
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


def _apply(text: str, edits: Sequence[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    pos = 0
    for start, end, new in edits:
        pieces.append(text[pos:start])
        pieces.append(new)
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def _byte_edits(part: TextPart, edits: Sequence[tuple[int, int, str]]
                ) -> list[tuple[int, int, bytes]]:
    """The edits as offsets into the decoded bytes (ASCII-compatible charsets)."""
    codec, text, dec, memo = part.charset, part.text, part._decoded, part._memo
    out: list[tuple[int, int, bytes]] = []
    for start, end, new in edits:
        new_b = new.encode(codec)
        if part._same_offsets:
            bs, be = start, end
        elif (start, end) in memo:
            bs, be = memo[start, end]
        else:
            assert part._offsets is not None
            k = start // CHECKPOINT
            lc, lb = k * CHECKPOINT, part._offsets[k]
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


def _splice(data: bytes, edits: Sequence[tuple[int, int, bytes]]) -> bytes:
    pieces: list[bytes] = []
    pos = 0
    for start, end, new in edits:
        pieces.append(data[pos:start])
        pieces.append(new)
        pos = end
    pieces.append(data[pos:])
    return b"".join(pieces)


def _render_identity(part: TextPart, bedits: list[tuple[int, int, bytes]]) -> bytes:
    body = _splice(part._body, bedits)
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


def _qp_encode(data: bytes, at_line_end: bool) -> bytes:
    """Quoted-printable form of `data` (ASCII); trailing whitespace encoded if at a line end."""
    if _QP_LITERAL.fullmatch(data):
        out = data
    else:
        out = b"".join(bytes((c,)) if 32 <= c <= 126 and c != 61 or c == 9 else b"=%02X" % c
                       for c in data)
    if at_line_end and out[-1:] in (b" ", b"\t"):
        out = out[:-1] + b"=%02X" % out[-1]
    return out


def _qp_wrap(content: bytes, eol: bytes) -> bytes:
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


def _render_qp(part: TextPart, bedits: list[tuple[int, int, bytes]]) -> bytes:
    body, dec = part._body, part._decoded
    where, lines = part._qp_map, part._qp_lines
    assert where is not None and lines is not None
    nbody = len(body)
    ops: list[tuple[int, int, bytes]] = []  # (a, b, new) on the body, in order
    for bs, be, new_b in bedits:
        if bs == be:  # pure insertion before decoded byte bs
            if bs >= len(dec):
                raise UnsafeEdit("insertion at the end of the body")
            a = where[bs]
            ops.append((a, a, _qp_encode(new_b, False)))
            continue
        key = ("qp", bs, be)
        if key in part._memo:
            a, b, rest, at_line_end = part._memo[key]
            ops.append((a, b, _qp_encode(new_b, at_line_end)))
            ops.extend(rest)
            continue
        # the encoded run: one segment per encoded line it spans (soft breaks in between)
        a = where[bs]
        b = a + (3 if body[a] == 61 else 1)
        rest: list[tuple[int, int, bytes]] = []
        for k in range(bs + 1, be):
            s = where[k]
            length = 3 if body[s] == 61 else 1
            if s == (rest[-1][1] if rest else b):
                if rest:
                    rest[-1] = (rest[-1][0], s + length, b"")
                else:
                    b = s + length
            else:
                rest.append((s, s + length, b""))
        at_line_end = b == nbody or body[b] in (10, 13)
        if len(part._memo) < MEMO_MAX:
            part._memo[key] = a, b, rest, at_line_end
        ops.append((a, b, _qp_encode(new_b, at_line_end)))
        ops.extend(rest)
    out: list[bytes] = []
    pos = 0
    i, nops, nlines = 0, len(ops), len(lines)
    while i < nops:
        k = bisect_right(lines, ops[i][0]) - 1
        ls = lines[k]
        le = lines[k + 1] if k + 1 < nlines else nbody
        ce = le
        if ce > ls and body[ce - 1] == 10:
            ce -= 2 if ce - 1 > ls and body[ce - 2] == 13 else 1
        if ls < pos:
            raise UnsafeEdit("edits out of order")
        pieces: list[bytes] = []
        p = ls
        while i < nops and ops[i][0] < le:
            a, b, new = ops[i]
            if a < p or b > ce:
                raise UnsafeEdit("edits overlap or cross a quoted-printable line end")
            pieces.append(body[p:a])
            pieces.append(new)
            p = b
            i += 1
        pieces.append(body[p:ce])
        content = b"".join(pieces)
        if content[-1:] in (b" ", b"\t"):
            raise UnsafeEdit("quoted-printable line would end in whitespace")
        out.append(body[pos:ls])
        out.append(_qp_wrap(content, body[ce:le] or part._eol))
        pos = ce
    out.append(body[pos:])
    return b"".join(out)


def _render_b64(part: TextPart, new_text: str) -> bytes:
    try:
        data = new_text.encode(part.charset)
    except UnicodeError:
        raise UnsafeEdit("edited text does not encode") from None
    enc = binascii.b2a_base64(data, newline=False)
    w = part._b64_width
    core = part._eol.join(enc[i:i + w] for i in range(0, len(enc), w))
    a, b = part._b64_span
    return part._body[:a] + core + part._body[b:]


def _decode_body(part: TextPart, body: bytes) -> str:
    if part.cte == "quoted-printable":
        data = binascii.a2b_qp(body)
    elif part.cte == "base64":
        data = binascii.a2b_base64(body)
    else:
        data = body
    return data.decode(part.charset)


def _render_part(part: TextPart, edits: Sequence[tuple[int, int, str]]) -> bytes:
    checked = _check_edits(part, edits)
    if not checked:
        return part._body
    new_text = _apply(part.text, checked)
    if part.cte == "base64":
        body = _render_b64(part, new_text)
    else:
        if part._offsets is None and not part._same_offsets:
            raise UnsafeEdit(f"{part.charset} can only be rewritten whole")
        bedits = _byte_edits(part, checked)
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
                if (other._start, other._end) != (part._start, part._end):
                    raise UnsafeEdit(f"two different parts named {_label(part.path)}")
            by_path[part.path] = part
        todo: list[tuple[TextPart, Sequence[tuple[int, int, str]]]] = []
        for path, part_edits in edits.items():
            part = by_path.get(path)
            if part is None:
                raise UnsafeEdit(f"edits for unknown part {_label(path)}")
            if raw[part._start:part._end] != part._body:
                raise UnsafeEdit(f"part {_label(path)} does not belong to this message")
            todo.append((part, part_edits))
        todo.sort(key=lambda t: t[0]._start)
        out: list[bytes] = []
        pos = 0
        for part, part_edits in todo:
            if part._start < pos:
                raise UnsafeEdit("overlapping parts")
            out.append(raw[pos:part._start])
            try:
                out.append(_render_part(part, part_edits))
            except UnsafeEdit as e:
                if len(todo) > 1:
                    raise UnsafeEdit(f"part {_label(part.path)}: {e}") from e
                raise
            pos = part._end
        if not out:
            return raw
        out.append(raw[pos:])
        return b"".join(out)
    except UnsafeEdit:
        raise
    except Exception as e:
        raise UnsafeEdit(f"cannot render ({type(e).__name__}: {e})") from e
