"""From suspect text to a verdict: the messages an excerpt shows (relay.reading), the
recipients ranked on the pooled evidence, the false-match probability over everyone scored,
where the text travelled (relay.provenance), and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .carriers import SENTENCE
from .keys import Keyring
from .provenance import travelled
from .reading import Candidate, Derived, Evidence, Log, matches, meta, null, score
from .score import family_wise, p_at_most
from .tokens import ExcerptWord

__all__ = ["Candidate", "Derived", "Detail", "Evidence", "GapRead", "Log", "Report", "decode"]

MAX_CANDIDATES = 10


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
        r, p = null(ev)
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
    found = [matches(words, log, keyring, derived) for words in excerpts]
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
            cands = sorted(score([ev], [rcpts]), key=lambda c: (c.p_value, c.recipient))
            trials.append((cands[0].p_value if cands else 1.0, ev, cands))
        trials.sort(key=lambda t: t[0])
        _, ev, cands = trials[0]
        main = ev.identity
        picked: list[Evidence | None] = [ev]
        chosen = [ev]
        others = [meta(log, e.identity) | {"recipients": len(log.recipients(e.identity))}
                  for _, e, _c in trials[1:]]
    else:
        picked = [f[0] if f else None for f in found]
        chosen = _merge([f[0] for f in found if f])
        rcpt_lists = [log.recipients(ev.identity) for ev in chosen]
        total = len({r for lst in rcpt_lists for r in lst})
        cands = sorted(score(chosen, rcpt_lists), key=lambda c: (c.p_value, c.recipient))
        ids = list(dict.fromkeys(ev.identity for ev in chosen))
        main = ids[0]
        others = [meta(log, i) for i in ids[1:]]
    detail = Detail([(c.bits_observed, c.bits_matching) for c in cands],
                    _perfect(chosen, total), log.message(main).get("sender"),
                    log.message(main).get("key_id"))
    cands = cands[:MAX_CANDIDATES]
    for c in cands:
        c.false_match_probability = family_wise(c.p_value, total)
    verdict = ("identified" if cands and cands[0].false_match_probability <= threshold
               else "inconclusive")
    ids = list(dict.fromkeys(ev.identity for f in found for ev in f))
    provenance = travelled(log, keyring, derived, main, ids) if len(ids) > 1 else []
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
    return Report(verdict, meta(log, main), cands, others, info, total, threshold, provenance,
                  gaps, detail)
