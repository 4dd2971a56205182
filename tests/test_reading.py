"""relay.reading, directly: when an alignment is evidence of a message at all (`found`), and
which gaps an excerpt is read at (`reading`: only those that mean the same in every rendering
it fits). The whole path, from excerpt to verdict, is tested in tests/test_decoding.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.align import Alignment
from relay.carriers import NONE, SENTENCE, WORD
from relay.codes import MessageCode
from relay.reading import MIN_SHARE, MIN_STRETCH, MIN_WORDS, Fit, found, reading
from relay.scheme import SCHEME
from relay.store import DocumentRow


def aligned(pattern: str) -> Alignment:
    """An alignment from a pattern: 'x' an aligned excerpt word, '.' an unaligned one."""
    mapping = tuple(k if c == "x" else None for k, c in enumerate(pattern))
    return Alignment(mapping, ())


@pytest.mark.parametrize("pattern,found_it", [
    ("x" * (MIN_WORDS - 1), False),  # too few words to be evidence of anything
    ("x" * MIN_WORDS, True),
    ("x" * 24 + "." * 76, False),  # 24 of 100: under a quarter, and a stretch under 30
    ("x" * 25 + "." * 75, True),  # a quarter of the excerpt
    ("x" * 10 + "." * 190, False),  # 10 of 200 words, no long stretch: not this message
    ("." * 100 + "x" * MIN_STRETCH + "." * 300, True),  # a quoted passage in an article
    ("." * 100 + "x" * (MIN_STRETCH - 1) + "." * 300, False),
    (("x" + "." * 5) * 40, False),  # 40 scattered words in 240: no stretch, under a quarter
])
def test_found(pattern: str, found_it: bool) -> None:
    assert found(aligned(pattern), len(pattern)) is found_it


def test_the_table_is_written_for_these_thresholds() -> None:
    assert (MIN_WORDS, MIN_SHARE, MIN_STRETCH) == (6, 0.25, 30)


KEYS = [bytes([i]) * 36 for i in range(6)]  # six gaps' carrier keys


def doc(classes: list[int]) -> DocumentRow:
    return DocumentRow(1, "m1", "1", "plain", b"", bytes(classes))


def fit(classes: list[int], observed: list[tuple[int, int]]) -> Fit:
    a = Alignment(tuple(range(7)), tuple(observed))  # 7 words, 6 gaps, all aligned
    return Fit(doc(classes), a, KEYS)


def code(classes: list[int], block: int = 0) -> MessageCode:
    return MessageCode(bytes(32), "m1", [(KEYS, classes)], replace(SCHEME, block=block))


def test_reading_keeps_gaps_that_mean_the_same_in_every_rendering() -> None:
    plain = [WORD, SENTENCE, WORD, NONE, WORD, WORD]
    html = [WORD, SENTENCE, NONE, NONE, SENTENCE, WORD]  # gap 2 no carrier, gap 4 another class
    seen = [(g, g % 2) for g in range(6)]
    got = reading([fit(plain, seen), fit(html, seen)], code(plain))
    assert [(c, cls, bit) for c, cls, bit, _ in got] == [
        (KEYS[0], WORD, 0), (KEYS[1], SENTENCE, 1), (KEYS[5], WORD, 1)]
    assert [at for *_, at in got] == [0, 1, 5]  # the excerpt word each gap follows
    alone = reading([fit(plain, seen)], code(plain))  # one rendering: all its carriers
    assert [c for c, *_ in alone] == [KEYS[0], KEYS[1], KEYS[2], KEYS[4], KEYS[5]]


def test_reading_leaves_out_a_sentence_gap_whose_key_is_in_a_block() -> None:
    # the same key a word carrier in one document and a sentence carrier in another would
    # share a stream value with a block: its bits would not be independent
    plain = [WORD, SENTENCE, WORD, WORD, WORD, WORD]
    other = [WORD, WORD, WORD, WORD, WORD, WORD]  # gap 1 is a word carrier here
    c = MessageCode(bytes(32), "m1", [(KEYS, plain), (KEYS, other)], replace(SCHEME, block=4))
    assert c.in_block(KEYS[1]) is not None
    seen = [(g, 1) for g in range(6)]
    got = reading([fit(plain, seen)], c)
    assert KEYS[1] not in [k for k, *_ in got]
    assert [k for k, *_ in got] == [KEYS[0], KEYS[2], KEYS[3], KEYS[4], KEYS[5]]
