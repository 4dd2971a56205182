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


def p_at_most(rates: Iterable[float], d: int) -> float:
    """P(D <= d) for D a sum of independent Bernoulli(rates), computed exactly by grouping equal
    rates into binomials and convolving."""
    if d < 0:
        return 0.0
    groups = Counter(round(r, 12) for r in rates)
    dist = [1.0]
    for r, n in sorted(groups.items(), key=lambda kv: kv[1]):
        pmf = _binom_pmf(n, r)
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
