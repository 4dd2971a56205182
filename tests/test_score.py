"""Attribution statistics: exact tails, family-wise correction, and empirical honesty."""

from __future__ import annotations

import itertools
import math
import re
import textwrap
from pathlib import Path

import codebits
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.carriers import SENTENCE, WORD, Layout, analyse_plain
from relay.codes import CodeBook, MessageCode
from relay.hashes import carrier_keys, word_hashes
from relay.scheme import UNITS, V2, Scheme, bias
from relay.score import block_pmf, disagreements, family_wise, null_rates, p_at_most


def brute(rates: list[float], d: int) -> float:
    total = 0.0
    for outcome in itertools.product((0, 1), repeat=len(rates)):
        if sum(outcome) <= d:
            pr = 1.0
            for x, r in zip(outcome, rates, strict=True):
                pr *= r if x else 1.0 - r
            total += pr
    return total


RATE = st.one_of(st.sampled_from([0.0, 0.16, 0.5, 0.84, 1.0, 0.05]),
                 st.floats(0.0, 1.0, allow_nan=False))


@given(st.lists(RATE, max_size=11), st.integers(-2, 13))
@settings(max_examples=200, deadline=None)
def test_p_at_most_exact(rates: list[float], d: int) -> None:
    got = p_at_most(rates, d)
    assert got == pytest.approx(brute(rates, d), abs=1e-10, rel=1e-9)
    assert 0.0 <= got <= 1.0


@given(st.lists(st.sampled_from([0.16, 0.5, 0.84, 0.3]), max_size=60))
@settings(max_examples=100, deadline=None)
def test_p_at_most_monotone_in_d(rates: list[float]) -> None:
    ps = [p_at_most(rates, d) for d in range(-1, len(rates) + 2)]
    assert ps[0] == 0.0
    assert all(a <= b + 1e-15 for a, b in itertools.pairwise(ps))
    assert ps[-1] == pytest.approx(1.0)
    assert ps[-2] == pytest.approx(1.0)


def test_p_at_most_known_values() -> None:
    assert p_at_most([0.5] * 10, 0) == pytest.approx(2.0 ** -10, rel=1e-12)
    assert p_at_most([0.5] * 10, 10) == pytest.approx(1.0)
    assert p_at_most([0.16] * 100, 0) == pytest.approx(0.84 ** 100, rel=1e-9)
    # a large case against a direct binomial sum
    expect = sum(math.comb(200, k) * 0.3 ** k * 0.7 ** (200 - k) for k in range(41))
    assert p_at_most([0.3] * 200, 40) == pytest.approx(expect, rel=1e-9)
    # tiny tails keep their relative precision (no underflow to 0, no 1 - (1 - x))
    tiny = p_at_most([0.5] * 80 + [0.16] * 400, 0)
    assert tiny == pytest.approx(0.5 ** 80 * 0.84 ** 400, rel=1e-9)
    assert tiny > 0
    assert p_at_most([], 0) == 1.0
    assert p_at_most([], -1) == 0.0
    assert p_at_most([0.0, 0.0], 0) == 1.0
    assert p_at_most([1.0, 1.0], 1) == 0.0


def test_null_rates_and_disagreements() -> None:
    assert null_rates([0.5, 0.16, 0.16], [1, 0, 1]) == [0.5, 0.16, pytest.approx(0.84)]
    assert disagreements([1, 0, 1, 1], [1, 1, 0, 1]) == 2
    with pytest.raises(ValueError):
        disagreements([1, 0], [1])
    with pytest.raises(ValueError):
        null_rates([0.5], [1, 0])


def test_family_wise_edges() -> None:
    assert family_wise(0.0, 10_000) == 0.0
    assert family_wise(1.0, 5) == 1.0
    assert family_wise(1.5, 5) == 1.0
    assert family_wise(0.3, 0) == 0.0
    assert family_wise(0.3, 1) == pytest.approx(0.3)
    assert family_wise(0.5, 2) == pytest.approx(0.75)
    assert family_wise(0.5, 10_000) == 1.0
    # tiny p: n * p without cancellation
    assert family_wise(1e-15, 1000) == pytest.approx(1e-12, rel=1e-6)
    assert family_wise(1e-300, 10_000) == pytest.approx(1e-296, rel=1e-6)
    # never below the single-test p, never above Bonferroni
    for p in (1e-9, 1e-4, 0.01, 0.2):
        for n in (1, 2, 50, 10_000):
            fw = family_wise(p, n)
            assert p <= fw + 1e-18
            assert fw <= min(1.0, n * p) * (1 + 1e-12)
            assert fw == pytest.approx(1 - (1 - p) ** n, rel=1e-6, abs=1e-15)


def test_family_wise_monotone() -> None:
    ps = [family_wise(p, 1000) for p in (1e-12, 1e-9, 1e-6, 1e-3, 0.1)]
    assert ps == sorted(ps)
    ns = [family_wise(1e-6, n) for n in (1, 10, 100, 1000, 10_000)]
    assert ns == sorted(ns)


# --- empirical honesty -----------------------------------------------------------------------

ALPHAS = (0.1, 0.01, 0.001)


def _pvalue_table(rates: list[float]) -> np.ndarray:
    return np.array([p_at_most(rates, d) for d in range(len(rates) + 1)])


@pytest.mark.parametrize("seed", [1, 2])
def test_innocents_null_model(seed: int) -> None:
    """P(p-value <= alpha) <= alpha for innocents drawn from the null model."""
    rng = np.random.default_rng(seed)
    biases = np.array([0.5] * 15 + [0.16] * 45)
    observed = (rng.random(60) < biases).astype(np.int8)  # a leaker's code, as seen
    rates = null_rates(biases.tolist(), observed.tolist())
    table = _pvalue_table(rates)
    n = 200_000
    innocents = (rng.random((n, 60)) < biases).astype(np.int8)
    d = (innocents != observed).sum(axis=1)
    pv = table[d]
    for alpha in ALPHAS:
        rate = float((pv <= alpha).mean())
        tol = 4 * math.sqrt(alpha / n) + 1e-5
        assert rate <= alpha + tol, (alpha, rate)
    # and the p-values are the exact distribution, not merely conservative
    for k in range(int(d.min()), int(np.percentile(d, 50)) + 1):
        emp = float((d <= k).mean())
        assert abs(emp - table[k]) < 5 * math.sqrt(table[k] * (1 - table[k]) / n) + 2e-5


def test_innocents_with_random_biases() -> None:
    rng = np.random.default_rng(7)
    biases = rng.choice([0.5, 0.16, 0.3, 0.05], size=90)
    observed = (rng.random(90) < 0.5).astype(np.int8)  # even an odd-looking leak
    table = _pvalue_table(null_rates(biases.tolist(), observed.tolist()))
    n = 200_000
    d = ((rng.random((n, 90)) < biases).astype(np.int8) != observed).sum(axis=1)
    pv = table[d]
    for alpha in ALPHAS:
        assert float((pv <= alpha).mean()) <= alpha + 4 * math.sqrt(alpha / n) + 1e-5


def _gpl_layout(key: bytes) -> tuple[Layout, list[bytes]]:
    """GPL-3 prose wrapped at 72: its layout and carrier keys."""
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    body = "\n\n".join(textwrap.fill(p, 72) for p in paras if len(p.split()) > 30)
    L = analyse_plain(body)
    return L, carrier_keys(word_hashes(key, L.words))


def test_innocents_through_codebook() -> None:
    """The same check with real keyed codes of real carriers for thousands of recipients."""
    key = bytes(32)
    L, ck = _gpl_layout(key)
    cs = L.carriers()
    # a window of 60 carriers with both classes, as an excerpt would show them
    sent = [j for j, (_, g) in enumerate(cs) if bias(g.cls, 0.16) == 0.5]
    start = max(0, sent[len(sent) // 2] - 30)
    window = cs[start:start + 60]
    keys_ = [ck[i] for i, _ in window]
    biases = [bias(g.cls, 0.16) for _, g in window]
    assert 0.5 in biases and 0.16 in biases
    book = CodeBook(key, "e" * 64)

    def bits(recipient: str) -> list[int]:
        return codebits.bits(book, recipient, keys_, biases)

    observed = bits("leaker@example.com")
    rates = null_rates(biases, observed)
    table = [p_at_most(rates, d) for d in range(len(rates) + 1)]
    n = 4000
    pvs = [table[disagreements(bits(f"staff{r:05d}@example.com"), observed)]
           for r in range(n)]
    for alpha in (0.2, 0.1, 0.05):
        rate = sum(p <= alpha for p in pvs) / n
        assert rate <= alpha + 4 * math.sqrt(alpha * (1 - alpha) / n), (alpha, rate)
    # not vacuous: the p-values spread over (0, 1]
    assert min(pvs) < 0.05 and max(pvs) > 0.5
    # a leaker is far out in the tail (typically: one leaker's code may have few doubled gaps)
    exact = [p_at_most(null_rates(biases, bits(f"leaker{r}@example.com")), 0)
             for r in range(50)]
    assert sorted(exact)[len(exact) // 2] < 1e-6 / n


# --- blocks ----------------------------------------------------------------------------------

def brute_block(m: int, k: int, seen: int, ones: int) -> list[float]:
    """Enumerate every k-subset of m carriers; observed carriers are 0..seen-1, the first
    `ones` of them doubled."""
    obs = [1] * ones + [0] * (seen - ones)
    pmf = [0.0] * (seen + 1)
    subsets = list(itertools.combinations(range(m), k))
    for s in subsets:
        d = sum((i in s) != bool(y) for i, y in enumerate(obs))
        pmf[d] += 1 / len(subsets)
    return pmf


@st.composite
def block_case(draw: st.DrawFn) -> tuple[int, int, int, int]:
    m = draw(st.integers(1, 12))
    k = draw(st.integers(0, m))
    seen = draw(st.integers(0, m))
    return m, k, seen, draw(st.integers(0, seen))


@given(block_case())
@settings(max_examples=150, deadline=None)
def test_block_pmf_exact(case: tuple[int, int, int, int]) -> None:
    got = block_pmf(*case)
    assert got == pytest.approx(brute_block(*case), abs=1e-12)
    assert sum(got) == pytest.approx(1.0)


def test_block_pmf_rejects_impossible() -> None:
    with pytest.raises(ValueError):
        block_pmf(5, 1, 6, 0)
    with pytest.raises(ValueError):
        block_pmf(5, 1, 3, 4)


@given(st.lists(RATE, max_size=5), st.lists(block_case(), max_size=3), st.integers(-1, 12))
@settings(max_examples=150, deadline=None)
def test_p_at_most_with_blocks_exact(rates: list[float], blocks: list[tuple[int, int, int, int]],
                                     d: int) -> None:
    dist = [1.0]
    for pmf in [[1 - r, r] for r in rates] + [brute_block(*b) for b in blocks]:
        new = [0.0] * (len(dist) + len(pmf) - 1)
        for i, a in enumerate(dist):
            for j, b in enumerate(pmf):
                new[i + j] += a * b
        dist = new
    expect = sum(dist[:d + 1]) if d >= 0 else 0.0
    got = p_at_most(rates, d, [block_pmf(*b) for b in blocks])
    assert got == pytest.approx(min(1.0, expect), abs=1e-10)


def test_innocents_through_block_code() -> None:
    """Real keyed block codes, an excerpt's window of carriers (cutting blocks at both ends,
    with a share of gaps unread as from a screenshot): P(p <= alpha) <= alpha for innocents,
    and the p-values are exact, not merely conservative."""
    key = bytes(32)
    L, ck = _gpl_layout(key)
    classes = bytes(g.cls for g in L.gaps)
    code = MessageCode(key, "e" * 64, [(ck, classes)], Scheme(V2, 1 / 6, 48, UNITS))
    cs = [i for i, c in enumerate(classes) if c]
    rng = np.random.default_rng(3)
    window = [i for i in cs[70:170] if rng.random() > 0.15]
    keys_ = [ck[i] for i in window]
    cls_ = [classes[i] for i in window]
    assert SENTENCE in cls_ and WORD in cls_
    observed = code.bits("leaker@example.com", keys_, cls_)
    rates, pmfs = [], []
    by_block: dict[int, list[int]] = {}
    for c, k, y in zip(keys_, cls_, observed, strict=True):
        if k == WORD:
            by_block.setdefault(code.blocks.index[c], []).append(y)
        else:
            rates.append(0.5)
    assert len(by_block) >= 2
    pmfs = [block_pmf(len(code.blocks.members[b]), code.blocks.ones[b], len(ys), sum(ys))
            for b, ys in by_block.items()]
    table = [p_at_most(rates, d, pmfs) for d in range(len(keys_) + 1)]
    n = 4000
    ds = [disagreements(code.bits(f"staff{r:05d}@example.com", keys_, cls_), observed)
          for r in range(n)]
    pvs = [table[d] for d in ds]
    for alpha in (0.2, 0.1, 0.05):
        rate = sum(p <= alpha for p in pvs) / n
        assert rate <= alpha + 4 * math.sqrt(alpha * (1 - alpha) / n), (alpha, rate)
    for k in range(min(ds), sorted(ds)[n // 2] + 1):
        emp = sum(d <= k for d in ds) / n
        assert abs(emp - table[k]) < 5 * math.sqrt(table[k] * (1 - table[k]) / n) + 1e-3
    assert table[0] < 1e-9 / n  # and the leaker, matching all, is far out in the tail
