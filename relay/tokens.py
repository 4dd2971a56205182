"""Words and the gaps between them: the one tokeniser shared by the embedder and the decoder.

A *raw token* is a run of non-whitespace. Raw tokens with no letter or digit (":", "«", "--")
are glued to a neighbour, so that "mot : suite" and "mot: suite" give the same *units*
("mot", "suite"). Units are compared through `norm()`, which ignores case, punctuation, hyphens
and quote styles, so a transcription with curly quotes or a re-hyphenated word still aligns.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

RAW_TOKEN = re.compile(r"\S+")
OPENERS = set("«([{“‘„‚¿¡‹")
SENTENCE_END = re.compile(r"[.!?:;…][)\]\"'»”’›]*$")
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st jr sr vs no nos fig figs vol p pp cf eg ie etc al approx inc ltd co
    corp dept est m mm mme mlle mgr me pr st ste av bd env cie nb ps art ch sect ca""".split()
)
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
# characters a copy of a doubled gap may show: space, no-break space and its narrow cousins
SPACE_LIKE = frozenset(" \u00a0\u2007\u202f\u2009\u2002\u2003")


def norm(token: str) -> str:
    """Comparable form of a word: NFKC, casefolded, letters and digits only."""
    t = unicodedata.normalize("NFKC", token.translate(INVISIBLE)).casefold()
    return "".join(ch for ch in t if ch.isalnum())


@dataclass(frozen=True)
class Unit:
    norm: str
    first: int  # index of its first raw token
    last: int  # index of its last raw token


def group_units(raw: Sequence[str]) -> list[Unit]:
    """Glue punctuation-only raw tokens to a neighbouring word."""
    units: list[Unit] = []
    pending: int | None = None  # an opener (or leading punctuation) waiting for its word
    for i, tok in enumerate(raw):
        n = norm(tok)
        if n:
            first = pending if pending is not None else i
            units.append(Unit(n, first, i))
            pending = None
        elif (tok[0] in OPENERS or not units) and pending is None:
            pending = i
        elif pending is not None:
            continue  # more leading punctuation; stays with the pending opener
        else:
            u = units[-1]
            units[-1] = Unit(u.norm, u.first, i)
    return units


def is_sentence_gap(left: str, right: str) -> bool:
    """Whether the gap between raw tokens `left` and `right` separates sentences (or clauses
    after ':' and ';'). Abbreviations, initials and a lower-case continuation are not."""
    if not SENTENCE_END.search(left):
        return False
    stripped = left.rstrip(")]\"'»”’›")
    if stripped.endswith("."):
        word = norm(stripped[:-1].split(".")[-1]) if "." in stripped[:-1] else norm(stripped)
        if "." in stripped[:-1] or word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
            return False
        first = next((c for c in right if c.isalnum()), "")
        if first and (first.islower() or first.isdigit()):
            return False
    return True


def is_address_like(tok: str) -> bool:
    low = tok.lower()
    return "://" in low or low.startswith("www.") or "@" in tok or low.startswith("mailto:")


def is_numeric_group(tok: str) -> bool:
    core = tok.strip(".,;:!?()[]\"'%€$£")
    return bool(core) and all(c.isdigit() or c in ".,:h" for c in core)


@dataclass(frozen=True)
class ExcerptWord:
    norm: str
    gap_after: int | None  # 0: single gap, 1: doubled gap, None: not observed (line end, tab...)
    joined: bool = False  # a word hyphenated across a line end, joined back into one


def settled_gaps(words: Sequence[ExcerptWord]) -> list[int | None]:
    """The observed gaps, without those whose carrier key a joined word is part of (the two
    gaps on each side of it). A rendering may split such a word where the text was wrapped
    ("non-" / "free" in text/plain) while another keeps it whole ("non-free" in its HTML), so
    the keys of the gaps around it differ between renderings, and which rendering was copied
    is not known: reading those gaps against the wrong one would count false disagreements."""
    gaps = [w.gap_after for w in words]
    for k, w in enumerate(words):
        if w.joined:
            for g in range(max(0, k - 2), min(len(gaps), k + 2)):
                gaps[g] = None
    return gaps


def read_gap(ws: str) -> int | None:
    """Observed bit of a whitespace run copied from a fingerprinted text."""
    if not ws or any(c not in SPACE_LIKE for c in ws):
        return None  # line break, tab: not a place the relay writes
    if len(ws) == 1:
        return 0
    if len(ws) == 2:
        return 1
    return None


JOIN_MARK = "\ue000"  # private use: where a hyphenated word was joined (norm() drops it)


def clean_excerpt(text: str, mark: str = "") -> str:
    """Undo what copying does to text: CRLF, soft hyphens, zero-width characters and words
    hyphenated across a line end (joined, with `mark` after the hyphen)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(INVISIBLE)
    return re.sub(r"(\w)-[ \t]*\n[ \t]*(?=[a-zà-ÿ])", rf"\1-{mark}", text)


def _layout(text: str) -> tuple[str, list[re.Match[str]], list[Unit]]:
    text = clean_excerpt(text.replace(JOIN_MARK, ""), JOIN_MARK)
    matches = list(RAW_TOKEN.finditer(text))
    return text, matches, group_units([m.group() for m in matches])


def excerpt_spans(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text as excerpt_words reads it (cleaned, JOIN_MARK where a hyphenated word was
    joined) and, for each of its units, where it stands in that text (start, end)."""
    text, matches, units = _layout(text)
    return text, [(matches[u.first].start(), matches[u.last].end()) for u in units]


def excerpt_words(text: str) -> list[ExcerptWord]:
    """Tokenise suspect text into units with the bit each following gap shows."""
    text, matches, units = _layout(text)
    raw = [m.group() for m in matches]
    out: list[ExcerptWord] = []
    for k, u in enumerate(units):
        gap: int | None = None
        if k + 1 < len(units):
            nxt = units[k + 1]
            if nxt.first == u.last + 1:
                gap = read_gap(text[matches[u.last].end():matches[nxt.first].start()])
        joined = any(JOIN_MARK in raw[i] for i in range(u.first, u.last + 1))
        out.append(ExcerptWord(u.norm, gap, joined))
    return out
