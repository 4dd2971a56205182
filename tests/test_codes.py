"""Per-recipient bits: the v2 keyed stream (read carrier by carrier through tests/codebits.py),
word carriers in blocks doubled exactly, the bulk path against a reference, code versions."""

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

import codebits
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import codes
from relay.carriers import SENTENCE, WORD, analyse_html, analyse_plain
from relay.codes import CodeBook, MessageCode, word_threshold
from relay.hashes import carrier_keys, word_hashes
from relay.scheme import CHUNK, EVEN, UNITS, V2, V3, Scheme, bias
from relay.wordblocks import Blocks

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


# --- bits ------------------------------------------------------------------------------------


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
    bp = codebits.bits(book, "alice@example.com", [ckp[i] for i in idx], [0.3] * len(idx))
    bh = codebits.bits(book, "alice@example.com", [ckh[i] for i in idx], [0.3] * len(idx))
    assert bp == bh and 0 < sum(bp) < len(bp)


def test_bits_deterministic(layout_ckeys: tuple[list[bytes], list[float]]) -> None:
    ck, bs = layout_ckeys
    a = codebits.bits(CodeBook(KEY, IDENT), "alice@example.com", ck, bs)
    assert a == codebits.bits(CodeBook(KEY, IDENT), "alice@example.com", ck, bs)
    # recipient addresses compare case-insensitively
    assert a == codebits.bits(CodeBook(KEY, IDENT), "Alice@Example.COM", ck, bs)
    assert set(a) == {0, 1}


def _diff(a: list[int], b: list[int]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def test_bits_differ_by_key_identity_recipient(
        layout_ckeys: tuple[list[bytes], list[float]]) -> None:
    ck, _ = layout_ckeys
    half = [0.5] * len(ck)
    n = len(ck)
    assert n > 300
    a = codebits.bits(CodeBook(KEY, IDENT), "alice@example.com", ck, half)
    others = [
        codebits.bits(CodeBook(KEY2, IDENT), "alice@example.com", ck, half),
        codebits.bits(CodeBook(KEY, "b" * 64), "alice@example.com", ck, half),
        codebits.bits(CodeBook(KEY, IDENT), "bob@example.com", ck, half),
        codebits.bits(CodeBook(KEY, IDENT), "alice@example.org", ck, half),
    ]
    for o in others:
        # independent fair coins: about half differ
        assert abs(_diff(a, o) - n / 2) < 5 * math.sqrt(n / 4)


def test_bits_follow_bias_threshold(layout_ckeys: tuple[list[bytes], list[float]]) -> None:
    ck, _ = layout_ckeys
    book = CodeBook(KEY, IDENT)
    u = codebits.uniforms(book, "carol@example.com", ck)
    assert all(0.0 <= x < 1.0 for x in u)
    assert codebits.bits(book, "carol@example.com", ck, [0.0] * len(ck)) == [0] * len(ck)
    assert codebits.bits(book, "carol@example.com", ck, [1.0] * len(ck)) == [1] * len(ck)
    # monotone in bias: a 1 at bias p stays a 1 at any larger bias
    lo = codebits.bits(book, "carol@example.com", ck, [0.1] * len(ck))
    hi = codebits.bits(book, "carol@example.com", ck, [0.3] * len(ck))
    assert all(h >= g for g, h in zip(lo, hi, strict=True))
    with pytest.raises(ValueError):
        codebits.bits(book, "carol@example.com", ck, [0.5])


@pytest.mark.parametrize("p", [0.5, 0.16, 0.05])
def test_empirical_bias(layout_ckeys: tuple[list[bytes], list[float]], p: float) -> None:
    ck, _ = layout_ckeys
    ck = ck[:40]
    book = CodeBook(KEY, IDENT)
    n_rcpt = 400
    ones = 0
    per_carrier = [0] * len(ck)
    for r in range(n_rcpt):
        bits = codebits.bits(book, f"user{r}@example.com", ck, [p] * len(ck))
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
    codes = {tuple(codebits.bits(book, f"u{r}@x.org", ck, [0.5] * 64)) for r in range(300)}
    assert len(codes) == 300
    # pairwise agreement of two codes is ~ 1/2 per bit
    a = codebits.bits(book, "u1@x.org", ck, [0.5] * 64)
    agree = [64 - _diff(a, codebits.bits(book, f"v{r}@x.org", ck, [0.5] * 64)) for r in range(200)]
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
    old = codebits.bits(CodeBook(KEY, IDENT, universe), "alice@example.com", keys_,
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
    total = -(-len({c for d, dc in docs for c, k in zip(d, dc, strict=True) if k}) // CHUNK)
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
