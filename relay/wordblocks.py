"""Word carriers in blocks: a message's word-carrier keys grouped in blocks (`Blocks`), each
of which every recipient doubles an exact number of, so the share of changed word gaps is at
most the rate in every block; the order they are taken in (`word_order`, `word_runs`) and the
smallest run of gaps that holds a rate exactly (`budget_unit`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from .carriers import WORD
from .scheme import BLOCK, CUT, EVEN, UNITS


def _word_keys(docs: Iterable[tuple[Sequence[bytes], Sequence[int]]]) -> list[list[bytes]]:
    """Per document, its word-carrier keys in reading order."""
    return [[c for c, cls in zip(ck, cl, strict=True) if cls == WORD] for ck, cl in docs]


def word_order(docs: Iterable[tuple[Sequence[bytes], Sequence[int]]]) -> list[bytes]:
    """The word-carrier keys of a message in reading order: the documents in part order, each
    key where it first occurs (the order blocks cut EVEN were taken in)."""
    return list(dict.fromkeys(c for keys in _word_keys(docs) for c in keys))


def word_runs(docs: Sequence[tuple[Sequence[bytes], Sequence[int]]]) -> list[list[bytes]]:
    """The word-carrier keys of a message grouped by which documents hold them (as word
    carriers), each group in reading order, groups in order of first appearance. Blocks are cut
    within a group, so every document's word carriers are whole blocks: each rendering, not just
    the message, doubles at most its share. For text/plain with its text/html alternative: the
    gaps both hold, then the HTML's extra ones (the plain text's line ends), and the few the
    plain text alone holds (a word hyphenated across a line end)."""
    holders: dict[bytes, int] = {}  # key -> bit set of the documents holding it, in reading order
    for i, keys in enumerate(_word_keys(docs)):
        for c in keys:
            holders[c] = holders.get(c, 0) | 1 << i
    runs: dict[int, list[bytes]] = {}
    for c, held in holders.items():
        runs.setdefault(held, []).append(c)
    return list(runs.values())


def budget_unit(rate: float) -> tuple[int, int]:
    """(doubles, gaps) of the smallest run of gaps that holds the rate exactly: (1, 6) for 1/6,
    (3, 10) for 0.3: the nearest fraction with a denominator of at most 100."""
    f = Fraction(rate).limit_denominator(100)
    return f.numerator, f.denominator


@dataclass(frozen=True)
class Blocks:
    """Consecutive word carriers grouped in blocks of about `size` to `2*size`; every recipient
    doubles exactly `ones[b]` carriers of block b, chosen by the keyed stream. The share of
    changed word gaps is then at most the rate in every block, never just on average, and an
    excerpt's evidence varies far less than with independent bits."""

    members: tuple[tuple[bytes, ...], ...]
    ones: tuple[int, ...]
    index: dict[bytes, int] = field(init=False, repr=False)  # carrier key -> its block

    def __post_init__(self) -> None:
        object.__setattr__(self, "index",
                           {c: b for b, m in enumerate(self.members) for c in m})

    @classmethod
    def build(cls, order: Sequence[bytes], rate: float, size: int = BLOCK,
              cut: int = CUT) -> Blocks:
        if size <= 0 or rate <= 0 or not order:
            return cls((), ())
        n = len(order)
        if cut == EVEN:
            nb = max(1, n // size)
            cuts = [n * i // nb for i in range(nb + 1)]
            ones = [min(b - a, math.floor((b - a) * rate + 1e-9))
                    for a, b in zip(cuts, cuts[1:], strict=False)]
        elif cut == UNITS:
            # whole units per block, at least `size` gaps each; the units spread evenly and the
            # last block takes the few gaps (< one unit) left over
            p, q = budget_unit(rate)
            units = n // q
            nb = max(1, units // -(-size // q))
            cuts = [q * (units * i // nb) for i in range(nb)] + [n]
            ones = [(b - a) * p // q for a, b in zip(cuts, cuts[1:], strict=False)]
        else:
            raise ValueError(f"unknown block cut {cut}")
        members = tuple(tuple(order[a:b]) for a, b in zip(cuts, cuts[1:], strict=False))
        return cls(members, tuple(ones))

    @classmethod
    def of(cls, docs: Sequence[tuple[Sequence[bytes], Sequence[int]]], rate: float,
           size: int = BLOCK, cut: int = CUT) -> Blocks:
        """The blocks of a message's documents (carrier keys of every gap, gap classes): EVEN
        over the word carriers in reading order, UNITS within each group of word_runs."""
        if cut == EVEN:
            return cls.build(word_order(docs), rate, size, cut)
        parts = [cls.build(run, rate, size, cut) for run in word_runs(docs)]
        return cls(tuple(m for p in parts for m in p.members),
                   tuple(k for p in parts for k in p.ones))

