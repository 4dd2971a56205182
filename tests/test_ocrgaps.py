"""Reading the bits from OCR word boxes (relay.ocrgaps): the gap classifier on synthetic word
boxes, as measured on real screenshots (NOTES.md section 1). The end-to-end measurements, from
screenshots through Tesseract, are in tests/test_ocr.py."""

from __future__ import annotations

import random

from relay import ocrgaps
from relay.ocrgaps import GapReading, OcrWord, classify_detailed, classify_gaps, unit_boxes
from relay.tokens import ExcerptWord, excerpt_words

# --- synthetic word boxes -----------------------------------------------------------------

EM = 30  # px: a 15px font in a 2x screenshot
SINGLE, DOUBLED = 11, 19  # px: gaps as measured on such screenshots (NOTES.md section 1)


def advance(text: str) -> float:
    """Width of a word in em, roughly as Arial sets it."""
    return sum(0.25 if c in "ijlft.,;:'!|«»" else 0.85 if c in "mwMW" else
               0.68 if c.isupper() else 0.52 for c in text)


def boxes(lines: list[list[tuple[str, int]]], *, em: float = EM,
          conf: float = 95.0) -> list[OcrWord]:
    """OCR words for lines of (text, gap in px after it), with heights that fit the letters."""
    out = []
    for n, line in enumerate(lines):
        x = 20
        for text, gap in line:
            f = ocrgaps._shape_factor(text) or 0.4
            h = round(f * em)
            w = max(1, round(advance(text) * em))
            out.append(OcrWord(text, x, 100 + 40 * n + (EM - h), w, h, (1, 1, 1, n + 1), conf))
            x += w + gap
    return out


PROSE = ("the board has approved the acquisition subject to the usual regulatory checks and "
         "the parking garage will be closed for resurfacing from next week so please plan "
         "ahead and share your car with colleagues whenever you can").split()


def prose_lines(bits: list[int], per_line: int = 12, single: int = SINGLE,
                doubled: int = DOUBLED) -> list[list[tuple[str, int]]]:
    """Lines of words whose in-line gaps carry `bits` in order (per_line - 1 bits a line)."""
    lines, k, i = [], 0, 0
    while k < len(bits):
        line = []
        for j in range(per_line):
            word = PROSE[i % len(PROSE)]
            i += 1
            if j == per_line - 1 or k == len(bits):
                line.append((word, 0))
                break
            line.append((word, doubled if bits[k] else single))
            k += 1
        lines.append(line)
    return lines


def read_bits(readings: list[GapReading]) -> list[int | None]:
    return [r.gap_after for r in readings if r.same_line]


def test_classify_reads_single_and_doubled_gaps() -> None:
    rng = random.Random(1)
    bits = [int(rng.random() < 0.2) for _ in range(60)]
    got = read_bits(classify_detailed(boxes(prose_lines(bits))))
    assert got == bits


def test_classify_gives_none_across_lines_and_at_the_end() -> None:
    words = boxes(prose_lines([0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0] * 2))
    out = classify_gaps(words)
    assert isinstance(out[0], ExcerptWord)
    assert out[-1].gap_after is None
    assert out[11].gap_after is None  # last word of line 1
    assert [w.gap_after for w in out[:11]] == [0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0]


def test_classify_is_scale_free() -> None:
    rng = random.Random(2)
    bits = [int(rng.random() < 0.2) for _ in range(44)]
    lines = prose_lines(bits, single=5, doubled=9)  # the same text at 1x
    assert read_bits(classify_detailed(boxes(lines, em=15))) == bits


def test_classify_without_any_doubled_gap_reads_no_one() -> None:
    rng = random.Random(3)
    lines = [[(PROSE[(12 * n + j) % len(PROSE)], rng.randint(8, 14) if j < 11 else 0)
              for j in range(12)] for n in range(4)]  # single gaps spread as real ones do
    got = read_bits(classify_detailed(boxes(lines)))
    assert 1 not in got
    assert got.count(0) >= 0.9 * len(got)


def test_classify_leaves_the_middle_unread() -> None:
    words = boxes([[("one", SINGLE), ("two", 15), ("three", DOUBLED), ("four", SINGLE),
                    ("five", SINGLE), ("six", SINGLE), ("seven", DOUBLED), ("eight", SINGLE),
                    ("nine", SINGLE), ("ten", 60), ("eleven", 0)]])  # 60 px: a column, no gap
    got = [w.gap_after for w in classify_gaps(words)]
    assert got == [0, None, 1, 0, 0, 0, 1, 0, 0, None, None]


def test_classify_glues_punctuation_like_excerpt_words() -> None:
    text = "Le projet « Horizon » avance : aucune pièce ne sort du bâtiment ce mois"
    words = boxes([[(t, SINGLE) for t in text.split()]])
    out = classify_gaps(words)
    assert [w.norm for w in out] == [w.norm for w in excerpt_words(text)]
    assert out[0].gap_after == 0  # le | projet
    # projet | « : the gap between units, measured before the opener
    assert out[1].norm == "projet" and out[1].gap_after in (0, None)


def test_classify_distrusts_low_confidence_and_misfit_boxes() -> None:
    bits = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0] * 3
    words = boxes(prose_lines(bits))
    k = 5
    w = words[k]
    words[k] = OcrWord(w.text, w.left, w.top, w.width, w.height, w.line, 12.0)  # unsure word
    w = words[17]
    words[17] = OcrWord(w.text, w.left, w.top - 30, w.width, w.height + 30, w.line, w.conf)
    got = classify_gaps(words)
    assert got[k - 1].gap_after is None and got[k].gap_after is None
    assert got[16].gap_after is None and got[17].gap_after is None
    assert got[0].gap_after == 0 and got[1].gap_after == 1


def test_classify_joins_a_word_hyphenated_across_lines() -> None:
    words = boxes([[("our", SINGLE), ("forecast-", 0)], [("ing", SINGLE), ("model", 0)]])
    out = classify_gaps(words)
    assert [w.norm for w in out] == ["our", "forecasting", "model"]
    assert [w.gap_after for w in out] == [0, 0, None]
    assert [w.joined for w in out] == [False, True, False]
    assert excerpt_words("our forecast-\ning model") == out
    assert [(t, a.text, b.text) for t, a, b in unit_boxes(words)] == [
        ("our", "our", "our"), ("forecast-ing", "forecast-", "ing"), ("model", "model", "model")]


def test_unit_boxes_follow_the_units_classify_reads() -> None:
    words = boxes([[("Hello", SINGLE), ("«", SINGLE), ("world", DOUBLED), ("»", SINGLE),
                    ("again.", 0)], [("Next", SINGLE), ("line", 0)]])
    units = unit_boxes(words)
    assert len(units) == len(classify_gaps(words))
    assert [t for t, _, _ in units] == ["Hello", "« world »", "again.", "Next", "line"]
    assert [(a.text, b.text) for _, a, b in units][1] == ("«", "»")


def test_classify_justified_lines() -> None:
    rng = random.Random(4)
    bits = [int(rng.random() < 0.2) for _ in range(66)]
    lines = prose_lines(bits)
    words = boxes(lines)
    # stretch lines 2 and 4 as text-align: justify does: every space (NBSP too) grows by 9 px
    stretched = []
    for n, line in enumerate(lines):
        x = 20
        for text, gap in line:
            f = ocrgaps._shape_factor(text) or 0.4
            h, w = round(f * EM), round(advance(text) * EM)
            stretched.append(OcrWord(text, x, 100 + 40 * n + EM - h, w, h, (1, 1, 1, n + 1),
                                     95.0))
            grow = 9 if n in (1, 3) else 0
            x += w + (gap + grow if gap == SINGLE else gap + 2 * grow if gap else 0)
    assert read_bits(classify_detailed(words)) == bits
    got = read_bits(classify_detailed(stretched))
    wrong = sum(1 for g, b in zip(got, bits, strict=True) if g is not None and g != b)
    assert wrong == 0 and got.count(None) <= 4


def test_classify_monospace() -> None:
    rng = random.Random(5)
    bits = [int(rng.random() < 0.2) for _ in range(55)]
    pitch = 17  # px; a gap is the space's cell plus the bearings of both letters
    words, k = [], 0
    for n in range(5):
        x = 20
        for j in range(12):
            text = PROSE[(12 * n + j) % len(PROSE)]
            w = len(text) * pitch - rng.randint(2, 6)
            h = round((ocrgaps._shape_factor(text) or 0.5) * 28)
            words.append(OcrWord(text, x, 100 + 40 * n + 28 - h, w, h, (1, 1, 1, n + 1), 95.0))
            if j < 11:
                x += w + (2 if bits[k] else 1) * pitch + rng.randint(2, 6)
                k += 1
    assert ocrgaps._monospace_pitch(words, {id(w): 28.0 for w in words})
    assert read_bits(classify_detailed(words)) == bits


def test_classify_empty_and_single() -> None:
    assert classify_gaps([]) == []
    assert classify_gaps(boxes([[("Bonjour", 0)]])) == [ExcerptWord("bonjour", None)]
    assert classify_gaps(boxes([[("«", SINGLE), (":", 0)]])) == []

