"""Attribution statistics: how well a recipient's code matches what a leak shows, and how likely
an innocent recipient would match as well by chance.

Model: at each observed carrier j an innocent recipient's bit is an independent keyed coin with
P(1) = bias_j, unrelated to the leak. The leaker's bit equals the observed bit except for
transcription errors (rate eps < 1/2, unknown). The likelihood ratio "this recipient leaked" vs
"this recipient is innocent" is then (1-eps)/eps per agreeing carrier, for every eps, so the most
powerful statistic is the number of disagreements d (Neyman-Pearson). Under innocence d is a sum
of independent Bernoulli(r_j), r_j = bias_j if the leak shows 0, 1 - bias_j if it shows 1, and
the p-value P(D <= d) is computed exactly. Over n recipients (and every logged message that was
tried), the chance that *some* innocent matches this well is 1 - (1-p)^n.

Word carriers in blocks (wordblocks.Blocks) are not independent: an innocent doubles exactly k
of a block's m carriers, a uniformly random k-subset. The likelihood ratio still depends on d
alone (every k-subset is equally likely under innocence), so d stays the statistic; a block
contributes the exact distribution of its disagreements (`block_pmf`) instead of binomials.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence


def null_rates(biases: Sequence[float], bits: Sequence[int]) -> list[float]:
    """Per observed carrier, the chance an innocent recipient's bit differs from the leak's."""
    return [p if y == 0 else 1.0 - p for p, y in zip(biases, bits, strict=True)]


def disagreements(code: Sequence[int], bits: Sequence[int]) -> int:
    return sum(c != y for c, y in zip(code, bits, strict=True))


def _binom_pmf(n: int, r: float) -> list[float]:
    if r <= 0.0:
        return [1.0] + [0.0] * n
    if r >= 1.0:
        return [0.0] * n + [1.0]
    lr, lq = math.log(r), math.log1p(-r)
    lg = math.lgamma
    return [math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1) + k * lr + (n - k) * lq)
            for k in range(n + 1)]


def block_pmf(m: int, k: int, seen: int, ones: int) -> list[float]:
    """Distribution of an innocent's disagreements on one block: the innocent doubles a uniform
    k-subset of the block's m carriers; `seen` of them were observed, `ones` of those doubled.
    a of the innocent's doubles fall on observed doubles, b on observed singles: d = ones - a + b.
    """
    if not (0 <= ones <= seen <= m and 0 <= k <= m):
        raise ValueError("block_pmf: need 0 <= ones <= seen <= m and 0 <= k <= m")
    total = math.comb(m, k)
    pmf = [0.0] * (seen + 1)
    for a in range(min(ones, k) + 1):
        for b in range(min(seen - ones, k - a) + 1):
            rest = math.comb(m - seen, k - a - b)
            if rest:
                pmf[ones - a + b] += math.comb(ones, a) * math.comb(seen - ones, b) * rest / total
    return pmf


def p_at_most(rates: Iterable[float], d: int, pmfs: Iterable[Sequence[float]] = ()) -> float:
    """P(D <= d) for D a sum of independent Bernoulli(rates) and of independent variables with
    the given distributions (`pmfs[i][k]` = P(= k)), computed exactly: equal rates grouped into
    binomials, everything convolved, truncated at d."""
    if d < 0:
        return 0.0
    groups = Counter(round(r, 12) for r in rates)
    parts = [_binom_pmf(n, r) for r, n in sorted(groups.items(), key=lambda kv: kv[1])]
    dist = [1.0]
    for pmf in [*parts, *pmfs]:
        n = len(pmf) - 1
        lim = min(d, len(dist) - 1 + n) + 1  # only P(D = k) for k <= d is needed
        new = [0.0] * lim
        for i, a in enumerate(dist[:lim]):
            if a == 0.0:
                continue
            for k in range(min(n, lim - 1 - i) + 1):
                new[i + k] += a * pmf[k]
        dist = new
    return min(1.0, sum(dist[:d + 1]))


def family_wise(p: float, n: int) -> float:
    """Chance that at least one of n independent innocents reaches p-value p."""
    if p >= 1.0:
        return 1.0
    return min(1.0, -math.expm1(n * math.log1p(-p)))
