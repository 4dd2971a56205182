"""A message's copy template: made once per message, so that a copy is bits in, bytes out.

Every carrier's doubled form is its single form with fixed ASCII bytes inserted before it (plain
text: one space before the space; HTML: `&nbsp;` before the space, or before the line end of the
source for a zero-width carrier). So a recipient's copy is a *base* (the message with every
carrier single and every mark applied, already in its transfer encoding) with those bytes
inserted at precomputed byte positions for the carriers its bits double: one numpy insertion
per run of parts (a loop over parts, never over carriers), no per-copy tokenising, no
per-character quoted-printable or base64 work in Python.

Each part's base is made by relay.templatepart; `assemble()` joins them with the message's other
bytes; relay.templatebuild makes and checks the template once per message. Pure: no I/O.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .templatepart import NoTemplate, PartBase
from .textpart import TextPart

Bits = Sequence[int] | np.ndarray
Fallback = Callable[[int, np.ndarray], bytes]  # (part index, the part's bits) -> its body


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
    """Lines of `width` joined by eol (no eol after the last), as splice._render_b64 cuts them."""
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


class _FlatBuilder:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self.runs: list[_Run] = []

    def add(self, data: bytes) -> None:
        self.pieces.append(data)
        self.size += len(data)

    def add_part(self, pb: PartBase, first: int) -> None:
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


def assemble(raw: bytes, parts: Sequence[TextPart], bases: Sequence[PartBase | None],
             counts: Sequence[int], fallback: Fallback) -> MessageTemplate:
    """The message template from each part's base (None: that part's body is made by
    `fallback` per copy). `counts`: carriers per part, the parts in bits order."""
    firsts = [0]
    for c in counts:
        firsts.append(firsts[-1] + c)
    items: list[_Flat | _B64 | _Other] = []
    fb = _FlatBuilder()
    pos = 0
    for i in sorted(range(len(parts)), key=lambda i: parts[i].start):
        part, pb = parts[i], bases[i]
        if part.start < pos or raw[part.start:part.end] != part.body:
            raise NoTemplate("parts overlap or do not belong to the message")
        fb.add(raw[pos:part.start])
        pos = part.end
        if pb is None:
            items.append(_sorted(fb.done()))
            fb = _FlatBuilder()
            items.append(_Other(i, firsts[i], counts[i]))
        elif part.cte == "base64":
            items.append(_sorted(fb.done()))
            fb = _FlatBuilder()
            a, b = part.b64_span
            sub = _FlatBuilder()
            sub.add_part(pb, 0)
            items.append(_B64(i, firsts[i], _sorted(sub.done()), part.body[:a],
                              part.body[b:], part.b64_width, part.eol))
        else:
            fb.add_part(pb, firsts[i])
    fb.add(raw[pos:])
    items.append(_sorted(fb.done()))
    items = [it for it in items if not (isinstance(it, _Flat) and not len(it.base))]
    return MessageTemplate(raw, items, fallback, firsts[-1],
                           [pb is not None for pb in bases])
