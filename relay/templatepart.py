"""One text part's share of a message's copy template (relay.template): the part with every
carrier single and every mark applied, already in its transfer encoding (`PartBase`), and the
byte offset where each carrier's doubling bytes go.

- 7bit/8bit parts: positions in the body bytes. `fingerprint._fit_lines` already keeps the
  all-doubled copy under 998 octets per line; copies are byte-identical to `splice.render`'s.
- quoted-printable: positions in the encoded body. An encoded line that stays within 76 octets
  with all its carriers doubled is the line `splice.render` makes. A line that could pass 76 gets
  its soft line breaks placed here, once per message, with room reserved for all its carriers
  doubled (never inside an =XX escape, never before "." or "From "; a space may end a piece
  before its "="): such a line decodes to the same text as `splice.render`'s, its breaks can sit
  elsewhere. The slack is that reserved room: those pieces are shorter than 76 when single.
- base64: the base and the positions in the decoded bytes; per copy binascii (C) encodes and
  numpy cuts the lines at the part's width (the bytes `splice.render` makes).
- A part the template cannot make (a charset that is not ASCII-compatible, or stateful; an edit
  it cannot place; a line it cannot break) gets no template: its copies are made by the caller's
  reference renderer (`fallback`), as before.

Pure: no I/O.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from . import qp, splice
from .charsets import STATEFUL_PREFIXES
from .qp import QP_LINE_MAX
from .textpart import IDENTITY_CTES, TextPart, UnsafeEdit

_NO_LINE_START = re.compile(rb"\.|From ")  # where a soft break may not put a line start

# one carrier of a part: (start, end) in the part's text, its single form, and what its doubled
# form inserts before the single form (doubled == insert + single)
Carrier = tuple[int, int, str, str]
Mark = tuple[int, int, str]


class NoTemplate(Exception):
    """A part the template cannot make; its copies are made the reference way."""


@dataclass
class PartBase:
    """A part rendered with every carrier single, and where each carrier inserts."""

    part: TextPart
    body: bytes  # identity / QP: the encoded body; base64: the decoded bytes
    at: list[int]  # per carrier, in bits order: insertion offset in `body`
    insert: list[bytes]  # per carrier: the bytes inserted when doubled


def _ops(part: TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
         ) -> list[tuple[int, int, str, int]]:
    """The all-single edits, sorted as the reference sorts them: (start, end, new, carrier
    index or -1)."""
    ops = [(s, e, new, -1) for s, e, new in marks]
    ops += [(s, e, single, k) for k, (s, e, single, _) in enumerate(carriers)]
    ops.sort(key=lambda o: (o[0], o[1], o[2]))
    for (_, e0, _, _), (s1, _, _, _) in zip(ops, ops[1:], strict=False):
        if s1 < e0:
            raise NoTemplate("overlapping edits")
    return ops


def _inserts(part: TextPart, carriers: Sequence[Carrier]) -> list[bytes]:
    done: dict[tuple[str, str], bytes] = {}
    for _, _, single, ins in carriers:
        if (single, ins) in done:
            continue
        try:
            b = ins.encode(part.charset)
            one = single.encode(part.charset)
        except (UnicodeError, LookupError):
            raise NoTemplate("charset cannot encode a carrier") from None
        if b != ins.encode("ascii", "replace") or one != single.encode("ascii", "replace"):
            raise NoTemplate(f"{part.charset} is not ASCII-compatible")
        done[single, ins] = b
    return [done[single, ins] for _, _, single, ins in carriers]


def _byte_ops(part: TextPart, ops: list[tuple[int, int, str, int]]
              ) -> list[tuple[int, int, bytes, int]]:
    if part.offsets is None and not part.same_offsets:
        raise NoTemplate(f"{part.charset} can only be rewritten whole")
    try:
        bedits = splice.byte_edits(part, [(s, e, new) for s, e, new, _ in ops])
    except (UnsafeEdit, UnicodeError):
        raise NoTemplate("cannot locate an edit in the bytes") from None
    return [(bs, be, nb, k) for (bs, be, nb), (_, _, _, k) in zip(bedits, ops, strict=True)]


def _identity_base(part: TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
                   ) -> PartBase:
    bops = _byte_ops(part, _ops(part, carriers, marks))
    body = part.body
    at = [0] * len(carriers)
    pieces: list[bytes] = []
    size = pos = 0
    for bs, be, nb, k in bops:
        pieces.append(body[pos:bs])
        size += bs - pos
        if k >= 0:
            at[k] = size
        pieces.append(nb)
        size += len(nb)
        pos = be
    pieces.append(body[pos:])
    return PartBase(part, b"".join(pieces), at, _inserts(part, carriers))


def _qp_break(content: bytes, rel: list[int], grow: list[int], eol: bytes
              ) -> tuple[bytes, list[int]]:
    """Soft line breaks in `content` (one encoded line, no line ending) such that every piece
    stays within 76 octets with every insertion (rel[i], grow[i] bytes) made: an insertion at
    a break goes to the start of the piece after it. Returns the broken line and the
    insertions' new offsets."""
    n = len(content)
    extra = [0] * (n + 2)  # extra[i]: insertion bytes at offsets < i
    for p, g in zip(rel, grow, strict=True):
        extra[p + 1] += g
    for i in range(1, n + 2):
        extra[i] += extra[i - 1]
    bad = bytearray(n + 1)  # a break before content[c] is not allowed
    e = content.find(b"=")
    while e >= 0:
        if e == n - 1:  # the line's own soft break
            bad[e] = 1
        else:
            bad[e + 1] = bad[min(e + 2, n)] = 1
        e = content.find(b"=", e + 1)
    for m in _NO_LINE_START.finditer(content):
        bad[m.start()] = 1
    cuts: list[int] = []
    s = 0
    while (n - s) + extra[n + 1] - extra[s] > QP_LINE_MAX:
        c = min(n - 1, s + QP_LINE_MAX - 1)
        while c > s and ((c - s) + extra[c] - extra[s] + 1 > QP_LINE_MAX or bad[c]):
            c -= 1
        if c <= s:
            raise NoTemplate("cannot break a quoted-printable line")
        cuts.append(c)
        s = c
    step = 1 + len(eol)
    pieces, prev = [], 0
    for c in cuts:
        pieces.append(content[prev:c])
        prev = c
    pieces.append(content[prev:])
    moved = [p + bisect_right(cuts, p) * step for p in rel]
    return (b"=" + eol).join(pieces), moved


def _qp_base(part: TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
             ) -> PartBase:
    """splice._render_qp with every carrier single, tracking where each carrier inserts; lines
    that could pass 76 with their carriers doubled are broken with room for them."""
    bops = _byte_ops(part, _ops(part, carriers, marks))
    inserts = _inserts(part, carriers)
    body, dec = part.body, part.decoded
    where, lines = part.qp_map, part.qp_lines
    if where is None or lines is None:
        raise NoTemplate("no quoted-printable map")
    ops: list[tuple[int, int, bytes, int]] = []  # on the body, in order
    for bs, be, nb, k in bops:
        if bs == be:
            if bs >= len(dec):
                raise NoTemplate("insertion at the end of the body")
            a = where[bs]
            ops.append((a, a, qp.encode(nb, False), k))
            continue
        a, b, rest, at_line_end = qp.encoded_run(body, where, bs, be)
        ops.append((a, b, qp.encode(nb, at_line_end), k))
        ops.extend((s, e, b"", -1) for s, e in rest)
    at = [0] * len(carriers)
    out: list[bytes] = []
    size = pos = 0
    try:
        for ls, le, ce, content, placed in qp.edited_lines(body, lines, ops):
            who = [k for k, _ in placed if k >= 0]
            rel = [r for k, r in placed if k >= 0]
            eol = body[ce:le] or part.eol
            grow = [len(inserts[k]) for k in who]
            if not who or len(content) + sum(grow) <= QP_LINE_MAX:
                line = qp.wrap(content, eol)  # as the reference makes it
                moved = rel
            else:
                line, moved = _qp_break(content, rel, grow, eol)
            out.append(body[pos:ls])
            size += ls - pos
            for k, r in zip(who, moved, strict=True):
                at[k] = size + r
            out.append(line)
            size += len(line)
            pos = ce
    except UnsafeEdit as e:
        raise NoTemplate(str(e)) from None
    out.append(body[pos:])
    return PartBase(part, b"".join(out), at, inserts)


def _b64_base(part: TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
              ) -> PartBase:
    if part.charset.startswith(STATEFUL_PREFIXES):
        raise NoTemplate(f"{part.charset} is stateful")
    inserts = _inserts(part, carriers)
    ops = _ops(part, carriers, marks)
    text, codec = part.text, part.charset
    at = [0] * len(carriers)
    pieces: list[bytes] = []
    size = pos = 0
    try:
        for s, e, new, k in ops:
            piece = text[pos:s].encode(codec)
            pieces.append(piece)
            size += len(piece)
            if k >= 0:
                at[k] = size
            nb = new.encode(codec)
            pieces.append(nb)
            size += len(nb)
            pos = e
        pieces.append(text[pos:].encode(codec))
        whole = splice.apply(text, [(s, e, new) for s, e, new, _ in ops]).encode(codec)
    except (UnicodeError, LookupError):
        raise NoTemplate("edited text does not encode") from None
    data = b"".join(pieces)
    if data != whole:
        raise NoTemplate(f"{codec} does not encode piece by piece")
    return PartBase(part, data, at, inserts)


def part_base(part: TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
              ) -> PartBase:
    """The part with every carrier single and every mark applied, and where each carrier's
    insertion goes. Raises NoTemplate."""
    for single, ins in {(c[2], c[3]) for c in carriers}:
        if not ins or any(not 32 <= ord(c) < 127 for c in ins + single):
            raise NoTemplate("a carrier that is not printable ASCII")
    if part.cte == "base64":
        return _b64_base(part, carriers, marks)
    if part.cte == "quoted-printable":
        return _qp_base(part, carriers, marks)
    if part.cte in IDENTITY_CTES:
        return _identity_base(part, carriers, marks)
    raise NoTemplate(f"Content-Transfer-Encoding {part.cte}")
