"""Keyed derivations: identity, word hashes, carrier keys and per-recipient bits."""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import math
import re
import struct
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import codes
from relay.carriers import SENTENCE, WORD, analyse_html, analyse_plain
from relay.codes import (
    EVEN,
    UNITS,
    V2,
    V3,
    Blocks,
    CodeBook,
    MessageCode,
    Scheme,
    bias,
    budget_unit,
    carrier_keys,
    message_identity,
    pack_hashes,
    shingles,
    unpack_hashes,
    word_hashes,
    word_order,
    word_runs,
    word_threshold,
)

KEY = bytes(range(32))
KEY2 = bytes(range(1, 33))
IDENT = "a" * 64


def prose(n_paras: int = 12) -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 30][:n_paras]


@pytest.fixture(scope="module")
def layout_ckeys() -> tuple[list[bytes], list[float]]:
    body = "\n\n".join(textwrap.fill(p, 72) for p in prose())
    L = analyse_plain(body)
    ck = carrier_keys(word_hashes(KEY, L.words))
    cs = L.carriers()
    return [ck[i] for i, _ in cs], [bias(g.cls, 0.16) for _, g in cs]


# --- identity --------------------------------------------------------------------------------


def test_message_identity_depends_on_every_byte_and_sender() -> None:
    raw = b"Subject: hi\r\nMessage-ID: <1@x>\r\n\r\nHello all.\r\n"
    base = message_identity(raw, "boss@example.com")
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert message_identity(raw, "boss@example.com") == base
    seen = {base}
    for i in range(len(raw)):
        for delta in (1, 128):
            mutated = raw[:i] + bytes([(raw[i] + delta) % 256]) + raw[i + 1:]
            seen.add(message_identity(mutated, "boss@example.com"))
    assert len(seen) == 2 * len(raw) + 1
    assert message_identity(raw + b"\r\n", "boss@example.com") != base
    assert message_identity(raw[:-1], "boss@example.com") != base
    assert message_identity(raw, "other@example.com") != base
    assert message_identity(raw, "") != base
    # sender and body are not simply concatenated
    assert message_identity(b"xbody", "a@b") != message_identity(b"body", "a@bx")


def test_message_identity_not_message_id_alone() -> None:
    a = b"Message-ID: <same@x>\r\n\r\nfirst text\r\n"
    b = b"Message-ID: <same@x>\r\n\r\nsecond text\r\n"
    assert message_identity(a, "s@x") != message_identity(b, "s@x")


# --- hashes ----------------------------------------------------------------------------------


def test_word_hashes_keyed_and_deterministic() -> None:
    words = ["the", "relay", "sends", "the", "copies"]
    h = word_hashes(KEY, words)
    assert h == word_hashes(KEY, words)
    assert h[0] == h[3] and len(set(h)) == 4
    assert all(0 <= x < 1 << 63 for x in h)
    h2 = word_hashes(KEY2, words)
    assert not set(h) & set(h2)
    assert unpack_hashes(pack_hashes(h)) == h
    assert len(pack_hashes(h)) == 8 * len(h)


def test_shingles() -> None:
    h = word_hashes(KEY, "a b c d a b c".split())
    s = shingles(h)
    assert len(s) == len(h) - 2
    assert s[0] == s[4] and len(set(s)) == 4
    assert shingles(h[:2]) == []
    assert shingles(word_hashes(KEY, "x a b c y".split()))[1] == s[0]


def test_carrier_keys_distinct_for_repeated_phrases() -> None:
    words = ("this license " * 5 + "applies to each work under this license " * 4).split()
    h = word_hashes(KEY, words)
    ck = carrier_keys(h)
    assert len(ck) == len(words) - 1
    assert len(set(ck)) == len(ck)


def test_carrier_keys_depend_on_local_context_only() -> None:
    a = word_hashes(KEY, "one two three four five six seven eight".split())
    b = word_hashes(KEY, "zero one two three four five six seven eight".split())
    ca, cb = carrier_keys(a), carrier_keys(b)
    # gap "three|four" has the same neighbourhood in both texts, so the same key
    assert ca[2] == cb[3]
    # the first gap of `a` has no left neighbour; in `b` the same gap does
    assert ca[0] != cb[1]
    # a changed word changes the keys of the gaps that see it, and only those
    c = list(a)
    c[4] = word_hashes(KEY, ["FIVE!"])[0]
    cc = carrier_keys(c)
    assert [x != y for x, y in zip(ca, cc, strict=True)] == [False, False, True, True, True,
                                                             True, False]


def test_plain_and_html_renderings_share_carrier_keys() -> None:
    paras = prose(4)
    plain = "\n\n".join(textwrap.fill(p, 72) for p in paras)
    rich = ("<html><body>" + "".join(
        f"<p>{html.escape(p, quote=False).replace('copyright', '<b>copyright</b>')}</p>\n"
        for p in paras) + "</body></html>")
    Lp, Lh = analyse_plain(plain), analyse_html(rich)
    assert Lp.words == Lh.words
    ckp, ckh = carrier_keys(word_hashes(KEY, Lp.words)), carrier_keys(word_hashes(KEY, Lh.words))
    assert ckp == ckh
    # the gaps that carry bits in both renderings (all but the plain line ends) are the same
    # gaps with the same class, hence the same bits for every recipient
    hp = {i: g.cls for i, g in Lp.carriers()}
    hh = {i: g.cls for i, g in Lh.carriers()}
    common = set(hp) & set(hh)
    assert len(common) > 0.8 * len(hp)
    assert all(hp[i] == hh[i] for i in common)
    book = CodeBook(KEY, IDENT)
    idx = sorted(common)
    bp = book.bits("alice@example.com", [ckp[i] for i in idx], [0.3] * len(idx))
    bh = book.bits("alice@example.com", [ckh[i] for i in idx], [0.3] * len(idx))
    assert bp == bh and 0 < sum(bp) < len(bp)


# --- bits ------------------------------------------------------------------------------------


def test_bias() -> None:
    assert bias(SENTENCE, 0.16) == 0.5
    assert bias(WORD, 0.16) == 0.16
    assert bias(WORD, 0.0) == 0.0
    assert bias(0, 0.3) == 0.0


def test_bits_deterministic(layout_ckeys: tuple[list[bytes], list[float]]) -> None:
    ck, bs = layout_ckeys
    a = CodeBook(KEY, IDENT).bits("alice@example.com", ck, bs)
    assert a == CodeBook(KEY, IDENT).bits("alice@example.com", ck, bs)
    # recipient addresses compare case-insensitively
    assert a == CodeBook(KEY, IDENT).bits("Alice@Example.COM", ck, bs)
    assert set(a) == {0, 1}


def _diff(a: list[int], b: list[int]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def test_bits_differ_by_key_identity_recipient(
        layout_ckeys: tuple[list[bytes], list[float]]) -> None:
    ck, _ = layout_ckeys
    half = [0.5] * len(ck)
    n = len(ck)
    assert n > 300
    a = CodeBook(KEY, IDENT).bits("alice@example.com", ck, half)
    others = [
        CodeBook(KEY2, IDENT).bits("alice@example.com", ck, half),
        CodeBook(KEY, "b" * 64).bits("alice@example.com", ck, half),
        CodeBook(KEY, IDENT).bits("bob@example.com", ck, half),
        CodeBook(KEY, IDENT).bits("alice@example.org", ck, half),
    ]
    for o in others:
        # independent fair coins: about half differ
        assert abs(_diff(a, o) - n / 2) < 5 * math.sqrt(n / 4)


def test_bits_follow_bias_threshold(layout_ckeys: tuple[list[bytes], list[float]]) -> None:
    ck, _ = layout_ckeys
    book = CodeBook(KEY, IDENT)
    u = book.uniforms("carol@example.com", ck)
    assert all(0.0 <= x < 1.0 for x in u)
    assert book.bits("carol@example.com", ck, [0.0] * len(ck)) == [0] * len(ck)
    assert book.bits("carol@example.com", ck, [1.0] * len(ck)) == [1] * len(ck)
    # monotone in bias: a 1 at bias p stays a 1 at any larger bias
    lo = book.bits("carol@example.com", ck, [0.1] * len(ck))
    hi = book.bits("carol@example.com", ck, [0.3] * len(ck))
    assert all(h >= g for g, h in zip(lo, hi, strict=True))
    with pytest.raises(ValueError):
        book.bits("carol@example.com", ck, [0.5])


@pytest.mark.parametrize("p", [0.5, 0.16, 0.05])
def test_empirical_bias(layout_ckeys: tuple[list[bytes], list[float]], p: float) -> None:
    ck, _ = layout_ckeys
    ck = ck[:40]
    book = CodeBook(KEY, IDENT)
    n_rcpt = 400
    ones = 0
    per_carrier = [0] * len(ck)
    for r in range(n_rcpt):
        bits = book.bits(f"user{r}@example.com", ck, [p] * len(ck))
        ones += sum(bits)
        for j, b in enumerate(bits):
            per_carrier[j] += b
    total = n_rcpt * len(ck)
    sd = math.sqrt(p * (1 - p) / total)
    assert abs(ones / total - p) < 5 * sd
    # every carrier gets its own coin across recipients (not one coin per message)
    sd1 = math.sqrt(p * (1 - p) / n_rcpt)
    assert all(abs(c / n_rcpt - p) < 5.5 * sd1 for c in per_carrier)


def test_bits_independent_across_recipients(
        layout_ckeys: tuple[list[bytes], list[float]]) -> None:
    ck, _ = layout_ckeys
    ck = ck[:64]
    book = CodeBook(KEY, IDENT)
    codes = {tuple(book.bits(f"u{r}@x.org", ck, [0.5] * 64)) for r in range(300)}
    assert len(codes) == 300
    # pairwise agreement of two codes is ~ 1/2 per bit
    a = book.bits("u1@x.org", ck, [0.5] * 64)
    agree = [64 - _diff(a, book.bits(f"v{r}@x.org", ck, [0.5] * 64)) for r in range(200)]
    mean = sum(agree) / len(agree)
    assert abs(mean - 32) < 5 * math.sqrt(16 / 200)


# --- blocks of word carriers -----------------------------------------------------------------

def _docs(n_words: int = 2000) -> list[tuple[list[bytes], bytes]]:
    """The plain and HTML renderings of GPL-3 prose, as (carrier keys, classes) per document."""
    paras = prose(40)
    words = " ".join(paras).split()[:n_words]
    text = " ".join(words)
    out = []
    for L in (analyse_plain(textwrap.fill(text, 72)),
              analyse_html("<p>" + html.escape(text) + "</p>")):
        out.append((carrier_keys(word_hashes(KEY, L.words)), bytes(g.cls for g in L.gaps)))
    return out


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


def test_each_rendering_doubles_at_most_its_share() -> None:
    """The plain text (wrapped at 72, so its line ends are not carriers) and its HTML
    alternative: per recipient, each doubles at most one word gap in six."""
    docs = _docs(900)
    code = MessageCode(KEY, IDENT, docs, Scheme(V2, 1 / 6, 48, UNITS))
    even = MessageCode(KEY, IDENT, docs, Scheme(V2, 1 / 6, 48, EVEN))
    over_even = 0
    for r in range(40):
        for ck, cl in docs:
            words = [c for c, k in zip(ck, cl, strict=True) if k == WORD]
            assert 6 * sum(code.bits(f"u{r}@example.com", words, [WORD] * len(words))) \
                <= len(words)
            over_even += 6 * sum(even.bits(f"u{r}@example.com", words, [WORD] * len(words))) \
                > len(words)
    assert over_even > 0  # blocks spanning both renderings could pass the share in one


def test_block_code_doubles_exactly_its_share_in_every_block() -> None:
    docs = _docs()
    code = MessageCode(KEY, IDENT, docs, Scheme(V2, 1 / 6, 48, UNITS))
    assert code.blocks is not None and len(code.blocks.members) >= 10
    ck, cl = docs[0]
    for r in ("alice@example.com", "bob@example.com", "x@y.org"):
        bits = dict(zip(ck, code.bits(r, ck, cl), strict=True))
        for m, k in zip(code.blocks.members, code.blocks.ones, strict=True):
            assert sum(bits[c] for c in m if c in bits) <= k
        allbits = code.bits(r, [c for m in code.blocks.members for c in m],
                            [WORD] * sum(len(m) for m in code.blocks.members))
        pos = 0
        for m, k in zip(code.blocks.members, code.blocks.ones, strict=True):
            assert sum(allbits[pos:pos + len(m)]) == k
            pos += len(m)


def test_block_code_same_bit_in_plain_and_html() -> None:
    docs = _docs(600)
    code = MessageCode(KEY, IDENT, docs, Scheme(V2, 1 / 6, 48, UNITS))
    (ckp, clp), (ckh, clh) = docs
    bp = dict(zip(ckp, code.bits("alice@example.com", ckp, clp), strict=True))
    bh = dict(zip(ckh, code.bits("alice@example.com", ckh, clh), strict=True))
    both = [c for c in bp if c in bh and clp[ckp.index(c)] == clh[ckh.index(c)]]
    assert len(both) > 300
    assert all(bp[c] == bh[c] for c in both)


def test_block_code_uniform_over_recipients() -> None:
    """Each word carrier is doubled for about one recipient in six, and two recipients' codes
    agree no more than chance says."""
    docs = _docs(300)
    code = MessageCode(KEY, IDENT, docs, Scheme(V2, 1 / 6, 48, UNITS))
    ck, cl = docs[0]
    words = [c for c, k in zip(ck, cl, strict=True) if k == WORD]
    n = 3000
    counts = [0] * len(words)
    for r in range(n):
        for i, b in enumerate(code.bits(f"user{r}@example.com", words, [WORD] * len(words))):
            counts[i] += b
    expect = n / 6
    sd = math.sqrt(n * (1 / 6) * (5 / 6))
    assert all(abs(c - expect) < 5 * sd for c in counts)
    assert abs(sum(counts) / (n * len(words)) - 1 / 6) < 0.01


def test_legacy_code_is_the_independent_codebook() -> None:
    """block 0 (messages logged before blocks): exactly the bits CodeBook always gave."""
    docs = _docs(400)
    code = MessageCode(KEY, IDENT, docs, Scheme(V2, 0.16, 0, UNITS))
    ck, cl = docs[0]
    keep = [i for i, k in enumerate(cl) if k]
    keys_ = [ck[i] for i in keep]
    universe = {c for d in docs for c, k in zip(*d, strict=True) if k}
    old = CodeBook(KEY, IDENT, universe).bits("alice@example.com", keys_,
                                               [bias(cl[i], 0.16) for i in keep])
    assert code.bits("alice@example.com", keys_, [cl[i] for i in keep]) == old
    assert code.blocks is None and code.in_block(keys_[0]) is None


# --- the bulk path (numpy) against a straightforward reference -------------------------------


def _reference_bits(key: bytes, identity: str,
                    docs: list[tuple[list[bytes], bytes]], rate: float, block: int,
                    cut: int, recipient: str, ckeys: list[bytes],
                    classes: list[int], version: int = V2) -> list[int]:
    """A recipient's bits written out carrier by carrier, as the relay computed them before the
    bulk path: v2, SHAKE-256 seeded with HMAC(HMAC(key, "relay/code/v2|" + identity),
    recipient), read at each key's rank in the message's sorted carrier keys (big-endian);
    v3, position i of the message's reading order (documents in order, each carrier key at its
    first occurrence) read from SHAKE-256(HMAC(key, "relay/code/v3|" + identity) || i // 136
    as 4 bytes big-endian || recipient) at i % 136 (little-endian). A sentence gap
    doubled below one half; a word gap doubled below the rate (no blocks) or when its value is
    at most the `ones`-th smallest of its block."""
    label = b"relay/code/v%d|" % version
    sub = hmac.new(key, label + identity.encode(), hashlib.sha256).digest()
    who = recipient.lower().encode("utf-8", "surrogateescape")
    seed = hmac.new(sub, who, hashlib.sha256).digest()
    carriers = [c for ck, cl in docs for c, k in zip(ck, cl, strict=True) if k]
    if version == V2:
        universe = sorted(set(carriers))
        n = len(universe)
        stream = struct.unpack(f">{n}Q", hashlib.shake_256(seed).digest(8 * n))
    else:
        universe = list(dict.fromkeys(carriers))
        stream = ()
        for i in range(0, len(universe), 136):
            stream += struct.unpack("<136Q", hashlib.shake_256(
                sub + struct.pack(">I", i // 136) + who).digest(8 * 136))
    rank = {c: i for i, c in enumerate(universe)}
    blocks = Blocks.of(docs, rate, block, cut) if block else None
    out = []
    for c, cls in zip(ckeys, classes, strict=True):
        if cls == SENTENCE:
            out.append(int(stream[rank[c]] < 2 ** 63))
        elif cls != WORD:
            out.append(0)
        elif blocks is None:
            out.append(int(stream[rank[c]] / 2.0 ** 64 < rate))
        else:
            b = blocks.index[c]
            k = blocks.ones[b]
            vals = sorted(stream[rank[m]] for m in blocks.members[b])
            out.append(int(k > 0 and stream[rank[c]] <= vals[k - 1]))
    return out


_SCHEMES = [(0, UNITS), (48, EVEN), (48, UNITS), (12, EVEN), (12, UNITS), (6, UNITS)]


@st.composite
def _messages(draw: st.DrawFn, rate: float) -> tuple[list[tuple[list[bytes], bytes]],
                                                     list[bytes], list[int]]:
    """1-3 documents over a shared vocabulary (renderings that share most gaps, as plain text
    and its HTML alternative do), random gap classes; and a carrier list read from them: a
    copy's (every carrier of every document, in order) or an excerpt's (a random selection,
    repeats allowed, classes as one document has them). At rate 0 no gap is a word carrier
    (fingerprint.prepare keeps only gaps of positive bias)."""
    vocab = draw(st.lists(st.integers(0, 2 ** 62), min_size=2, max_size=40, unique=True))
    base = draw(st.lists(st.sampled_from(vocab), min_size=2, max_size=400))
    docs = []
    for _ in range(draw(st.integers(1, 3))):
        words = list(base)
        if draw(st.booleans()):  # a rendering with a few words of its own
            at = draw(st.integers(0, len(words)))
            words[at:at] = draw(st.lists(st.sampled_from(vocab), max_size=20))
        ck = carrier_keys(words)
        kinds = [0, SENTENCE, WORD, WORD, WORD] if rate else [0, SENTENCE]
        classes = draw(st.lists(st.sampled_from(kinds),
                                min_size=len(ck), max_size=len(ck)))
        docs.append((ck, bytes(classes)))
    pairs = [(c, k) for ck, cl in docs for c, k in zip(ck, cl, strict=True) if k]
    if pairs and draw(st.booleans()):
        idx = draw(st.lists(st.integers(0, len(pairs) - 1), max_size=120))
        pairs = [pairs[i] for i in idx]
    if draw(st.booleans()):  # a gap that carries nothing in a list reads 0
        pairs = pairs + [(c, 0) for c in docs[0][0][:3]]
    return docs, [c for c, _ in pairs], [k for _, k in pairs]


@given(data=st.data(), key=st.binary(min_size=16, max_size=32),
       identity=st.text(min_size=1, max_size=64),
       recipients=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=4),
       scheme=st.sampled_from(_SCHEMES), version=st.sampled_from([V2, V3]),
       rate=st.sampled_from([1 / 6, 0.3, 0.16, 0.05, 0.5, 0.0]))
@settings(max_examples=400, deadline=None)
def test_bulk_bits_equal_the_reference(data: st.DataObject, key: bytes, identity: str,
                                       recipients: list[str], scheme: tuple[int, int],
                                       version: int, rate: float) -> None:
    """Every logged scheme (code v2: independent bits; EVEN blocks; UNITS blocks, at several
    block sizes and rates; and the same under code v3) gives exactly the reference's bits, for
    one recipient (a copy) and for many at once (the decoder's scoring, which under v3 computes
    only the chunks the list and its blocks read), and the decoder's disagreement counts."""
    docs, ckeys, classes = data.draw(_messages(rate))
    block, cut = scheme
    code = MessageCode(key, identity, docs, Scheme(version, rate, block, cut))
    want = [_reference_bits(key, identity, docs, rate, block, cut, r, ckeys, classes, version)
            for r in recipients]
    assert [code.bits(r, ckeys, classes) for r in recipients] == want
    assert [code.bits_row(r, ckeys, classes).tolist() for r in recipients] == want
    assert code.bits_many(recipients, code.reading(ckeys, classes)).tolist() == want
    observed = [(i * 7 + 3) % 5 % 2 for i in range(len(ckeys))]
    assert code.disagreements(recipients, ckeys, classes, observed) == [
        sum(a != b for a, b in zip(w, observed, strict=True)) for w in want]


def test_bulk_bits_on_real_renderings() -> None:
    """The plain text and its HTML alternative of GPL-3 prose, every scheme, 30 recipients:
    the copy's list of carriers and each document's own."""
    docs = _docs(1500)
    pairs = [(c, k) for ck, cl in docs for c, k in zip(ck, cl, strict=True) if k]
    ckeys, classes = [c for c, _ in pairs], [k for _, k in pairs]
    rcpts = [f"User{i}@Example.com" for i in range(30)]
    for (block, cut), version in itertools.product(_SCHEMES, (V2, V3)):
        code = MessageCode(KEY, IDENT, docs, Scheme(version, 1 / 6, block, cut))
        for r in rcpts:
            assert code.bits(r, ckeys, classes) == _reference_bits(
                KEY, IDENT, docs, 1 / 6, block, cut, r, ckeys, classes, version)
        ck, cl = docs[1]
        assert code.bits_many(rcpts, code.reading(ck, list(cl))).tolist() == [
            _reference_bits(KEY, IDENT, docs, 1 / 6, block, cut, r, ck, list(cl), version)
            for r in rcpts]


def test_v3_excerpt_reads_only_its_chunks() -> None:
    """Code v3: what an excerpt of a long message shows reads the chunks of its carriers and
    of their blocks' members, a few whatever the message's length, and gives the same bits
    as the whole stream."""
    docs = _docs(1500)
    code = MessageCode(KEY, IDENT, docs, Scheme(V3, 1 / 6, 48, UNITS))
    ck, cl = docs[0]
    pairs = [(c, k) for c, k in zip(ck, cl, strict=True) if k][400:460]
    reading = code.reading([c for c, _ in pairs], [k for _, k in pairs])
    total = -(-len({c for d, dc in docs for c, k in zip(d, dc, strict=True) if k}) // codes.CHUNK)
    assert reading.chunks is not None and 1 <= len(reading.chunks) <= 4 < total
    rcpts = [f"u{i}@example.com" for i in range(20)]
    full = code.reading(ck, list(cl))
    assert len(full.chunks) > len(reading.chunks)
    at = {c: j for j, c in enumerate(ck)}
    want = code.bits_many(rcpts, full)[:, [at[c] for c, _ in pairs]]
    assert (code.bits_many(rcpts, reading) == want).all()


def test_versions_give_different_codes() -> None:
    """The same message, key and recipient under v2 and v3: unrelated bits (a new version is
    a new code), the same carriers and blocks."""
    docs = _docs(600)
    v2 = MessageCode(KEY, IDENT, docs, Scheme(V2, 1 / 6, 48, UNITS))
    v3 = MessageCode(KEY, IDENT, docs, Scheme(V3, 1 / 6, 48, UNITS))
    assert v2.blocks == v3.blocks
    ck, cl = docs[0]
    a, b = v2.bits("alice@example.com", ck, list(cl)), v3.bits("alice@example.com", ck, list(cl))
    assert a != b


def test_scheme_is_one_checked_value() -> None:
    s = codes.SCHEME.with_rate(0.3)
    assert (s.version, s.word_rate, s.block, s.cut) == (V3, 0.3, codes.BLOCK, UNITS)
    assert Scheme(2, 0.16, 0, 0, 0).cut is EVEN and Scheme(2, 0.16, 0, 0, 0) == Scheme(
        V2, 0.16, 0, EVEN, 0)
    with pytest.raises(ValueError):
        Scheme(4, 1 / 6)
    with pytest.raises(ValueError):
        Scheme(V3, 1 / 6, 48, 7)


@given(values=st.lists(st.sampled_from([0, 1, 2, 3, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]),
                       min_size=8, max_size=8),
       ones=st.integers(0, 4))
def test_bulk_block_ties_and_edges(values: list[int], ones: int) -> None:
    """Stream values that tie (rare in 64 bits, but decided alike): a word carrier is doubled
    when its value is at most the block's `ones`-th smallest, as the loop did; sentence
    carriers split at exactly 2**63."""
    order = [bytes([i]) for i in range(8)]
    blocks = Blocks((tuple(order[:5]), tuple(order[5:])), (ones, min(ones, 3)))
    streams = np.array([values], dtype=np.uint64)
    reading = codes.Reading(
        size=10, sentence=np.array([8, 9]), sentence_rank=np.array([0, 7]),
        word=np.arange(8), word_rank=np.arange(8), blocked=True, word_below=0,
        word_block=np.array([0] * 5 + [1] * 3 if ones else [-1] * 5 + [-1] * 3),
        block_ranks=np.array([[0, 1, 2, 3, 4], [5, 6, 7, 0, 0]] if ones else [],
                             dtype=np.intp).reshape(2 if ones else 0, 5),
        block_pad=np.array([[False] * 5, [False] * 3 + [True] * 2] if ones else [],
                           dtype=bool).reshape(2 if ones else 0, 5),
        block_ones=np.array([ones, min(ones, 3)] if ones else [], dtype=np.intp))
    got = reading.bits(streams)[0].tolist()
    want = []
    for b, m in enumerate(blocks.members):
        k = blocks.ones[b]
        vals = sorted(values[order.index(c)] for c in m)
        want += [int(k > 0 and values[order.index(c)] <= vals[k - 1]) for c in m]
    want += [int(values[0] < 2 ** 63), int(values[7] < 2 ** 63)]
    assert got == want


@pytest.mark.parametrize("rate", [1 / 6, 0.16, 0.05, 0.3, 0.5, 1.0, 0.0, 1e-30, 1.5])
def test_word_threshold_is_the_float_comparison(rate: float) -> None:
    """Independent word coins compared `v / 2**64 < rate` in floats; the bulk path compares
    integers with `word_threshold`: the same answer at and around the boundary."""
    t = word_threshold(rate)
    assert 0 <= t <= 2 ** 64
    for v in {max(0, min(2 ** 64 - 1, t + d)) for d in range(-3, 3)} | {0, 2 ** 64 - 1}:
        assert (v < t) == (v / 2.0 ** 64 < rate), v
