"""Reading the bits from OCR word boxes (pure: no image, no process).

OCR text carries no whitespace (Tesseract writes one space whatever the gap), but its word boxes
do: a doubled gap (two spaces, or NBSP + space in HTML) is one space wider than a single one.
`classify_gaps` turns the widths of the gaps between consecutive words of a line into bits:

- widths are measured in em, the font size told by each line's box heights and letters;
- the single level and the width of one space are fitted on the page (two clusters, checked
  for a real valley; a monospace font gives its pitch instead), so that nothing is assumed
  about the font; lines that a justified layout stretched get their own levels;
- a gap becomes 0 or 1 only when it lies clearly on one side (`LO`, `HI`), else None (also
  when it is far wider than a doubled gap: a tab stop or a table column);
  gaps next to punctuation get a small shift and a wider margin; next to a box that does not
  fit its letters or an unsure word, and across lines, they are None.

The word boxes come from relay.ocr (the Tesseract driver); small text gives coarse boxes, which
is why the driver magnifies it first (relay.greyimage).
"""

from __future__ import annotations

import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from .tokens import ExcerptWord, group_units, norm


@dataclass(frozen=True)
class OcrWord:
    """One word box from tesseract. Coordinates are pixels of the image tesseract read: the
    input magnified `scale` times (see run_tesseract). `line` identifies the OCR line:
    (page, block, paragraph, line)."""

    text: str
    left: int
    top: int
    width: int
    height: int
    line: tuple[int, int, int, int]
    conf: float
    scale: int = 1


# --- classification ---------------------------------------------------------------------

# Characters reaching above the x-height (capitals and accented letters too) or below the
# baseline: with them, a word's box height tells the font size (em).
ASCENDING = frozenset("bdfhiklt0123456789!?%&#@$/\\|()[]{}'\"«»")
DESCENDING = frozenset("gjpqy,;()[]{}çµ")
CLOSING = frozenset(".,;:!?…)]}»\"'”’›")

MIN_CONF = 40.0  # a word read less surely than this has an untrusted box
BOX_FIT = (0.7, 1.35)  # a box whose height is off its letters by more than this is untrusted
WIDTH_FIT = 0.22  # nor one whose width is off its letters by more than this, relative to the
# page (widths as Arial sets the letters; the page median absorbs another font's scale)
SPACE_PRIOR = 0.28  # em: space width of common proportional fonts (Arial 0.278, Times 0.25)
SPACE_RANGE = (0.17, 0.45)  # em: fitted space widths outside this are not believed
MONO_SPREAD = 0.06  # monospace: width per letter of long words varies less than this
LO, HI = 0.35, 0.65  # read 0 below LO, 1 above HI (in spaces above the single level)
TOO_WIDE = 1.6  # above this, a gap is no relay gap (a tab stop, a table column): None
PUNCT_SHIFT = 0.2  # after "word." or "word,", or before "(word", a single gap looks wider
LO_PUNCT, HI_PUNCT = 0.3, 0.75
LO_MARK, HI_MARK = 0.3, 1.05  # next to a token of punctuation only (« » : ? ...): no shift
SMALL_EM = 22.0  # px seen by tesseract: below, boxes are too coarse for the punctuation cases


# advance widths (1/1000 em) of Arial's letters, digits and punctuation
ADVANCE = dict(zip(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,:;!?'\"()-«»’",
    [556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333,
     500, 278, 556, 500, 722, 500, 500, 500, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500,
     667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278,
     278, 278, 278, 556, 191, 355, 333, 333, 333, 556, 556, 222], strict=True))


def _advance(text: str, mono: float | None) -> float:
    """Expected ink width of a word in em (a little less than its advances)."""
    if mono:
        return len(text) * mono - 0.1
    total = 0
    for c in text:
        base = unicodedata.normalize("NFD", c)[:1]
        total += ADVANCE.get(base, 556)
    return total / 1000 - 0.08


def _shape_factor(text: str) -> float | None:
    """Box height of `text`, in em, for a typical font (None: no letter or digit)."""
    if not any(c.isalnum() for c in text):
        return None
    asc = any(c in ASCENDING or c.isupper() or (c.isalpha() and not c.isascii()) for c in text)
    desc = any(c in DESCENDING for c in text)
    return 0.93 if asc and desc else 0.73 if asc or desc else 0.52


def text_size(words: Sequence[OcrWord]) -> float | None:
    """Median font size (em, pixels) of confidently read words."""
    ems = []
    for w in words:
        f = _shape_factor(w.text)
        if f and w.height > 0 and w.conf >= MIN_CONF:
            ems.append(w.height / f)
    return statistics.median(ems) if ems else None


@dataclass(frozen=True)
class GapReading:
    """One unit, the bit read in the gap after it, and what was measured."""

    norm: str
    gap_after: int | None
    same_line: bool  # the next unit is on the same OCR line (else the gap is unobservable)
    z: float | None  # measured gap: 0 at its line's single level, 1 at the doubled level
    left: str = ""  # the OCR tokens on both sides of the gap
    right: str = ""
    joined: bool = False  # a word hyphenated across a line end, joined back into one


@dataclass(frozen=True)
class _Token:
    text: str
    first: OcrWord  # its left edge
    last: OcrWord  # its right edge (another word for a word hyphenated across lines)
    first_line: int  # line indexes of both
    line: int


@dataclass(frozen=True)
class _Gap:
    r: float  # width in em
    line: int
    punct: bool  # punctuation on either side
    mark: bool  # a token of punctuation only on either side
    trusted: bool


def _lines(words: Sequence[OcrWord]) -> list[list[OcrWord]]:
    by_line: dict[tuple[int, int, int, int], list[OcrWord]] = {}
    for w in words:
        by_line.setdefault(w.line, []).append(w)
    return [sorted(ws, key=lambda w: w.left) for ws in by_line.values()]


def _line_ems(lines: list[list[OcrWord]]) -> list[float]:
    """Font size per line: the page's, unless the line's own differs from it by over 20%."""
    per_line = []
    for ws in lines:
        es = []
        for w in ws:
            f = _shape_factor(w.text)
            if f and w.height > 0 and w.conf >= MIN_CONF:
                es.append(w.height / f)
        per_line.append(es)
    every = [e for es in per_line for e in es]
    page = statistics.median(every) if every else 1.0
    out = []
    for es in per_line:
        em = statistics.median(es) if len(es) >= 3 else page
        out.append(page if abs(em / page - 1) < 0.2 else em)
    return out


def _tokens(lines: list[list[OcrWord]]) -> list[_Token]:
    """Raw tokens in reading order; like tokens.clean_excerpt, a word hyphenated at a line end
    ("forecast-" + "ing") is one token."""
    out: list[_Token] = []
    for k, ws in enumerate(lines):
        for i, w in enumerate(ws):
            if (i == 0 and out and out[-1].text[-1:] == "-" and out[-1].text[-2:-1].isalnum()
                    and w.text[:1].isalpha() and w.text[:1].islower()):
                prev = out.pop()
                out.append(_Token(prev.text + w.text, prev.first, w, prev.first_line, k))
            else:
                out.append(_Token(w.text, w, w, k, k))
    return out


def _monospace_pitch(words: Sequence[OcrWord], em: dict[int, float]) -> float | None:
    """Advance per character (em) if the text is set in a monospace font, else None."""
    ratios = sorted(w.width / len(w.text) / em[id(w)] for w in words
                    if len(w.text) >= 5 and w.text.isalpha() and w.conf >= MIN_CONF)
    if len(ratios) < 5:
        return None
    q1, med, q3 = (_quantile(ratios, q) for q in (0.25, 0.5, 0.75))
    # a word's ink is a little narrower than its advances
    return med * 1.03 if (q3 - q1) / med < MONO_SPREAD else None


def _quantile(xs: Sequence[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def _fit(rs: list[float], mono: float | None) -> tuple[float, float]:
    """Single level and width of one space (em) from gap widths: two clusters, believed only
    if the upper one is a space away and stands apart; else the median and a typical space."""
    median = statistics.median(rs)
    if mono:
        return median, mono
    split = median + SPACE_PRIOR / 2
    for _ in range(20):
        low = [r for r in rs if r < split]
        high = [r for r in rs if r >= split]
        if len(high) < 2 or len(low) < 2:
            return median, SPACE_PRIOR
        lm, hm = statistics.median(low), statistics.median(high)
        new = (lm + hm) / 2
        if abs(new - split) < 1e-9:
            break
        split = new
    sep = hm - lm
    spread = 1.4826 * statistics.median(abs(r - lm) for r in low)
    valley = sum(1 for r in rs if lm + 0.3 * sep < r < lm + 0.7 * sep)
    if not SPACE_RANGE[0] <= sep <= SPACE_RANGE[1] or sep < 3.5 * spread \
            or valley > len(high) / 3:
        return median, SPACE_PRIOR
    return lm, sep


def _levels(gaps: list[_Gap], n_lines: int, mono: float | None) -> list[tuple[float, float]]:
    """Single level and space width (em) for each line.

    Fitted on the page's natural lines, then checked line by line: a justified line stretches
    every space (NBSP too), so that its gaps sit at b + w and b + 2w for some w wider than a
    space, b = base - sep being the glyph bearings; a natural line's sit at base, base + sep."""
    by_line: dict[int, list[float]] = {}
    for g in gaps:
        if not g.punct:
            by_line.setdefault(g.line, []).append(g.r)
    if not by_line:
        rs = [g.r for g in gaps]
        return [_fit(rs, mono) if rs else (0.0, mono or SPACE_PRIOR)] * n_lines
    low = {k: _quantile(rs, 0.3) for k, rs in by_line.items() if len(rs) >= 3}
    natural_level = _quantile(list(low.values()), 0.2) if low else 0.0
    natural = [r for k, rs in by_line.items()
               if k not in low or low[k] <= natural_level + 0.08 for r in rs]
    base, sep = _fit(natural, mono)
    bearings = base - sep
    levels = [(base, sep)] * n_lines

    def fit_cost(rs: list[float], single: float, width: float) -> tuple[float, float]:
        cost = sum(min(abs(r - single), abs(r - single - width), sep / 2) for r in rs)
        doubled = sum(1 for r in rs if abs(r - single - width) < abs(r - single))
        return cost, doubled / len(rs)

    for k, rs in by_line.items():
        if len(rs) < 4 or low[k] <= base + sep / 4:
            continue
        page_cost, page_doubled = fit_cost(rs, base, sep)
        best = min((c for c in rs if c > base + sep / 4),
                   key=lambda c: fit_cost(rs, c, c - bearings)[0])
        cost, _ = fit_cost(rs, best, best - bearings)
        if cost < page_cost / 2 or (page_doubled > 0.5 and cost <= 1.5 * page_cost):
            levels[k] = (best, best - bearings)
    return levels


def classify_detailed(words: Sequence[OcrWord]) -> list[GapReading]:
    """classify_gaps, with what was measured for each gap."""
    lines = _lines(words)
    ems = _line_ems(lines)
    em_of = {id(w): ems[k] for k, ws in enumerate(lines) for w in ws}
    toks = _tokens(lines)
    units = group_units([t.text for t in toks])
    flat = [w for ws in lines for w in ws]
    mono = _monospace_pitch(flat, em_of)
    width_ratio = {id(w): w.width / (em_of[id(w)] * _advance(w.text, mono)) for w in flat
                   if sum(c.isalnum() for c in w.text) >= 2}
    typical = statistics.median(width_ratio.values()) if width_ratio else 1.0

    def trusted(w: OcrWord) -> bool:
        f = _shape_factor(w.text)
        if w.conf < MIN_CONF:
            return False
        if f is not None and not BOX_FIT[0] <= w.height / (f * em_of[id(w)]) <= BOX_FIT[1]:
            return False
        return abs(width_ratio.get(id(w), typical) / typical - 1) <= WIDTH_FIT

    gaps: list[_Gap | None] = []
    for k, u in enumerate(units):
        j = units[k + 1].first if k + 1 < len(units) else -1
        if j != u.last + 1 or toks[u.last].line != toks[j].first_line:
            gaps.append(None)
            continue
        a, b = toks[u.last], toks[j]
        width = b.first.left - (a.last.left + a.last.width)
        mark = not norm(a.text) or not norm(b.text)
        punct = mark or a.text[-1] in CLOSING or not b.text[0].isalnum()
        gaps.append(_Gap(width / ems[a.line], a.line, punct, mark,
                         trusted(a.last) and trusted(b.first)))

    used = [g for g in gaps if g and g.trusted]
    levels = _levels(used, len(lines), mono)
    seen = statistics.median(ems) if ems else 0.0  # font size in the pixels tesseract read
    out = []
    for k, (u, g) in enumerate(zip(units, gaps, strict=True)):
        joined = any(toks[i].first_line != toks[i].line for i in range(u.first, u.last + 1))
        if g is None:
            out.append(GapReading(u.norm, None, False, None, joined=joined))
            continue
        single, space = levels[g.line]
        z = (g.r - single) / space
        bit: int | None = None
        if not g.trusted or z > TOO_WIDE + (PUNCT_SHIFT if g.punct else 0):
            pass
        elif not g.punct:
            bit = 0 if z <= LO else 1 if z >= HI else None
        elif g.mark and seen >= SMALL_EM:
            bit = 0 if z <= LO_MARK else 1 if z >= HI_MARK else None
        elif seen >= SMALL_EM:
            bit = 0 if z - PUNCT_SHIFT <= LO_PUNCT else 1 if z - PUNCT_SHIFT >= HI_PUNCT else None
        out.append(GapReading(u.norm, bit, True, z, toks[u.last].text,
                              toks[units[k + 1].first].text, joined))
    return out


def classify_gaps(words: Sequence[OcrWord]) -> list[ExcerptWord]:
    """Units of the OCR words (glued as tokens.excerpt_words glues them) with the bit each
    following gap shows: 0 single, 1 doubled, None not read (line end, unsure)."""
    return [ExcerptWord(g.norm, g.gap_after, g.joined) for g in classify_detailed(words)]


def unit_boxes(words: Sequence[OcrWord]) -> list[tuple[str, OcrWord, OcrWord]]:
    """For each unit classify_gaps returns (same order): its text as read, and the OCR words
    at its left and right edges (where the evidence sheet draws the gaps)."""
    toks = _tokens(_lines(words))
    units = group_units([t.text for t in toks])
    return [(" ".join(t.text for t in toks[u.first:u.last + 1]), toks[u.first].first,
             toks[u.last].last) for u in units]
