"""The shared tokeniser: word normalisation, units, sentence gaps and excerpt reading."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.tokens import (
    JOIN_MARK,
    ExcerptWord,
    clean_excerpt,
    excerpt_spans,
    excerpt_words,
    group_units,
    is_address_like,
    is_numeric_group,
    is_sentence_gap,
    norm,
    read_gap,
    settled_gaps,
)

# --- norm ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("Hello", "hello"),
    ("HELLO,", "hello"),
    ("don’t", "don't"),
    ("«mot»", "mot"),
    ("“quoted”", '"quoted"'),
    ("e-mail", "email"),
    ("e‐mail", "email"),  # U+2010 hyphen
    ("re—use", "reuse"),
    ("ﬁne", "fine"),  # NFKC ligature
    ("Ｆｕｌｌ", "full"),  # NFKC full width
    ("e\u0301t\u00e9", "été"),  # decomposed and composed accents agree
    ("ÉTÉ", "été"),
    ("Stra\u00dfe", "strasse"),  # casefold, not lower
    ("wo\u200brd", "word"),  # zero-width space
    ("soft\u00adware", "software"),  # soft hyphen
    ("²", "2"),
])
def test_norm_equivalences(a: str, b: str) -> None:
    assert norm(a) == norm(b)


@pytest.mark.parametrize(("a", "b"), [
    ("été", "ete"),  # accents are letters, not noise
    ("naïve", "naive"),
    ("über", "uber"),
    ("cote", "côte"),
    ("10", "1O"),
])
def test_norm_keeps_distinctions(a: str, b: str) -> None:
    assert norm(a) != norm(b)


def test_norm_values() -> None:
    assert norm("Café!") == "café"
    assert norm("«") == ""
    assert norm("--") == ""
    assert norm("…") == ""
    assert norm("1,000.5") == "10005"


@given(st.text(max_size=30))
@settings(max_examples=200, deadline=None)
def test_norm_idempotent_and_alnum(s: str) -> None:
    n = norm(s)
    assert norm(n) == n
    assert all(c.isalnum() for c in n)
    assert norm(s.upper()) == norm(s.lower()) or not s.isascii()


# --- units -----------------------------------------------------------------------------------


def units(text: str) -> list[str]:
    return [u.norm for u in group_units(text.split())]


@pytest.mark.parametrize(("a", "b"), [
    ("mot : suite", "mot: suite"),
    ("« Bonjour »", "Bonjour"),
    ("« Bonjour » dit-il", "«Bonjour» dit-il"),
    ("Quoi ? Vraiment !", "Quoi? Vraiment!"),
    ("a -- b", "a b"),
    ("( see below )", "(see below)"),
    ("He said : « yes » ; then left", "He said: «yes»; then left"),
])
def test_group_units_french_spacing(a: str, b: str) -> None:
    assert units(a) == units(b)
    assert units(a)


def test_group_units_spans() -> None:
    raw = "« Bonjour » , mon ami : ça va ?".split()
    us = group_units(raw)
    assert [u.norm for u in us] == ["bonjour", "mon", "ami", "ça", "va"]
    assert (us[0].first, us[0].last) == (0, 3)  # opener, word, closer, comma
    assert (us[2].first, us[2].last) == (5, 6)  # "ami" takes the colon
    assert (us[4].first, us[4].last) == (8, 9)


def test_group_units_leading_and_trailing_punctuation() -> None:
    us = group_units(["--", "(", "word", ")", "--"])
    assert [(u.norm, u.first, u.last) for u in us] == [("word", 0, 4)]
    assert group_units(["«", "»", "--"]) == []
    assert group_units([]) == []


@given(st.lists(st.sampled_from(["mot", ":", "«", "»", "Word.", "--", "(", ")", "a", "!"]),
                max_size=25))
@settings(max_examples=120, deadline=None)
def test_group_units_partition(raw: list[str]) -> None:
    us = group_units(raw)
    assert [u.norm for u in us] == [norm(t) for t in raw if norm(t)]
    # units are disjoint, in order, and each contains exactly one word token
    prev = -1
    for u in us:
        assert prev < u.first <= u.last
        assert sum(1 for t in raw[u.first:u.last + 1] if norm(t)) == 1
        prev = u.last


# --- sentence gaps ---------------------------------------------------------------------------


@pytest.mark.parametrize(("left", "right"), [
    ("end.", "The"),
    ("end.", "«The"),
    ("end.", "“The"),
    ("end!", "and"),
    ("end?", "And"),
    ("end:", "the"),
    ("end;", "then"),
    ("end…", "Then"),
    ('said."', "Then"),
    ("said.”", "Then"),
    ("dit.»", "Puis"),
    ("(see above.)", "Then"),
    ("shown?'", "no"),
    ("Chapter 3.", "The"),
    ("ok.", "(The"),
])
def test_sentence_gaps(left: str, right: str) -> None:
    assert is_sentence_gap(left, right)


@pytest.mark.parametrize(("left", "right"), [
    ("word", "The"),
    ("word,", "The"),
    ("Mr.", "Smith"),
    ("Mrs.", "Smith"),
    ("Dr.", "Who"),
    ("Prof.", "Xavier"),
    ("e.g.", "The"),
    ("i.e.", "We"),
    ("U.S.", "Army"),
    ("M.", "Dupont"),
    ("Mme.", "Curie"),
    ("J.", "Smith"),
    ("etc.", "And"),
    ("end.", "the"),
    ("end.", "and"),
    ("end.", "2024"),
    ("(Fig.", "3)"),
])
def test_not_sentence_gaps(left: str, right: str) -> None:
    assert not is_sentence_gap(left, right)


# --- addresses, numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(("tok", "addr"), [
    ("https://example.org/x", True), ("www.example.org", True), ("bob@example.com", True),
    ("<bob@example.com>", True), ("mailto:bob", True), ("HTTP://X", True),
    ("example", False), ("e.g.", False),
])
def test_is_address_like(tok: str, addr: bool) -> None:
    assert is_address_like(tok) is addr


@pytest.mark.parametrize(("tok", "num"), [
    ("10", True), ("000", True), ("1,000.50", True), ("10:30", True), ("17h30", True),
    ("(42)", True), ("50%", True), ("€12", True),
    ("word", False), ("B12", False), ("...", False), ("--", False),
])
def test_is_numeric_group(tok: str, num: bool) -> None:
    assert is_numeric_group(tok) is num


# --- excerpts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("ws", "bit"), [
    (" ", 0), ("\u00a0", 0), ("  ", 1), ("\u00a0 ", 1), (" \u00a0", 1), ("\u202f ", 1),
    ("\t", None), (" \t", None), ("\n", None), (" \n", None), ("\r\n", None), ("   ", None),
    ("", None), ("\u3000", None),
])
def test_read_gap(ws: str, bit: int | None) -> None:
    assert read_gap(ws) == bit


def gaps(text: str) -> list[int | None]:
    return [w.gap_after for w in excerpt_words(text)]


def norms(text: str) -> list[str]:
    return [w.norm for w in excerpt_words(text)]


def test_excerpt_words_bits() -> None:
    text = "one two  three\u00a0 four\tfive\nsix\r\nseven eight"
    assert norms(text) == ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    assert gaps(text) == [0, 1, 1, None, None, None, 0, None]


def test_excerpt_words_crlf_and_cr() -> None:
    assert gaps("a b\r\nc  d") == [0, None, 1, None]
    assert gaps("a b\rc  d") == [0, None, 1, None]


def test_excerpt_words_last_word_has_no_gap() -> None:
    assert excerpt_words("single") == [ExcerptWord("single", None)]
    assert excerpt_words("end  ") == [ExcerptWord("end", None)]
    assert excerpt_words("") == []


def test_excerpt_hyphenation_rejoined() -> None:
    text = "the docu-\nment is  here and self-\n  evident"
    assert norms(text) == ["the", "document", "is", "here", "and", "selfevident"]
    assert gaps(text) == [0, 0, 1, 0, 0, None]
    # a capitalised next line is a real line break after a dash, not hyphenation
    assert norms("see Jean-\nPierre") == ["see", "jean", "pierre"]
    assert norms("see Jean-\r\nPaul") == ["see", "jean", "paul"]
    assert [w.joined for w in excerpt_words(text)] == [False, True, False, False, False, True]
    assert not any(w.joined for w in excerpt_words("see Jean-\nPierre and self-evident"))


def test_gaps_keyed_with_a_joined_word_are_not_read() -> None:
    """The two gaps on each side of a word joined across a line end are left out, since a
    rendering that split the word keys them differently (see decoding)."""
    words = excerpt_words("a  b c  non-\nfree d  e f  g")
    assert [w.norm for w in words] == ["a", "b", "c", "nonfree", "d", "e", "f", "g"]
    assert [w.gap_after for w in words] == [1, 0, 1, 0, 1, 0, 1, None]
    assert settled_gaps(words) == [1, None, None, None, None, 0, 1, None]
    assert settled_gaps(excerpt_words("x  y")) == [1, None]


def test_excerpt_zero_width_ignored() -> None:
    text = "in\u200bvis\u200cible  wo\u2060rd\ufeff soft\u00adware"
    assert norms(text) == ["invisible", "word", "software"]
    assert gaps(text) == [1, 0, None]


def test_excerpt_punctuation_gap_is_the_units_gap() -> None:
    # "mot : suite": the observed gap is the one after the glued colon, as the embedder uses
    assert excerpt_words("mot :  suite") == [ExcerptWord("mot", 1), ExcerptWord("suite", None)]
    assert excerpt_words("mot  : suite") == [ExcerptWord("mot", 0), ExcerptWord("suite", None)]
    assert excerpt_words("dit  « bonjour »  puis") == [
        ExcerptWord("dit", 1), ExcerptWord("bonjour", 1), ExcerptWord("puis", None)]


def test_clean_excerpt() -> None:
    assert clean_excerpt("a\r\nb\rc") == "a\nb\nc"
    assert clean_excerpt("x\u200by") == "xy"
    assert clean_excerpt("infor-\n   mation") == "infor-mation"


@given(st.lists(st.tuples(st.sampled_from(["alpha", "Beta", "c'est", "naïve", "x1", "end."]),
                          st.sampled_from([" ", "  ", "\u00a0 ", "\t", "\n", " \n "])),
                min_size=1, max_size=20))
@settings(max_examples=120, deadline=None)
def test_excerpt_words_roundtrip(parts: list[tuple[str, str]]) -> None:
    text = "".join(w + ws for w, ws in parts)
    got = excerpt_words(text)
    assert [w.norm for w in got] == [norm(w) for w, _ in parts]
    expect = [{" ": 0, "  ": 1, "\u00a0 ": 1}.get(ws) for _, ws in parts]
    expect[-1] = None
    assert [w.gap_after for w in got] == expect


@pytest.mark.parametrize("text", [
    "Hello  world. Next\r\nline «  quoted » here",
    "our forecast-\ning model, e.g. this: (one)  two",
    "  leading and trailing  \n",
    "",
])
def test_excerpt_spans_locate_the_units_excerpt_words_reads(text: str) -> None:
    cleaned, spans = excerpt_spans(text)
    words = excerpt_words(text)
    assert len(spans) == len(words)
    assert [norm(cleaned[a:b]) for a, b in spans] == [w.norm for w in words]
    assert all(b <= a2 for (_, b), (a2, _) in zip(spans, spans[1:], strict=False))
    for (_, b), (a2, _), w in zip(spans, spans[1:], words, strict=False):
        gap = cleaned[b:a2].replace(JOIN_MARK, "")
        assert read_gap(gap) == w.gap_after or w.gap_after is None
