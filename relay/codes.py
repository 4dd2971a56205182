"""Keyed derivations: message identity, word hashes, carrier keys and per-recipient code bits.

Everything secret comes from the signature key; nothing here is derivable from public data.
Per carrier, a recipient's bit is 1 (doubled gap) with probability `bias` (0.5 for sentence gaps,
the profile's word rate for ordinary word gaps), drawn from a keyed PRF of
(message identity, recipient, carrier key). The carrier key depends on the words around the gap,
so the text/plain and text/html renderings of the same sentence carry the same bit.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from .carriers import SENTENCE, WORD

TWO64 = float(1 << 64)


def _sub(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


def message_identity(raw: bytes, sender: str) -> str:
    """What makes a retry 'the same message': the envelope sender and every byte of the
    message. Not keyed, so it is stable across key rotation; not secret (stored, never sent)."""
    h = hashlib.sha256()
    h.update(sender.encode("utf-8", "surrogateescape").lower())
    h.update(b"\0")
    h.update(raw)
    return h.hexdigest()


def word_hashes(key: bytes, words: Iterable[str]) -> list[int]:
    """Keyed 63-bit hashes of normalised words (stored instead of the plaintext)."""
    wk = _sub(key, b"relay/words/v1")[:32]
    out = []
    for w in words:
        d = hashlib.blake2b(w.encode("utf-8"), key=wk, digest_size=8).digest()
        out.append(struct.unpack(">q", d)[0] >> 1 & 0x3FFFFFFFFFFFFFFF)
    return out


def pack_hashes(hashes: Sequence[int]) -> bytes:
    return struct.pack(f">{len(hashes)}q", *hashes)


def unpack_hashes(blob: bytes) -> list[int]:
    return list(struct.unpack(f">{len(blob) // 8}q", blob))


def shingles(hashes: Sequence[int], k: int = 3) -> list[int]:
    """Hashes of k consecutive word hashes: the index that finds a message from an excerpt."""
    out = []
    for i in range(len(hashes) - k + 1):
        d = hashlib.blake2b(struct.pack(f">{k}q", *hashes[i:i + k]), digest_size=8).digest()
        out.append(struct.unpack(">q", d)[0] >> 1)
    return out


def carrier_keys(hashes: Sequence[int]) -> list[bytes]:
    """A key for every gap g (between word g and g+1): the two words on each side plus how
    often that context occurred before, so repeated phrases still get distinct keys."""
    seen: dict[bytes, int] = {}
    n = len(hashes)
    out = []
    for g in range(n - 1):
        ctx = tuple(hashes[i] if 0 <= i < n else -1 for i in range(g - 1, g + 3))
        c = struct.pack(">4q", *ctx)
        occ = seen.get(c, 0)
        seen[c] = occ + 1
        out.append(c + struct.pack(">I", occ))
    return out


def bias(cls: int, word_rate: float) -> float:
    if cls == SENTENCE:
        return 0.5
    if cls == WORD:
        return word_rate
    return 0.0


class CodeBook:
    """Bits of one message for any recipient.

    A recipient's uniforms come from one SHAKE-256 stream keyed by (key, identity, recipient),
    read at the rank of each carrier key among all of the message's carrier keys (`universe`,
    the same set at signing and at decoding). One hash call per copy, whatever the length.
    Without a universe, the carrier keys passed to each call are the universe.
    """

    def __init__(self, key: bytes, identity: str, universe: Iterable[bytes] | None = None) -> None:
        self._key = _sub(key, b"relay/code/v2|" + identity.encode())
        self._rank: dict[bytes, int] | None = None
        if universe is not None:
            self._rank = {c: i for i, c in enumerate(sorted(set(universe)))}

    def seed(self, recipient: str) -> bytes:
        return hmac.new(self._key, recipient.lower().encode("utf-8", "surrogateescape"),
                        hashlib.sha256).digest()

    def stream(self, recipient: str, rank: dict[bytes, int]) -> tuple[int, ...]:
        """The recipient's 64-bit values, one per carrier key of `rank` (key -> index)."""
        n = len(rank)
        return struct.unpack(f">{n}Q", hashlib.shake_256(self.seed(recipient)).digest(8 * n))

    def ranks(self, ckeys: Sequence[bytes]) -> dict[bytes, int]:
        """Where each carrier key reads the stream: its rank in the universe (without one,
        among `ckeys`)."""
        if self._rank is not None:
            return self._rank
        return {c: i for i, c in enumerate(sorted(set(ckeys)))}

    def uniforms(self, recipient: str, ckeys: Sequence[bytes]) -> list[float]:
        rank = self.ranks(ckeys)
        stream = self.stream(recipient, rank)
        return [stream[rank[c]] / TWO64 for c in ckeys]

    def bits(self, recipient: str, ckeys: Sequence[bytes], biases: Sequence[float]) -> list[int]:
        if len(ckeys) != len(biases):
            raise ValueError("one bias per carrier key")
        return [int(u < p) for u, p in zip(self.uniforms(recipient, ckeys), biases, strict=True)]


# --- word carriers in blocks -------------------------------------------------------------------

BLOCK = 48  # word carriers per block (0 in the log: independent bits, the code before blocks)
# How a message's word carriers are cut into blocks (stored with each message, so a message is
# always decoded and re-signed the way it was first signed):
EVEN = 0  # equal blocks; each doubles floor(size * rate), which wastes up to one double per block
UNITS = 1  # blocks made of whole budget units (6 gaps holding 1 double at rate 1/6), cut
#            within the groups of word_runs: each group of n gaps doubles floor(n * rate) in
#            all, and no block, and so no rendering, more than its rate
CUT = UNITS


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


class MessageCode:
    """Every recipient's bits for one logged message.

    Sentence carriers are fair keyed coins. Word carriers are, with `block` > 0, exactly
    `ones` of each block (the ones whose keyed uniforms are smallest in the block; blocks cut
    as `cut` says), and with `block` == 0 (messages logged before blocks existed) independent
    coins of probability `word_rate`. `docs` are the message's documents as (carrier keys of
    every gap, gap classes).
    """

    def __init__(self, key: bytes, identity: str,
                 docs: Sequence[tuple[Sequence[bytes], Sequence[int]]],
                 word_rate: float, block: int, cut: int) -> None:
        universe = {c for ck, cl in docs for c, k in zip(ck, cl, strict=True) if k}
        self.book = CodeBook(key, identity, universe)
        self.word_rate = word_rate
        self.blocks = Blocks.of(docs, word_rate, block, cut) if block else None
        self._rank = self.book.ranks(())
        # where each block's members read the stream: fixed per message, not per copy
        self._block_ranks = tuple(tuple(self._rank[m] for m in members)
                                  for members in self.blocks.members) if self.blocks else ()

    def in_block(self, ckey: bytes) -> int | None:
        return None if self.blocks is None else self.blocks.index.get(ckey)

    def bits(self, recipient: str, ckeys: Sequence[bytes], classes: Sequence[int]) -> list[int]:
        if len(ckeys) != len(classes):
            raise ValueError("one class per carrier key")
        rank = self._rank
        stream = self.book.stream(recipient, rank)
        blocks = self.blocks
        top: dict[int, int] = {}  # block -> largest stream value that is doubled
        out = []
        for c, cls in zip(ckeys, classes, strict=True):
            if cls not in (SENTENCE, WORD):
                out.append(0)
                continue
            v = stream[rank[c]]
            if cls == SENTENCE:
                out.append(int(v < TWO64 * 0.5))
            elif blocks is None:
                out.append(int(v / TWO64 < self.word_rate))
            else:
                b = blocks.index[c]
                if b not in top:
                    k = blocks.ones[b]
                    vals = sorted(stream[i] for i in self._block_ranks[b])
                    top[b] = vals[k - 1] if k else -1
                out.append(int(v <= top[b]))
        return out
