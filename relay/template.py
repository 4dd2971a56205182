"""A message's copy template: made once per message, so that a copy is bits in, bytes out.

Every carrier's doubled form is its single form with fixed ASCII bytes inserted before it (plain
text: one space before the space; HTML: `&nbsp;` before the space, or before the line end of the
source for a zero-width carrier). So a recipient's copy is a *base* (the message with every
carrier single and every mark applied, already in its transfer encoding) with those bytes
inserted at precomputed byte positions for the carriers its bits double: one numpy insertion
per run of parts (a loop over parts, never over carriers), no per-copy tokenising, no
per-character quoted-printable or base64 work in Python.

- 7bit/8bit parts: positions in the body bytes. `fingerprint._fit_lines` already keeps the
  all-doubled copy under 998 octets per line; copies are byte-identical to `mime.render`'s.
- quoted-printable: positions in the encoded body. An encoded line that stays within 76 octets
  with all its carriers doubled is the line `mime.render` makes. A line that could pass 76 gets
  its soft line breaks placed here, once per message, with room reserved for all its carriers
  doubled (never inside an =XX escape, never before "." or "From "; a space may end a piece
  before its "="): such a line decodes to the same text as `mime.render`'s, its breaks can sit
  elsewhere. The slack is that reserved room: those pieces are shorter than 76 when single.
- base64: the base and the positions in the decoded bytes; per copy binascii (C) encodes and
  numpy cuts the lines at the part's width (the bytes `mime.render` makes).
- A part the template cannot make (a charset that is not ASCII-compatible, or stateful; an edit
  it cannot place; a line it cannot break) gets no template: its copies are made by the caller's
  reference renderer (`fallback`), as before.

`build()` checks the template once per message, instead of decoding every copy again: the copies
with every carrier single, every one doubled and CHECK_PATTERNS fixed random patterns must
decode to the expected text, stay within the line limits, keep every byte outside the text
bodies, and (7bit/8bit) equal the reference's bytes. tests/test_template.py proves the rest.
Pure: no I/O.
"""

from __future__ import annotations

import binascii
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import mime

QP_MAX = mime.QP_LINE_MAX
LINE_MAX = mime.LINE_MAX
CHECK_PATTERNS = 1  # random bit patterns checked at build, besides all-single and all-doubled
STATEFUL = mime.STATEFUL_PREFIXES
_NO_LINE_START = re.compile(rb"\.|From ")  # where a soft break may not put a line start

# one carrier of a part: (start, end) in the part's text, its single form, and what its doubled
# form inserts before the single form (doubled == insert + single)
Carrier = tuple[int, int, str, str]
Mark = tuple[int, int, str]
Bits = Sequence[int] | np.ndarray
Fallback = Callable[[int, np.ndarray], bytes]  # (part index, the part's bits) -> its body


class NoTemplate(Exception):
    """A part the template cannot make; its copies are made the reference way."""


def as_bits(bits: Bits) -> np.ndarray:
    """Bits as a uint8 array of 0/1 (a list of ints, bytes or an array)."""
    if isinstance(bits, np.ndarray):
        arr = bits if bits.dtype == np.uint8 else bits.astype(np.uint8)
    else:
        arr = np.frombuffer(bytes(bits), dtype=np.uint8)
    return arr


def _insert(base: np.ndarray, pos: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """base with vals[i] inserted before base[pos[i]]; pos sorted (ties keep their order)."""
    m = len(pos)
    if not m:
        return base
    n = len(base)
    idx = pos + np.arange(m, dtype=pos.dtype)
    out = np.empty(n + m, dtype=np.uint8)
    keep = np.ones(n + m, dtype=bool)
    keep[idx] = False
    out[idx] = vals
    out[keep] = base
    return out


@dataclass
class _Run:
    """One part's carriers inside a _Flat: where each inserts, and what (the same bytes for
    every carrier of a part)."""

    pos: np.ndarray  # int64, per carrier, sorted
    first: int  # the part's first bit in the bits the _Flat is given
    count: int
    perm: np.ndarray | None  # the carriers (bits order) by position; None: already in order
    payload: np.ndarray  # uint8

    def positions(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = bits[self.first:self.first + self.count]
        if self.perm is not None:
            b = b[self.perm]
        p = self.pos[b != 0]
        k = len(self.payload)
        if k == 1:
            return p, np.full(len(p), self.payload[0], dtype=np.uint8)
        return np.repeat(p, k), np.tile(self.payload, len(p))


@dataclass
class _Flat:
    """Bytes with insertions: one run of the message (raw bytes and identity/QP part bodies)."""

    base: np.ndarray  # uint8
    runs: list[_Run]  # in the order of their positions

    def render(self, bits: np.ndarray) -> np.ndarray:
        if not self.runs:
            return self.base
        if len(self.runs) == 1:
            pos, vals = self.runs[0].positions(bits)
        else:
            got = [run.positions(bits) for run in self.runs]  # a loop over parts
            pos = np.concatenate([p for p, _ in got])
            vals = np.concatenate([v for _, v in got])
        return _insert(self.base, pos, vals)


@dataclass
class _PartBase:
    """A part rendered with every carrier single, and where each carrier inserts."""

    part: mime.TextPart
    body: bytes  # identity / QP: the encoded body; base64: the decoded bytes
    at: list[int]  # per carrier, in bits order: insertion offset in `body`
    insert: list[bytes]  # per carrier: the bytes inserted when doubled


@dataclass
class _B64:
    index: int  # the part's index (for its bits)
    first: int  # the part's first bit in the message's bits
    flat: _Flat  # over the decoded bytes; owner relative to `first`
    head: bytes  # part body before the encoded lines
    tail: bytes
    width: int
    eol: bytes

    def render(self, bits: np.ndarray) -> bytes:
        dec = self.flat.render(bits).tobytes()
        enc = np.frombuffer(binascii.b2a_base64(dec, newline=False), dtype=np.uint8)
        return self.head + _wrap(enc, self.width, self.eol) + self.tail


def _wrap(enc: np.ndarray, width: int, eol: bytes) -> bytes:
    """Lines of `width` joined by eol (no eol after the last), as mime._render_b64 cuts them."""
    n = len(enc)
    full, rest = divmod(n, width)
    if full == 0 or (full == 1 and rest == 0):
        return enc.tobytes()
    e = np.frombuffer(eol, dtype=np.uint8)
    rows = np.empty((full, width + len(e)), dtype=np.uint8)
    rows[:, :width] = enc[:full * width].reshape(full, width)
    rows[:, width:] = e
    flat = rows.ravel()
    if rest:
        return flat.tobytes() + enc[full * width:].tobytes()
    return flat[:-len(e)].tobytes()


@dataclass
class _Other:
    index: int
    first: int
    count: int


@dataclass
class MessageTemplate:
    """What every copy of a message shares; `copy(bits)` makes one recipient's copy."""

    raw: bytes
    items: list[_Flat | _B64 | _Other]
    fallback: Fallback
    nbits: int
    templated: list[bool] = field(default_factory=list)  # per part: made by the template
    why: list[str] = field(default_factory=list)  # per part without a template: why not

    def copy(self, bits: Bits) -> bytes:
        arr = as_bits(bits)
        if len(arr) != self.nbits:
            raise ValueError(f"{len(arr)} bits for {self.nbits} carriers")
        out: list[bytes] = []
        for item in self.items:
            if isinstance(item, _Flat):
                out.append(item.render(arr).tobytes())
            elif isinstance(item, _B64):
                out.append(item.render(arr[item.first:]))
            else:
                out.append(self.fallback(item.index, arr[item.first:item.first + item.count]))
        return b"".join(out)


# --- one part's base ----------------------------------------------------------------------


def _ops(part: mime.TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
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


def _inserts(part: mime.TextPart, carriers: Sequence[Carrier]) -> list[bytes]:
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


def _byte_ops(part: mime.TextPart, ops: list[tuple[int, int, str, int]]
              ) -> list[tuple[int, int, bytes, int]]:
    if part._offsets is None and not part._same_offsets:
        raise NoTemplate(f"{part.charset} can only be rewritten whole")
    try:
        bedits = mime._byte_edits(part, [(s, e, new) for s, e, new, _ in ops])
    except (mime.UnsafeEdit, UnicodeError):
        raise NoTemplate("cannot locate an edit in the bytes") from None
    return [(bs, be, nb, k) for (bs, be, nb), (_, _, _, k) in zip(bedits, ops, strict=True)]


def _identity_base(part: mime.TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
                   ) -> _PartBase:
    bops = _byte_ops(part, _ops(part, carriers, marks))
    body = part._body
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
    return _PartBase(part, b"".join(pieces), at, _inserts(part, carriers))


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
    while (n - s) + extra[n + 1] - extra[s] > QP_MAX:
        c = min(n - 1, s + QP_MAX - 1)
        while c > s and ((c - s) + extra[c] - extra[s] + 1 > QP_MAX or bad[c]):
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


def _qp_base(part: mime.TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
             ) -> _PartBase:
    """mime._render_qp with every carrier single, tracking where each carrier inserts; lines
    that could pass 76 with their carriers doubled are broken with room for them."""
    bops = _byte_ops(part, _ops(part, carriers, marks))
    inserts = _inserts(part, carriers)
    body, dec = part._body, part._decoded
    where, lines = part._qp_map, part._qp_lines
    if where is None or lines is None:
        raise NoTemplate("no quoted-printable map")
    nbody = len(body)
    ops: list[tuple[int, int, bytes, int]] = []  # on the body, in order
    for bs, be, nb, k in bops:
        if bs == be:
            if bs >= len(dec):
                raise NoTemplate("insertion at the end of the body")
            a = where[bs]
            ops.append((a, a, mime._qp_encode(nb, False), k))
            continue
        a = where[bs]
        b = a + (3 if body[a] == 61 else 1)
        rest: list[tuple[int, int]] = []
        for j in range(bs + 1, be):
            s = where[j]
            length = 3 if body[s] == 61 else 1
            if s == (rest[-1][1] if rest else b):
                if rest:
                    rest[-1] = (rest[-1][0], s + length)
                else:
                    b = s + length
            else:
                rest.append((s, s + length))
        at_line_end = b == nbody or body[b] in (10, 13)
        ops.append((a, b, mime._qp_encode(nb, at_line_end), k))
        ops.extend((s, e, b"", -1) for s, e in rest)
    at = [0] * len(carriers)
    out: list[bytes] = []
    size = pos = 0
    i, nops, nlines = 0, len(ops), len(lines)
    while i < nops:
        li = bisect_right(lines, ops[i][0]) - 1
        ls = lines[li]
        le = lines[li + 1] if li + 1 < nlines else nbody
        ce = le
        if ce > ls and body[ce - 1] == 10:
            ce -= 2 if ce - 1 > ls and body[ce - 2] == 13 else 1
        if ls < pos:
            raise NoTemplate("edits out of order")
        pieces: list[bytes] = []
        rel: list[int] = []
        who: list[int] = []
        clen = 0
        p = ls
        while i < nops and ops[i][0] < le:
            a, b, new, k = ops[i]
            if a < p or b > ce:
                raise NoTemplate("edits overlap or cross a quoted-printable line end")
            pieces.append(body[p:a])
            clen += a - p
            if k >= 0:
                rel.append(clen)
                who.append(k)
            pieces.append(new)
            clen += len(new)
            p = b
            i += 1
        pieces.append(body[p:ce])
        content = b"".join(pieces)
        if content[-1:] in (b" ", b"\t"):
            raise NoTemplate("quoted-printable line would end in whitespace")
        eol = body[ce:le] or part._eol
        grow = [len(inserts[k]) for k in who]
        if not who or len(content) + sum(grow) <= QP_MAX:
            line = mime._qp_wrap(content, eol)  # as the reference makes it
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
    out.append(body[pos:])
    return _PartBase(part, b"".join(out), at, inserts)


def _b64_base(part: mime.TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
              ) -> _PartBase:
    if part.charset.startswith(STATEFUL):
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
        whole = mime._apply(text, [(s, e, new) for s, e, new, _ in ops]).encode(codec)
    except (UnicodeError, LookupError):
        raise NoTemplate("edited text does not encode") from None
    data = b"".join(pieces)
    if data != whole:
        raise NoTemplate(f"{codec} does not encode piece by piece")
    return _PartBase(part, data, at, inserts)


def part_base(part: mime.TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark]
              ) -> _PartBase:
    """The part with every carrier single and every mark applied, and where each carrier's
    insertion goes. Raises NoTemplate."""
    for single, ins in {(c[2], c[3]) for c in carriers}:
        if not ins or any(not 32 <= ord(c) < 127 for c in ins + single):
            raise NoTemplate("a carrier that is not printable ASCII")
    if part.cte == "base64":
        return _b64_base(part, carriers, marks)
    if part.cte == "quoted-printable":
        return _qp_base(part, carriers, marks)
    if part.cte in mime.IDENTITY_CTES:
        return _identity_base(part, carriers, marks)
    raise NoTemplate(f"Content-Transfer-Encoding {part.cte}")


# --- the message -------------------------------------------------------------------------


class _FlatBuilder:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.runs: list[_Run] = []

    def add(self, data: bytes) -> None:
        self.pieces.append(data)
        self.size += len(data)

    def add_part(self, pb: _PartBase, first: int) -> None:
        if pb.at:
            if len(set(pb.insert)) != 1:
                raise NoTemplate("carriers of a part that insert different bytes")
            at = np.array(pb.at, dtype=np.int64) + self.size
            order = np.argsort(at, kind="stable")
            ordered = bool((order == np.arange(len(at))).all())
            self.runs.append(_Run(at[order], first, len(at), None if ordered else order,
                                  np.frombuffer(pb.insert[0], dtype=np.uint8)))
        self.add(pb.body)

    def done(self) -> _Flat:
        return _Flat(np.frombuffer(b"".join(self.pieces), dtype=np.uint8), self.runs)


def _sorted(flat: _Flat) -> _Flat:
    if any(len(r.pos) and (r.pos[0] < 0 or r.pos[-1] > len(flat.base)) for r in flat.runs):
        raise NoTemplate("insertions out of range")
    ends = [(r.pos[0], r.pos[-1]) for r in flat.runs if len(r.pos)]
    if any(a[1] > b[0] for a, b in zip(ends, ends[1:], strict=False)):
        raise NoTemplate("insertions out of order")
    return flat


def assemble(raw: bytes, parts: Sequence[mime.TextPart], bases: Sequence[_PartBase | None],
             counts: Sequence[int], fallback: Fallback) -> MessageTemplate:
    """The message template from each part's base (None: that part's body is made by
    `fallback` per copy). `counts`: carriers per part, the parts in bits order."""
    firsts = [0]
    for c in counts:
        firsts.append(firsts[-1] + c)
    items: list[_Flat | _B64 | _Other] = []
    fb = _FlatBuilder()
    pos = 0
    for i in sorted(range(len(parts)), key=lambda i: parts[i]._start):
        part, pb = parts[i], bases[i]
        if part._start < pos or raw[part._start:part._end] != part._body:
            raise NoTemplate("parts overlap or do not belong to the message")
        fb.add(raw[pos:part._start])
        pos = part._end
        if pb is None:
            items.append(_sorted(fb.done()))
            fb = _FlatBuilder()
            items.append(_Other(i, firsts[i], counts[i]))
        elif part.cte == "base64":
            items.append(_sorted(fb.done()))
            fb = _FlatBuilder()
            a, b = part._b64_span
            sub = _FlatBuilder()
            sub.add_part(pb, 0)
            items.append(_B64(i, firsts[i], _sorted(sub.done()), part._body[:a],
                              part._body[b:], part._b64_width, part._eol))
        else:
            fb.add_part(pb, firsts[i])
    fb.add(raw[pos:])
    items.append(_sorted(fb.done()))
    items = [it for it in items if not (isinstance(it, _Flat) and not len(it.base))]
    return MessageTemplate(raw, items, fallback, firsts[-1],
                           [pb is not None for pb in bases])


# --- checking it once per message ---------------------------------------------------------


def expected_text(part: mime.TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark],
                  bits: np.ndarray) -> str:
    """The part's text in a copy with these bits (the reference's edits, applied)."""
    edits = list(marks)
    edits += [(s, e, ins + single if b else single)
              for (s, e, single, ins), b in zip(carriers, bits.tolist(), strict=True)]
    edits.sort()
    return mime._apply(part.text, edits)


def _long_lines(body: bytes, limit: int) -> set[bytes]:
    return {line for line in body.replace(b"\r\n", b"\n").split(b"\n") if len(line) > limit}


def _check_part(part: mime.TextPart, got: mime.TextPart, carriers: Sequence[Carrier],
                marks: Sequence[Mark], bits: np.ndarray) -> str | None:
    """Why the template's copy of a part is wrong (None when it is right)."""
    if got.cte != part.cte or got.charset != part.charset or got.subtype != part.subtype:
        return "another part"
    want = expected_text(part, carriers, marks, bits)
    if got.text != want:
        return "another text"
    body = got._body
    if part.cte == "quoted-printable":
        if not _long_lines(body, QP_MAX) <= _long_lines(part._body, QP_MAX):
            return "a quoted-printable line over 76 octets"
    elif part.cte == "base64":
        a, b = got._b64_span
        lines = body[a:b].replace(b"\r\n", b"\n").split(b"\n")
        if any(len(x) != part._b64_width for x in lines[:-1]) or len(lines[-1]) > \
                part._b64_width:
            return "base64 lines of another width"
    else:
        if not _long_lines(body, LINE_MAX) <= _long_lines(part._body, LINE_MAX):
            return f"a line over {LINE_MAX} octets"
        edits = sorted([*marks, *((s, e, ins + single if b else single) for (s, e, single, ins), b
                                  in zip(carriers, bits.tolist(), strict=True))])
        ref = mime._splice(part._body, mime._byte_edits(part, mime._check_edits(part, edits)))
        if body != ref:
            return "other bytes than the reference"
    return None


def check(tmpl: MessageTemplate, parts: Sequence[mime.TextPart],
          carriers: Sequence[Sequence[Carrier]], marks: Sequence[Sequence[Mark]],
          bits: np.ndarray) -> dict[int, str]:
    """Per templated part, why its copy with these bits is wrong (empty: all right). Also
    checks that every byte outside the text bodies is the original's."""
    copy = tmpl.copy(bits)
    found = mime.analyse(copy, strict=False)
    by_path = {p.path: p for p in found.parts}
    firsts = [0]
    for c in carriers:
        firsts.append(firsts[-1] + len(c))
    bad: dict[int, str] = {}
    spans: list[tuple[int, mime.TextPart]] = []
    for i, part in enumerate(parts):
        got = by_path.get(part.path)
        if got is None:
            bad[i] = "part not found in the copy"
            continue
        spans.append((i, got))
        if not tmpl.templated[i]:
            continue
        why = _check_part(part, got, carriers[i], marks[i], bits[firsts[i]:firsts[i + 1]])
        if why is not None:
            bad[i] = why
    if not bad:
        spans.sort(key=lambda t: parts[t[0]]._start)
        o = c = 0
        for i, got in spans:
            if tmpl.raw[o:parts[i]._start] != copy[c:got._start]:
                bad[i] = "bytes outside the text bodies"
            o, c = parts[i]._end, got._end
        if tmpl.raw[o:] != copy[c:] and spans:
            bad[spans[-1][0]] = "bytes outside the text bodies"
    return bad


def build(raw: bytes, parts: Sequence[mime.TextPart], carriers: Sequence[Sequence[Carrier]],
          marks: Sequence[Sequence[Mark]], fallback: Fallback, seed: int = 0
          ) -> MessageTemplate:
    """The message's template, checked: every carrier single, every one doubled and
    CHECK_PATTERNS random patterns (fixed seed) must make copies whose templated parts decode
    to the expected text within the line limits (7bit/8bit: the reference's bytes), and keep
    every other byte. A part that fails any of it is made by `fallback`. Raises NoTemplate
    when the copies cannot be read back at all."""
    counts = [len(c) for c in carriers]
    bases: list[_PartBase | None] = []
    why: list[str] = []
    for part, cs, ms in zip(parts, carriers, marks, strict=True):
        try:
            bases.append(part_base(part, cs, ms))
            why.append("")
        except NoTemplate as e:
            bases.append(None)
            why.append(str(e))
    n = sum(counts)
    rng = np.random.default_rng(seed)
    patterns = [np.zeros(n, np.uint8), np.ones(n, np.uint8)]
    patterns += [rng.integers(0, 2, n, dtype=np.uint8) for _ in range(CHECK_PATTERNS)]
    while True:
        tmpl = assemble(raw, parts, bases, counts, fallback)
        bad: dict[int, str] = {}
        for bits in patterns:
            bad = check(tmpl, parts, carriers, marks, bits)
            if bad:
                break
        if not bad:
            tmpl.why = why
            return tmpl
        for i, reason in bad.items():
            if bases[i] is None:
                raise NoTemplate(f"part {parts[i].path or '1'}: {reason}")
            bases[i] = None
            why[i] = reason
