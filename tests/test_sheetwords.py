"""Words and numbers as the evidence sheet writes them (relay.sheetwords), as tables."""

from __future__ import annotations

import pytest

from relay.sheetwords import esc, fmt_p, one_in, plural, thousands


@pytest.mark.parametrize("p,words", [
    (3.1e-11, "about 1 in 32 billion"), (2.9e-12, "about 1 in 340 billion"),
    (2e-4, "about 1 in 5,000"), (0.011, "about 1 in 91"), (0.5, "about 1 in 2"),
    (7.3e-23, "about 1 in 1.4 &times; 10<sup>22</sup>"),
    (1.0, "close to certain"), (1e-6, "about 1 in 1 million"),
    (1e-22, "about 1 in 1 &times; 10<sup>22</sup>")])
def test_one_in(p: float, words: str) -> None:
    assert one_in(p) == words


def test_fmt_p() -> None:
    assert [fmt_p(p) for p in (0.0036, 1e-6, 1.0, 3.14e-11)] == ["0.0036", "1.0e-06", "1",
                                                                 "3.1e-11"]


@pytest.mark.parametrize("n,one,many,text", [
    (0, "gap", None, "0 gaps"), (1, "gap", None, "1 gap"), (2, "gap", None, "2 gaps"),
    (1_234, "word", None, "1,234 words"), (2, "copy", "copies", "2 copies"),
    (1, "copy", "copies", "1 copy"),
])
def test_plural(n: int, one: str, many: str | None, text: str) -> None:
    assert plural(n, one, many) == text


def test_thousands_and_esc() -> None:
    assert thousands(1_000_000) == "1,000,000" and thousands(999.9) == "999"
    assert esc(None) == "" and esc("<a & 'b'>") == "&lt;a &amp; &#x27;b&#x27;&gt;"
    assert esc(3) == "3"
