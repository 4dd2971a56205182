"""Words and numbers as the evidence sheet writes them (pure): a probability as a number and as
"about 1 in ...", counts with thousands separators and plurals, and HTML escaping."""

from __future__ import annotations

import html
import math
from typing import Any


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def one_in(p: float) -> str:
    """'about 1 in 32 billion' for p = 3.1e-11."""
    if p <= 0:
        return "less than 1 in 10<sup>300</sup>"
    n = 1 / p
    if n < 1.5:
        return "close to certain"
    for size, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if n >= size:
            if n >= 1000 * size and word == "trillion":
                e = math.floor(math.log10(n))
                return f"about 1 in {n / 10 ** e:.2g} &times; 10<sup>{e}</sup>"
            return f"about 1 in {_two_digits(n / size)} {word}"
    return f"about 1 in {_two_digits(n)}"


def _two_digits(x: float) -> str:
    """x to two significant digits, without an exponent: 3.4, 34, 340, 3,400."""
    if x < 10:
        return f"{x:.2g}"
    return thousands(round(x, 1 - int(math.floor(math.log10(x)))))


def thousands(x: float) -> str:
    return f"{int(x):,}"


def esc(s: Any) -> str:
    return html.escape("" if s is None else str(s))


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{thousands(n)} {one if n == 1 else (many or one + 's')}"

