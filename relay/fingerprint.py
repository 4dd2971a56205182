"""From one message to per-recipient copies: find the text parts, their carriers, and embed.

`prepare()` does the per-message work once (parse, analyse, hash); `Prepared.copy_for()` is the
cheap per-recipient step (derive bits, splice). Pure: no I/O.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import mime, splice, template, templatebuild
from .ambiguity import Ambiguity
from .carriers import NONE, RULES, Gap, Layout, analyse_html, analyse_plain
from .codes import MessageCode
from .hashes import carrier_keys, message_identity, pack_hashes, shingles, word_hashes
from .scheme import SCHEME, Scheme, bias
from .templatepart import Carrier
from .textpart import TextPart, TooLarge, UnsafeEdit

log = logging.getLogger("relay.fingerprint")

NBSP_HTML = "&nbsp; "


@dataclass(frozen=True)
class Document:
    """One rewritable text part as the store keeps it."""

    part: str
    kind: str
    hashes: tuple[int, ...]
    classes: bytes  # per gap: carriers.NONE / SENTENCE / WORD
    arrived: bytes = b""  # per gap: carriers.SINGLE / DOUBLED / OTHER, as the message arrived

    @property
    def words_blob(self) -> bytes:
        return pack_hashes(self.hashes)

    def shingles(self) -> list[int]:
        return shingles(self.hashes)


@dataclass
class Prepared:
    raw: bytes
    identity: str
    key_id: str
    scheme: Scheme  # code version, word rate, blocks and carrier rules it is signed with
    meta: dict[str, str | None]
    documents: list[Document]
    skipped: list[str]
    ambiguity: Ambiguity | None = None  # why the whole message is left as it is
    untouched: str | None = None  # why the whole message is left as it is (no carriers)
    _parts: list[TextPart] = field(repr=False, default_factory=list)
    _gaps: list[list[tuple[int, Gap]]] = field(repr=False, default_factory=list)
    _marks: list[list[tuple[int, int, str]]] = field(repr=False, default_factory=list)
    _ckeys: list[bytes] = field(repr=False, default_factory=list)
    _classes: list[int] = field(repr=False, default_factory=list)
    _code: MessageCode | None = field(repr=False, default=None)
    _template: template.MessageTemplate | None = field(repr=False, default=None)

    @property
    def carriers(self) -> int:
        return len(self._ckeys)

    def log_entry(self, sender: str) -> dict[str, Any]:
        """Keyword arguments for Store.record_message: what the log keeps of this message."""
        return {
            "identity": self.identity, "key_id": self.key_id, "scheme": self.scheme,
            "sender": sender,
            "size": len(self.raw), **self.meta,
            "documents": [(d.part, d.kind, d.words_blob, d.classes, d.arrived)
                          for d in self.documents],
            "doc_shingles": [d.shingles() for d in self.documents],
        }

    def bits_for(self, recipient: str) -> np.ndarray:
        """The recipient's bits (uint8), one per carrier in copy order, computed in bulk."""
        assert self._code is not None
        return self._code.bits_row(recipient, self._ckeys, self._classes)

    def copy_for(self, recipient: str) -> bytes:
        """The recipient's copy: the original bytes with its carrier gaps set to its code (and
        the doubled gaps of an earlier pass that are not carriers set to one space)."""
        if not self._parts:
            return self.raw
        return self.copy_with(self.bits_for(recipient))

    def copy_with(self, bits: Sequence[int] | Any) -> bytes:
        """The copy these bits make (a sequence of 0/1 or a numpy uint8 array, one per carrier):
        from the message's template (relay.template) where it has one, else `_render`."""
        if self._template is not None:
            return self._template.copy(bits)
        return self._render(bits)

    def _part_edits(self, i: int, bits: Sequence[int]) -> list[tuple[int, int, str]]:
        """The edits of part i in a copy; `bits`: that part's."""
        part, gaps, marks = self._parts[i], self._gaps[i], self._marks[i]
        out: list[tuple[int, int, str]] = list(marks)
        for (_, g), b in zip(gaps, bits, strict=True):
            if part.subtype == "html":
                new = _html_mark(g, b)
            else:
                new = "  " if b else " "
            if part.text[g.start:g.end] != new:
                out.append((g.start, g.end, new))
        if out and marks:
            out.sort()
        return out

    def _render(self, bits: Sequence[int]) -> bytes:
        """The reference rendering of a copy (relay.splice.render, every copy checked)."""
        edits: dict[str, list[tuple[int, int, str]]] = {}
        j = 0
        for i, part in enumerate(self._parts):
            n = len(self._gaps[i])
            out = self._part_edits(i, bits[j:j + n])
            j += n
            if out:
                edits[part.path] = out
        return splice.render(self.raw, self._parts, edits)

    def _render_body(self, i: int, bits: Sequence[int]) -> bytes:
        """Part i's body in a copy, the reference way (a part the template does not make)."""
        part = self._parts[i]
        edits = self._part_edits(i, bits)
        if not edits:
            return part.body
        out = splice.render(self.raw, [part], {part.path: edits})
        return out[part.start:len(out) - (len(self.raw) - part.end)]


def _carriers(part: TextPart, gaps: list[tuple[int, Gap]]) -> list[Carrier]:
    """Each carrier as the template takes it: its single form and what doubling inserts."""
    if part.subtype == "html":
        return [(g.start, g.end, _html_mark(g, 0), NBSP_HTML[:-1]) for _, g in gaps]
    return [(g.start, g.end, " ", " ") for _, g in gaps]


def _template(p: Prepared) -> template.MessageTemplate | None:
    """The message's copy template, or None (every copy made by `_render`)."""
    try:
        t = templatebuild.build(p.raw, p._parts, [_carriers(pt, g) for pt, g in
                                                  zip(p._parts, p._gaps, strict=True)],
                                p._marks, p._render_body)
    except Exception as e:  # a template is a speed-up: copies never depend on it
        log.info("message %s: no copy template, each copy rendered (%s)", p.identity[:12], e)
        return None
    for part, ok, why in zip(p._parts, t.templated, t.why, strict=True):
        if not ok:
            log.info("message %s: part %s rendered for each copy (%s)", p.identity[:12],
                     part.path or "1", why)
    return t


def _html_mark(g: Gap, doubled: int) -> str:
    """What an HTML carrier becomes: `&nbsp; ` or one space; a zero-width carrier (before a
    line end of the source, which renders as the space) `&nbsp;` or nothing."""
    if g.start == g.end:
        return NBSP_HTML[:-1] if doubled else ""
    return NBSP_HTML if doubled else " "


def _meta(raw: bytes) -> dict[str, str | None]:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    try:
        msg = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
            head + b"\n\n")
    except Exception:  # e.g. a NUL in a header: metadata is optional, delivery is not
        return {"message_id": None, "subject": None, "date": None}

    def get(name: str) -> str | None:
        try:
            v = msg.get(name)
            return None if v is None else " ".join(str(v).split())[:500]
        except Exception:  # a malformed header is metadata we can live without
            return None

    return {"message_id": get("Message-ID"), "subject": get("Subject"), "date": get("Date")}


def analyse(part: TextPart, rules: int = RULES) -> Layout:
    if part.subtype == "html":
        return analyse_html(part.text, rules)
    return analyse_plain(part.text, rules)


MAX_LINE = 998  # octets, RFC 5322


def _fit_lines(part: TextPart, gaps: list[tuple[int, Gap]]) -> list[tuple[int, Gap]]:
    """In a part sent as-is (7bit/8bit), keep only as many carriers per line as can all be
    doubled without the line passing 998 octets."""
    grow = len(NBSP_HTML) - 1 if part.subtype == "html" else 1
    text = part.text
    kept: list[tuple[int, Gap]] = []
    line_start, room = -1, 0
    for i, g in gaps:
        start = text.rfind("\n", 0, g.start) + 1
        if start != line_start:
            end = text.find("\n", g.start)
            line = text[start:end if end >= 0 else len(text)].rstrip("\r")
            try:
                size = len(line.encode(part.charset))
            except (UnicodeError, LookupError):
                size = MAX_LINE
            line_start, room = start, MAX_LINE - size
        if room >= grow:
            room -= grow
            kept.append((i, g))
    return kept


def prepare(raw: bytes, sender: str, key_id: str, key: bytes, scheme: Scheme = SCHEME,
            max_text: int | None = None) -> Prepared:
    """Analyse a message once. Parts that cannot carry bits safely are left as they are (the
    reason is in `skipped` and logged), and so is the whole message when its MIME structure is
    ambiguous (`ambiguity`, a typed Ambiguity). `scheme` (scheme.Scheme): the code
    version, word rate, blocks (wordblocks.Blocks; block 0 for independent bits, as messages
    logged before blocks were signed; cut EVEN for messages logged before UNITS) and carrier rules
    (carriers.RULES; 0 for messages logged before them). A text part whose decoded
    body has more than `max_text` bytes leaves the whole message untouched (`untouched` says
    why), before anything is decoded: analysis costs time and memory in proportion to the
    text."""
    identity = message_identity(raw, sender)
    rules, word_rate = scheme.rules, scheme.word_rate
    try:
        found = mime.analyse(raw, strict=rules >= 1, max_text=max_text)
    except TooLarge as e:
        return Prepared(raw=raw, identity=identity, key_id=key_id, scheme=scheme, meta={},
                        documents=[], skipped=[], untouched=str(e))
    p = Prepared(raw=raw, identity=identity, key_id=key_id, scheme=scheme, meta=_meta(raw),
                 documents=[], skipped=list(found.skipped), ambiguity=found.ambiguity)
    if found.ambiguity is not None:
        p.skipped = [f"message: {found.ambiguity}"]
    docs: list[tuple[list[bytes], bytes]] = []
    for part in found.parts:
        layout = analyse(part, rules)
        hashes = word_hashes(key, layout.words)
        ckeys = carrier_keys(hashes)
        gaps = [(i, g) for i, g in layout.carriers() if bias(g.cls, word_rate) > 0]
        if part.cte in ("7bit", "8bit", "binary"):
            gaps = _fit_lines(part, gaps)
        marks = list(layout.marks)
        if not gaps and not marks:
            continue
        # the worst case (every carrier doubled) must render, or the part is left alone
        worst = [(g.start, g.end, _html_mark(g, 1) if part.subtype == "html" else "  ")
                 for _, g in gaps]
        try:
            splice.render(raw, [part], {part.path: sorted(worst + marks)})
        except UnsafeEdit as e:
            try:  # the earlier pass's marks stay rather than lose the part's carriers
                if not (gaps and marks):
                    raise
                splice.render(raw, [part], {part.path: worst})
                marks = []
            except UnsafeEdit:
                p.skipped.append(f"part {part.path or '1'}: {e}")
                continue
        p._parts.append(part)
        p._gaps.append(gaps)
        p._marks.append(marks)
        if not gaps:
            continue  # nothing to sign; the part only sheds an earlier pass's marks
        kept = {i for i, _ in gaps}
        classes = bytes(g.cls if i in kept else NONE for i, g in enumerate(layout.gaps))
        p.documents.append(Document(part.path, part.subtype, tuple(hashes), classes,
                                    layout.arrived))
        p._ckeys.extend(ckeys[i] for i, _ in gaps)
        p._classes.extend(g.cls for _, g in gaps)
        docs.append((ckeys, classes))
    p._code = MessageCode(key, identity, docs, scheme)
    if p._parts:
        p._template = _template(p)
    for reason in p.skipped:
        log.info("message %s: left unchanged: %s", identity[:12], reason)
    return p
