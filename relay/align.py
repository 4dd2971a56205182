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


def align(excerpt: Sequence[int], gaps: Sequence[int | None], doc: Sequence[int]) -> Alignment:
    """excerpt: word hashes; gaps[k]: observed bit after excerpt word k (None: unseen);
    doc: the logged word hashes."""
    n, m = len(excerpt), len(doc)
    index: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i in range(m - K + 1):
        index[tuple(doc[i:i + K])].append(i)
    mapping: list[int | None] = [None] * n
    # anchors, rarest first: a phrase that occurs once in the document is the surest
    anchors: list[tuple[int, int, int]] = []
    for k in range(n - K + 1):
        hits = index.get(tuple(excerpt[k:k + K]))
        if hits and len(hits) <= 3:
            anchors.extend((len(hits), k, i) for i in hits)
    anchors.sort()
    used: set[int] = set()
    for _, k, i in anchors:
        if all(mapping[k + t] is None and (i + t) not in used for t in range(K)):
            for t in range(K):
                mapping[k + t] = i + t
                used.add(i + t)
    # extend runs both ways; allow one substituted word when the next one agrees again
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
