"""Word carriers in blocks: the cuts (EVEN, UNITS), the reading order and the groups blocks
are cut within."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.carriers import SENTENCE, WORD
from relay.scheme import EVEN, UNITS
from relay.wordblocks import Blocks, budget_unit, word_order, word_runs


@pytest.mark.parametrize("n", [1, 5, 47, 48, 95, 96, 97, 1000])
def test_even_blocks_sizes_and_weights(n: int) -> None:
    """The cut of messages logged before UNITS: equal blocks, floor(size/6) doubles each."""
    order = [bytes([i % 256, i // 256]) for i in range(n)]
    b = Blocks.build(order, 1 / 6, 48, EVEN)
    assert [c for m in b.members for c in m] == order  # consecutive, in reading order
    sizes = [len(m) for m in b.members]
    if n >= 48:
        assert all(48 <= s < 96 for s in sizes) and max(sizes) - min(sizes) <= 1
    else:
        assert sizes == [n]
    assert b.ones == tuple(s // 6 for s in sizes)
    assert all(b.index[c] == i for i, m in enumerate(b.members) for c in m)
    assert Blocks.build(order, 0.0, 48, EVEN).members == ()
    assert Blocks.build([], 1 / 6, 48, EVEN).members == ()


@pytest.mark.parametrize("rate", [1 / 6, 0.3, 0.15, 0.5])
@given(n=st.integers(1, 3000))
@settings(max_examples=60, deadline=None)
def test_unit_blocks_spend_the_whole_budget_and_never_more_in_a_block(rate: float,
                                                                      n: int) -> None:
    """UNITS: the message doubles floor(n * rate) in all (the most the rate allows), no block
    doubles more than its rate, and blocks hold at least 48 gaps when the message has them."""
    order = [i.to_bytes(2, "big") for i in range(n)]
    b = Blocks.build(order, rate, 48, UNITS)
    assert [c for m in b.members for c in m] == order
    p, q = budget_unit(rate)
    assert sum(b.ones) == n * p // q == math.floor(n * rate + 1e-9)
    for m, k in zip(b.members, b.ones, strict=True):
        assert k * q <= len(m) * p  # k / len(m) <= rate, exactly
    sizes = [len(m) for m in b.members]
    if n >= 48 + q:
        assert min(sizes) >= 48 and max(sizes) < 2 * 48 + 2 * q
    else:
        assert len(sizes) == 1
    assert all(b.index[c] == i for i, m in enumerate(b.members) for c in m)


def test_unit_blocks_double_more_than_even_ones() -> None:
    """The reason for UNITS: even blocks of 53 double 8 (15.1 %), unit blocks of 54 double 9."""
    order = [i.to_bytes(2, "big") for i in range(264)]
    assert sum(Blocks.build(order, 1 / 6, 48, EVEN).ones) == 40
    assert sum(Blocks.build(order, 1 / 6, 48, UNITS).ones) == 44
    assert budget_unit(1 / 6) == (1, 6) and budget_unit(0.3) == (3, 10)
    with pytest.raises(ValueError):
        Blocks.build(order, 1 / 6, 48, 7)


def test_word_order_first_occurrence_in_part_order() -> None:
    a, b, c = b"a", b"b", b"c"
    docs = [([a, b, c], bytes([WORD, SENTENCE, WORD])), ([b, c, a], bytes([WORD, WORD, 0]))]
    assert word_order(docs) == [a, c, b]


def test_word_runs_group_keys_by_the_documents_holding_them() -> None:
    a, b, c, p, h1, h2, s = (bytes([i]) for i in range(7))
    plain = ([a, b, s, c, p], bytes([WORD, WORD, SENTENCE, WORD, WORD]))
    html_ = ([a, h1, b, s, c, h2], bytes([WORD, WORD, WORD, SENTENCE, WORD, WORD]))
    assert word_runs([plain, html_]) == [[a, b, c], [p], [h1, h2]]
    assert word_runs([html_, plain]) == [[a, b, c], [h1, h2], [p]]
    assert word_runs([plain]) == [[a, b, c, p]]


@given(st.lists(st.sets(st.integers(0, 400), max_size=300), min_size=1, max_size=4),
       st.sampled_from([1 / 6, 0.3]))
@settings(max_examples=80, deadline=None)
def test_every_document_is_whole_blocks(doc_keys: list[set[int]], rate: float) -> None:
    """UNITS: each document's word carriers are a union of whole blocks, so no rendering of a
    message can double more than its share, whatever the other renderings hold."""
    docs = [([k.to_bytes(2, "big") for k in sorted(d)], bytes([WORD] * len(d)))
            for d in doc_keys]
    b = Blocks.of(docs, rate, 48, UNITS)
    assert sorted(c for m in b.members for c in m) == sorted(
        {c for ck, _ in docs for c in ck})
    for ck, _ in docs:
        mine = set(ck)
        assert all(set(m) <= mine or not set(m) & mine for m in b.members)
