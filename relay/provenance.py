"""Text that reached all staff twice: a later logged message that carries the text of an
earlier one (a forward, a reply quoting it, a second filter), who sent it, and from whose copy
of the earlier message it was made, read from the later message's own whitespace as it arrived.
That recipient's copy is an explained source of the text, not evidence of a leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .align import align
from .carriers import DOUBLED, SINGLE
from .hashes import unpack_hashes
from .keys import KeyFileError, Keyring
from .reading import FIT, Derived, Evidence, Fit, Log, found, meta, null, reading
from .score import family_wise, p_at_most

SEED_LEVEL = 1e-3  # a later message was made from a recipient's copy at or below this level


def arrived_gaps(arrived: bytes) -> list[int | None]:
    return [1 if a == DOUBLED else 0 if a == SINGLE else None for a in arrived]


def copy_made_from(log: Log, later: str, earlier: str, keyring: Keyring,
          derived: Derived) -> tuple[str | None, bool]:
    """Whose copy of `earlier` the later message `later` was made from (a forward, a quote, a
    second filter): its text, as it arrived at the relay, read as an excerpt of `earlier`.
    Returns (recipient or None, whether the arrival was logged at all)."""
    s_earlier, s_later = log.signing_of(earlier), log.signing_of(later)
    if s_earlier is None or s_later is None or s_earlier[0] != s_later[0]:
        return None, False  # word hashes under different keys cannot be aligned
    try:
        key = keyring.get(s_earlier[0])
    except KeyFileError:
        return None, False
    docs = log.documents_of(earlier)
    code = derived.code(log, earlier, key, s_earlier[1])
    best: tuple[float, str | None] = (1.0, None)
    logged = False
    for doc in log.documents_of(later):
        if getattr(doc, "arrived", None) is None:
            continue
        logged = True
        hashes, gaps = unpack_hashes(doc.words), arrived_gaps(doc.arrived)
        fits = []
        for d in docs:
            a = align(hashes, gaps, unpack_hashes(d.words))
            if found(a, len(hashes)):
                fits.append(Fit(d, a, derived.carrier_keys(d)))
        if not fits:
            continue
        most = max(f.alignment.matched for f in fits)
        read = reading([f for f in fits if f.alignment.matched >= FIT * most], code)
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
        rates, pmfs = null(ev)
        fmp = family_wise(p_at_most(rates, top, pmfs), len(rcpts))
        if fmp <= SEED_LEVEL and fmp < best[0]:
            best = (fmp, who[0])
    return best[1], logged


def travelled(log: Log, keyring: Keyring, derived: Derived, main: str,
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
                derived.seeds[later, earlier] = copy_made_from(log, later, earlier, keyring,
                                                                derived)
            seed, logged = derived.seeds[later, earlier]
            sender = log.message(later).get("sender")
            if seed is None and not logged and sender is not None and sender.lower() in {
                    r.lower() for r in log.recipients(earlier)}:
                seed = sender
            out.append({"message": meta(log, later), "sender": sender,
                        "contains": meta(log, earlier), "from_copy_of": seed,
                        "earlier_identity": earlier})
    return out
