"""Aligning an excerpt to a logged text: which excerpt gap is which carrier.

Both sides are sequences of keyed word hashes. Exact 3-word anchors fix a local offset (so
paragraphs may be reordered, words dropped or inserted); runs are then extended word by word,
and a single mistyped word between two words on the same offset is taken as a substitution.
A gap is observed only where two consecutive excerpt words map to two consecutive logged words.
The alignment never looks at any recipient's code, so choosing it cannot bias the statistics.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

K = 3  # anchor length in words


@dataclass(frozen=True)
class Alignment:
    mapping: tuple[int | None, ...]  # excerpt word -> logged word index
    observed: tuple[tuple[int, int], ...]  # (logged gap index, bit)

    @property
    def matched(self) -> int:
        return sum(m is not None for m in self.mapping)

    def longest_stretch(self, slack: int = 4) -> int:
        """Aligned words in the longest stretch of the excerpt where aligned words follow each
        other with at most `slack` unaligned words between them: the quoted passage of an
        article or a thread, wherever it lies and whatever share of the text it is."""
        best = run = 0
        last: int | None = None
        for k, m in enumerate(self.mapping):
            if m is None:
                continue
            run = run + 1 if last is not None and k - last <= slack + 1 else 1
            last = k
            best = max(best, run)
        return best


def align(excerpt: Sequence[int], gaps: Sequence[int | None], doc: Sequence[int]) -> Alignment:
    """excerpt: word hashes; gaps[k]: observed bit after excerpt word k (None: unseen);
    doc: the logged word hashes."""
    n, m = len(excerpt), len(doc)
    index: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i in range(m - K + 1):
        index[tuple(doc[i:i + K])].append(i)
    mapping: list[int | None] = [None] * n
    used: set[int] = set()

    def place(k: int, i: int) -> bool:
        if all(mapping[k + t] is None and (i + t) not in used for t in range(K)):
            for t in range(K):
                mapping[k + t] = i + t
                used.add(i + t)
            return True
        return False

    windows = [(k, index.get(tuple(excerpt[k:k + K]), [])) for k in range(n - K + 1)]
    # 1. phrases that occur once in the document fix the offset for certain
    for k, hits in windows:
        if len(hits) == 1:
            place(k, hits[0])
    _extend(excerpt, doc, mapping, used)
    # 2. a repeated phrase is placed only where it continues a neighbour's offset
    changed = True
    while changed:
        changed = False
        for k, hits in windows:
            if len(hits) < 2 or mapping[k] is not None:
                continue
            want = set()
            if k > 0 and mapping[k - 1] is not None:
                want.add(mapping[k - 1] + 1)
            if k + K < n and mapping[k + K] is not None:
                want.add(mapping[k + K] - K)
            fits = [i for i in hits if i in want]
            if len(fits) == 1 and place(k, fits[0]):
                changed = True
        if changed:
            _extend(excerpt, doc, mapping, used)
    # 3. an excerpt made only of repeated phrases: take their first occurrence (a wrong guess
    #    costs the leaker evidence; it cannot make an innocent look guilty)
    if all(x is None for x in mapping):
        for k, hits in windows:
            if hits:
                place(k, hits[0])
        _extend(excerpt, doc, mapping, used)
    observed: dict[int, int] = {}
    conflicts: set[int] = set()
    for k in range(n - 1):
        a, b, bit = mapping[k], mapping[k + 1], gaps[k]
        if a is None or b != a + 1 or bit is None:
            continue
        if a in observed and observed[a] != bit:
            conflicts.add(a)
        observed[a] = bit
    obs = tuple((g, b) for g, b in sorted(observed.items()) if g not in conflicts)
    return Alignment(tuple(mapping), obs)


def _extend(excerpt: Sequence[int], doc: Sequence[int], mapping: list[int | None],
            used: set[int]) -> None:
    """Grow mapped runs word by word along their offset; one differing word is taken as a
    substitution (a typo) when the word after it agrees again."""
    n, m = len(excerpt), len(doc)
    changed = True
    while changed:
        changed = False
        for k in range(n):
            i = mapping[k]
            if i is None:
                continue
            for step in (1, -1):
                k2, i2 = k + step, i + step
                if not (0 <= k2 < n and 0 <= i2 < m) or mapping[k2] is not None or i2 in used:
                    continue
                k3, i3 = k2 + step, i2 + step
                same = excerpt[k2] == doc[i2]
                bridged = (0 <= k3 < n and 0 <= i3 < m and
                           (mapping[k3] == i3 or (mapping[k3] is None and excerpt[k3] == doc[i3])))
                if same or bridged:
                    mapping[k2] = i2
                    used.add(i2)
                    changed = True
