"""What an excerpt shows of the logged messages: find them by their words, align, read the
gaps every rendering agrees on, and score recipients against what was read.

Works through a `Log` (the Store satisfies it) so the logic stays free of SQLite; every choice
made before scoring (which message, which part, which gaps) looks only at the words, never at
any recipient's code, so the reported false-match probability stays honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .align import Alignment, align
from .carriers import SENTENCE, WORD
from .codes import MessageCode
from .hashes import carrier_keys, shingles, unpack_hashes, word_hashes
from .keys import Keyring
from .scheme import Scheme, bias
from .score import block_pmf, null_rates, p_at_most
from .tokens import ExcerptWord, settled_gaps

MIN_WORDS = 6  # fewer aligned words than this is no evidence of the message at all
MIN_SHARE = 0.25  # ... nor is aligning under a quarter of the excerpt,
MIN_STRETCH = 30  # unless one stretch of this many words aligns (a mail quoted in an article)
FIT = 0.9  # documents of one message aligning with at least this share of the best one's words


class Log(Protocol):
    def find_documents(self, hashes: Sequence[int], limit: int = 20) -> list[tuple[int, int]]: ...
    def document(self, doc_id: int) -> Any: ...
    def message(self, identity: str) -> dict: ...
    def signing_of(self, identity: str) -> tuple[str, Scheme] | None: ...
    def recipients(self, identity: str) -> list[str]: ...
    def documents_of(self, identity: str) -> list[Any]: ...


@dataclass
class Candidate:
    recipient: str
    bits_observed: int
    bits_matching: int
    p_value: float
    false_match_probability: float = 1.0

    def as_json(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "bits_observed": self.bits_observed,
                "bits_matching": self.bits_matching,
                "false_match_probability": self.false_match_probability}


@dataclass
class Evidence:
    """What one excerpt shows of one logged message."""

    identity: str
    code: MessageCode
    ckeys: list[bytes]
    classes: list[int]  # carriers.SENTENCE or WORD
    bits: list[int]
    matched_words: int
    words: int
    at: list[int] = field(default_factory=list)  # per read gap: the excerpt word it follows


@dataclass
class Derived:
    """What a decode derives from the log, each the first time it is needed: every document's
    carrier keys and every message's code (several excerpts, and every key of the ring, meet
    the same documents)."""

    ckeys: dict[int, list[bytes]] = field(default_factory=dict)  # document id -> keys
    codes: dict[str, MessageCode] = field(default_factory=dict)  # message identity -> code
    # (later, earlier) message -> whose copy of the earlier the later was made from, and
    # whether the later's arrival was logged
    seeds: dict[tuple[str, str], tuple[str | None, bool]] = field(default_factory=dict)

    def carrier_keys(self, doc: Any) -> list[bytes]:
        if doc.id not in self.ckeys:
            self.ckeys[doc.id] = carrier_keys(unpack_hashes(doc.words))
        return self.ckeys[doc.id]

    def code(self, log: Log, identity: str, key: bytes, scheme: Scheme) -> MessageCode:
        if identity not in self.codes:
            docs = [(self.carrier_keys(d), d.classes) for d in log.documents_of(identity)]
            self.codes[identity] = MessageCode(key, identity, docs, scheme)
        return self.codes[identity]


@dataclass
class Fit:
    doc: Any
    alignment: Alignment
    ckeys: list[bytes]


def found(a: Alignment, words: int) -> bool:
    """Whether an alignment is evidence that the excerpt holds the logged text at all (which
    says nothing of any recipient: it looks only at the words)."""
    return (a.matched >= max(MIN_WORDS, int(MIN_SHARE * words))
            or a.longest_stretch() >= MIN_STRETCH)


def reading(fits: Sequence[Fit], code: MessageCode) -> list[tuple[bytes, int, int, int]]:
    """The (carrier key, class, bit) the excerpt shows of one message. Of the documents it
    fits (text/plain and its text/html alternative usually both do, word for word), the gaps
    read are those that mean the same in every one: a gap is a carrier of the same class in
    all of them. Which rendering was copied is not known, and choosing by the bits a rendering
    reads, or by how a recipient scores, would bias the verdict: a plain line end joined by a
    paste reads as a single space, which the HTML rendering would count as its carrier.
    Each is returned with the excerpt word the gap follows."""
    best = max(fits, key=lambda f: f.alignment.matched)
    meaning: dict[bytes, int] | None = None
    for f in fits:
        cls_of = {c: cls for c, cls in zip(f.ckeys, f.doc.classes, strict=False)}
        meaning = cls_of if meaning is None else {
            c: cls for c, cls in meaning.items() if cls_of.get(c) == cls}
    assert meaning is not None
    at = {m: k for k, m in enumerate(best.alignment.mapping) if m is not None}
    out = []
    for g, bit in best.alignment.observed:
        c, cls = best.ckeys[g], best.doc.classes[g]
        if meaning.get(c) != cls:
            continue
        # a sentence carrier whose key is a word carrier elsewhere in the message would share
        # its stream value with a block: left out, so carriers stay independent
        if cls == WORD or (cls == SENTENCE and code.in_block(c) is None):
            out.append((c, cls, bit, at[g]))
    return out


def matches(words: Sequence[ExcerptWord], log: Log, keyring: Keyring,
             derived: Derived) -> list[Evidence]:
    """Every logged message this excerpt aligns with (most aligned words first), with what it
    shows of each."""
    fits: dict[str, list[Fit]] = {}
    codes: dict[str, MessageCode] = {}
    norms = [w.norm for w in words]
    gaps = settled_gaps(words)
    for key_id, key in keyring.keys:
        hashes = word_hashes(key, norms)
        for doc_id, _hits in log.find_documents(shingles(hashes)):
            doc = log.document(doc_id)
            signing = log.signing_of(doc.identity)
            if signing is None or signing[0] != key_id:
                continue
            a: Alignment = align(hashes, gaps, unpack_hashes(doc.words))
            if not found(a, len(words)):
                continue
            fits.setdefault(doc.identity, []).append(Fit(doc, a, derived.carrier_keys(doc)))
            codes[doc.identity] = derived.code(log, doc.identity, key, signing[1])
    out = []
    for identity, fs in fits.items():
        most = max(f.alignment.matched for f in fs)
        fitting = [f for f in fs if f.alignment.matched >= FIT * most]
        read = reading(fitting, codes[identity])
        out.append(Evidence(identity, codes[identity], [r[0] for r in read],
                            [r[1] for r in read], [r[2] for r in read],
                            most, len(words), [r[3] for r in read]))
    out.sort(key=lambda ev: (ev.matched_words, len(ev.bits)), reverse=True)
    return out


def null(ev: Evidence) -> tuple[list[float], list[list[float]]]:
    """What an innocent's disagreements with this evidence are made of: independent carriers
    (their chance to differ from the leak) and blocks (exact distributions)."""
    biases: list[float] = []
    bits: list[int] = []
    seen: dict[int, list[int]] = {}  # block -> [carriers observed, of them doubled]
    code = ev.code
    for c, cls, y in zip(ev.ckeys, ev.classes, ev.bits, strict=True):
        b = code.in_block(c) if cls == WORD else None
        if b is None:
            biases.append(bias(cls, code.word_rate))
            bits.append(y)
        else:
            s = seen.setdefault(b, [0, 0])
            s[0] += 1
            s[1] += y
    blocks = code.blocks
    assert blocks is not None or not seen
    pmfs = [block_pmf(len(blocks.members[b]), blocks.ones[b], j, w)
            for b, (j, w) in seen.items()] if blocks is not None else []
    return null_rates(biases, bits), pmfs


def meta(log: Log, identity: str) -> dict[str, Any]:
    m = log.message(identity)
    return {"message_id": m["message_id"], "subject": m["subject"], "date": m["date"]}


def score(evidence: Sequence[Evidence],
           recipients: Sequence[Sequence[str]]) -> list[Candidate]:
    """Rank recipients on the pooled evidence of the messages they received. Recipients who
    received the same messages share one null distribution, so the p-value is computed once
    per (set of messages, disagreement count)."""
    per: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    nulls = [null(ev) for ev in evidence]
    for idx, ev in enumerate(evidence):
        rcpts = recipients[idx]
        # every recipient's code read in bulk (codes.Reading), no Python loop over carriers
        for r, d in zip(rcpts, ev.code.disagreements(rcpts, ev.ckeys, ev.classes, ev.bits),
                        strict=True):
            n0, d0, got = per.get(r, (0, 0, ()))
            per[r] = (n0 + len(ev.bits), d0 + d, (*got, idx))
    cache: dict[tuple[tuple[int, ...], int], float] = {}

    def p_value(got: tuple[int, ...], d: int) -> float:
        if (got, d) not in cache:
            cache[got, d] = p_at_most([x for i in got for x in nulls[i][0]], d,
                                      [x for i in got for x in nulls[i][1]])
        return cache[got, d]

    return [Candidate(r, n, n - d, p_value(got, d) if n else 1.0)
            for r, (n, d, got) in per.items()]
