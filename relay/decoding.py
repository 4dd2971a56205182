"""From suspect text to a verdict: find the logged message, read its carriers, rank recipients.

Works through a `Log` (the Store satisfies it) so the logic stays free of SQLite; every choice
made before scoring (which message, which part, which gaps) looks only at the words, never at
any recipient's code, so the reported false-match probability stays honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .align import Alignment, align
from .carriers import DOUBLED, SENTENCE, SINGLE, WORD
from .codes import MessageCode, bias, carrier_keys, shingles, unpack_hashes, word_hashes
from .keys import KeyError_, Keyring
from .score import block_pmf, family_wise, null_rates, p_at_most
from .tokens import ExcerptWord, settled_gaps

MIN_WORDS = 6  # fewer aligned words than this is no evidence of the message at all
MIN_SHARE = 0.25  # ... nor is aligning under a quarter of the excerpt,
MIN_STRETCH = 30  # unless one stretch of this many words aligns (a mail quoted in an article)
FIT = 0.9  # documents of one message aligning with at least this share of the best one's words
MAX_CANDIDATES = 10
SEED_LEVEL = 1e-3  # a later message was made from a recipient's copy at or below this level


class Log(Protocol):
    def find_documents(self, hashes: Sequence[int], limit: int = 20) -> list[tuple[int, int]]: ...
    def document(self, doc_id: int) -> Any: ...
    def message(self, identity: str) -> dict: ...
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
class GapRead:
    """One gap read in one excerpt, for the evidence sheet and `gaps` in --json: the gap after
    excerpt word `word`, the bit it shows, and the named (top) recipient's bit there. `counted`:
    part of that recipient's bits_observed (not a repeat of a carrier read elsewhere, nor read
    differently by two excerpts, nor of a message that recipient did not receive)."""

    excerpt: int
    word: int
    cls: int
    observed: int
    named: int | None
    counted: bool
    between: tuple[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"excerpt": self.excerpt, "word": self.word,
                "class": "sentence" if self.cls == SENTENCE else "word",
                "observed": self.observed, "named": self.named, "counted": self.counted,
                "between": list(self.between)}


@dataclass
class Detail:
    """What the evidence sheet shows beyond --json: every scored recipient's (observed,
    matching) counts best first (no names, no bits), the false-match probability a copy agreeing
    at every read gap would get, and the message's sender and key id."""

    spread: list[tuple[int, int]] = field(default_factory=list)
    perfect: float | None = None
    sender: str | None = None
    key_id: str | None = None


@dataclass
class Report:
    verdict: str
    message: dict[str, Any] | None
    candidates: list[Candidate]
    others: list[dict[str, Any]] = field(default_factory=list)
    excerpts: list[dict[str, Any]] = field(default_factory=list)
    recipients: int = 0
    threshold: float = 1e-6
    provenance: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[GapRead] = field(default_factory=list)
    detail: Detail = field(default_factory=Detail)

    def as_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "message": self.message,
            "candidates": [c.as_json() for c in self.candidates],
            "other_messages": self.others,
            "excerpts": self.excerpts,
            "recipients_scored": self.recipients,
            "threshold": self.threshold,
            "provenance": self.provenance,
            "gaps": [g.as_json() for g in self.gaps],
        }


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

    def code(self, log: Log, identity: str, key: bytes, msg: dict[str, Any]) -> MessageCode:
        if identity not in self.codes:
            docs = [(self.carrier_keys(d), d.classes) for d in log.documents_of(identity)]
            self.codes[identity] = MessageCode(key, identity, docs, msg["word_rate"],
                                               msg["block"], msg["block_cut"])
        return self.codes[identity]


@dataclass
class _Fit:
    doc: Any
    alignment: Alignment
    ckeys: list[bytes]


def _found(a: Alignment, words: int) -> bool:
    """Whether an alignment is evidence that the excerpt holds the logged text at all (which
    says nothing of any recipient: it looks only at the words)."""
    return (a.matched >= max(MIN_WORDS, int(MIN_SHARE * words))
            or a.longest_stretch() >= MIN_STRETCH)


def _reading(fits: Sequence[_Fit], code: MessageCode) -> list[tuple[bytes, int, int, int]]:
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


def _matches(words: Sequence[ExcerptWord], log: Log, keyring: Keyring,
             derived: Derived) -> list[Evidence]:
    """Every logged message this excerpt aligns with (most aligned words first), with what it
    shows of each."""
    fits: dict[str, list[_Fit]] = {}
    codes: dict[str, MessageCode] = {}
    norms = [w.norm for w in words]
    gaps = settled_gaps(words)
    for key_id, key in keyring.keys:
        hashes = word_hashes(key, norms)
        for doc_id, _hits in log.find_documents(shingles(hashes)):
            doc = log.document(doc_id)
            msg = log.message(doc.identity)
            if msg["key_id"] != key_id:
                continue
            a: Alignment = align(hashes, gaps, unpack_hashes(doc.words))
            if not _found(a, len(words)):
                continue
            fits.setdefault(doc.identity, []).append(_Fit(doc, a, derived.carrier_keys(doc)))
            codes[doc.identity] = derived.code(log, doc.identity, key, msg)
    out = []
    for identity, fs in fits.items():
        most = max(f.alignment.matched for f in fs)
        fitting = [f for f in fs if f.alignment.matched >= FIT * most]
        read = _reading(fitting, codes[identity])
        out.append(Evidence(identity, codes[identity], [r[0] for r in read],
                            [r[1] for r in read], [r[2] for r in read],
                            most, len(words), [r[3] for r in read]))
    out.sort(key=lambda ev: (ev.matched_words, len(ev.bits)), reverse=True)
    return out


def _null(ev: Evidence) -> tuple[list[float], list[list[float]]]:
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


def _merge(evidence: Sequence[Evidence]) -> list[Evidence]:
    """One Evidence per message: a carrier seen by several excerpts counts once (and not at all
    if they disagree), so repeating or overlapping excerpts adds no evidence."""
    by_id: dict[str, list[Evidence]] = {}
    for ev in evidence:
        by_id.setdefault(ev.identity, []).append(ev)
    out = []
    for evs in by_id.values():
        seen: dict[bytes, tuple[int, int]] = {}
        bad: set[bytes] = set()
        for ev in evs:
            for ck, cls, b in zip(ev.ckeys, ev.classes, ev.bits, strict=True):
                if ck in seen and seen[ck] != (cls, b):
                    bad.add(ck)
                seen.setdefault(ck, (cls, b))
        keep = [(ck, cls, b) for ck, (cls, b) in seen.items() if ck not in bad]
        out.append(Evidence(evs[0].identity, evs[0].code,
                            [k for k, _, _ in keep],
                            [c for _, c, _ in keep], [b for _, _, b in keep],
                            sum(e.matched_words for e in evs), sum(e.words for e in evs)))
    return out


def _meta(log: Log, identity: str) -> dict[str, Any]:
    m = log.message(identity)
    return {"message_id": m["message_id"], "subject": m["subject"], "date": m["date"]}


def _score(evidence: Sequence[Evidence],
           recipients: Sequence[Sequence[str]]) -> list[Candidate]:
    """Rank recipients on the pooled evidence of the messages they received. Recipients who
    received the same messages share one null distribution, so the p-value is computed once
    per (set of messages, disagreement count)."""
    per: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    nulls = [_null(ev) for ev in evidence]
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


def _arrived_gaps(arrived: bytes) -> list[int | None]:
    return [1 if a == DOUBLED else 0 if a == SINGLE else None for a in arrived]


def _seed(log: Log, later: str, earlier: str, keyring: Keyring,
          derived: Derived) -> tuple[str | None, bool]:
    """Whose copy of `earlier` the later message `later` was made from (a forward, a quote, a
    second filter): its text, as it arrived at the relay, read as an excerpt of `earlier`.
    Returns (recipient or None, whether the arrival was logged at all)."""
    m_earlier, m_later = log.message(earlier), log.message(later)
    if m_earlier["key_id"] != m_later["key_id"]:
        return None, False  # word hashes under different keys cannot be aligned
    try:
        key = keyring.get(m_earlier["key_id"])
    except KeyError_:
        return None, False
    docs = log.documents_of(earlier)
    code = derived.code(log, earlier, key, m_earlier)
    best: tuple[float, str | None] = (1.0, None)
    logged = False
    for doc in log.documents_of(later):
        if getattr(doc, "arrived", None) is None:
            continue
        logged = True
        hashes, gaps = unpack_hashes(doc.words), _arrived_gaps(doc.arrived)
        fits = []
        for d in docs:
            a = align(hashes, gaps, unpack_hashes(d.words))
            if _found(a, len(hashes)):
                fits.append(_Fit(d, a, derived.carrier_keys(d)))
        if not fits:
            continue
        most = max(f.alignment.matched for f in fits)
        read = _reading([f for f in fits if f.alignment.matched >= FIT * most], code)
        ev = Evidence(earlier, code, [r[0] for r in read], [r[1] for r in read],
                      [r[2] for r in read], most, len(hashes))
        rcpts = log.recipients(earlier)
        if not ev.bits or not rcpts:
            continue
        d = dict(zip(rcpts, code.disagreements(rcpts, ev.ckeys, ev.classes, ev.bits),
                     strict=True))
        top = min(d.values())
        who = [r for r, v in d.items() if v == top]
        if len(who) != 1:
            continue  # nobody's copy stands out
        rates, pmfs = _null(ev)
        fmp = family_wise(p_at_most(rates, top, pmfs), len(rcpts))
        if fmp <= SEED_LEVEL and fmp < best[0]:
            best = (fmp, who[0])
    return best[1], logged


def _provenance(log: Log, keyring: Keyring, derived: Derived, main: str,
                identities: Sequence[str]) -> list[dict[str, Any]]:
    """For the message the verdict is about and every other message the excerpt aligns with,
    the later of the two sent again text of the earlier one: who sent it, and from whose copy of
    the earlier one it was made (when its arrival was logged and shows it; else its sender, when
    that was a recipient of the earlier one). That recipient's copy is an explained source of
    the text, not evidence of a leak."""
    out = []
    ids = sorted(set(identities) | {main}, key=lambda i: log.message(i).get("created_at") or 0)
    for j, later in enumerate(ids):
        for earlier in ids[:j]:
            if main not in (later, earlier):
                continue
            if (later, earlier) not in derived.seeds:
                derived.seeds[later, earlier] = _seed(log, later, earlier, keyring, derived)
            seed, logged = derived.seeds[later, earlier]
            sender = log.message(later).get("sender")
            if seed is None and not logged and sender is not None and sender.lower() in {
                    r.lower() for r in log.recipients(earlier)}:
                seed = sender
            out.append({"message": _meta(log, later), "sender": sender,
                        "contains": _meta(log, earlier), "from_copy_of": seed,
                        "earlier_identity": earlier})
    return out


def _gap_list(picked: Sequence[Evidence | None], excerpts: Sequence[Sequence[ExcerptWord]],
              log: Log, top: str | None) -> list[GapRead]:
    """Every gap read in every excerpt (of the message it was scored against), with the named
    recipient's bit there. Counted as the scoring counts: with one excerpt every read gap; with
    several, as _merge pools them (a carrier once per message, and not at all where two
    excerpts read it differently)."""
    pooled = len(excerpts) > 1
    first: dict[tuple[str, bytes], tuple[int, int]] = {}
    bad: set[tuple[str, bytes]] = set()
    for ev in picked:
        for ck, cls, b in zip(ev.ckeys, ev.classes, ev.bits, strict=True) if ev else ():
            if first.setdefault((ev.identity, ck), (cls, b)) != (cls, b):
                bad.add((ev.identity, ck))
    counted: set[tuple[str, bytes]] = set()
    out = []
    for i, ev in enumerate(picked):
        if ev is None:
            continue
        named: list[int | None] = [None] * len(ev.bits)
        if top is not None and top in log.recipients(ev.identity):
            named = list(ev.code.bits(top, ev.ckeys, ev.classes))
        words = excerpts[i]
        for ck, cls, b, k, nb in zip(ev.ckeys, ev.classes, ev.bits, ev.at, named, strict=True):
            key = (ev.identity, ck)
            ok = nb is not None and (not pooled or (key not in bad and key not in counted))
            counted.add(key)
            out.append(GapRead(i, k, cls, b, nb, ok, (words[k].norm, words[k + 1].norm)))
    return out


def _perfect(chosen: Sequence[Evidence], n: int) -> float:
    """The false-match probability of a copy agreeing with every gap read: above the threshold,
    no copy could have been named from this evidence."""
    rates: list[float] = []
    pmfs: list[list[float]] = []
    for ev in chosen:
        r, p = _null(ev)
        rates += r
        pmfs += p
    return family_wise(p_at_most(rates, 0, pmfs), n)


def decode(excerpts: Sequence[Sequence[ExcerptWord]], log: Log, keyring: Keyring,
           threshold: float = 1e-6, derived: Derived | None = None) -> Report:
    """One or several excerpts -> verdict. With several, each excerpt contributes the message it
    aligns best with, and a recipient's evidence is pooled over the excerpts of the messages
    they received. `derived` may carry what earlier decodes over the same log derived (many
    decodes of one log: benchmarks, calibration)."""
    derived = derived if derived is not None else Derived()
    found = [_matches(words, log, keyring, derived) for words in excerpts]
    info = [{"words": len(w), "messages_matched": len(f),
             "words_aligned": f[0].matched_words if f else 0,
             "bits_observed": len(f[0].bits) if f else 0} for w, f in zip(excerpts, found,
                                                                           strict=True)]
    if not any(found):
        return Report("no_match", None, [], excerpts=info, threshold=threshold)

    if len(excerpts) == 1:
        # one excerpt, maybe several messages (an announcement sent twice): try each, keep the
        # strongest, and count every recipient of every message tried
        trials = []
        total = 0
        for ev in found[0]:
            rcpts = log.recipients(ev.identity)
            total += len(rcpts)
            cands = sorted(_score([ev], [rcpts]), key=lambda c: (c.p_value, c.recipient))
            trials.append((cands[0].p_value if cands else 1.0, ev, cands))
        trials.sort(key=lambda t: t[0])
        _, ev, cands = trials[0]
        main = ev.identity
        picked: list[Evidence | None] = [ev]
        chosen = [ev]
        others = [_meta(log, e.identity) | {"recipients": len(log.recipients(e.identity))}
                  for _, e, _c in trials[1:]]
    else:
        picked = [f[0] if f else None for f in found]
        chosen = _merge([f[0] for f in found if f])
        rcpt_lists = [log.recipients(ev.identity) for ev in chosen]
        total = len({r for lst in rcpt_lists for r in lst})
        cands = sorted(_score(chosen, rcpt_lists), key=lambda c: (c.p_value, c.recipient))
        ids = list(dict.fromkeys(ev.identity for ev in chosen))
        main = ids[0]
        others = [_meta(log, i) for i in ids[1:]]
    detail = Detail([(c.bits_observed, c.bits_matching) for c in cands],
                    _perfect(chosen, total), log.message(main).get("sender"),
                    log.message(main).get("key_id"))
    cands = cands[:MAX_CANDIDATES]
    for c in cands:
        c.false_match_probability = family_wise(c.p_value, total)
    verdict = ("identified" if cands and cands[0].false_match_probability <= threshold
               else "inconclusive")
    ids = list(dict.fromkeys(ev.identity for f in found for ev in f))
    provenance = _provenance(log, keyring, derived, main, ids) if len(ids) > 1 else []
    for prov in provenance:
        # the named recipient's copy of this message was sent on to all staff: the marks may
        # have travelled through that message's copies, so they do not show a leak
        earlier = prov.pop("earlier_identity")
        prov["explains_top_candidate"] = bool(
            cands and earlier == main
            and (prov["from_copy_of"] or "").lower() == cands[0].recipient.lower())
        if prov["explains_top_candidate"]:
            verdict = "inconclusive"
    gaps = _gap_list(picked, excerpts, log, cands[0].recipient if cands else None)
    return Report(verdict, _meta(log, main), cands, others, info, total, threshold, provenance,
                  gaps, detail)
