"""Keyed derivations: message identity, word hashes, carrier keys and per-recipient code bits.

Everything secret comes from the signature key; nothing here is derivable from public data.
Per carrier, a recipient's bit is 1 (doubled gap) with probability `bias` (0.5 for sentence gaps,
the profile's word rate for ordinary word gaps), drawn from a keyed PRF of
(message identity, recipient, carrier key). The carrier key depends on the words around the gap,
so the text/plain and text/html renderings of the same sentence carry the same bit.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from .carriers import RULES, SENTENCE, WORD

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
        return hmac.digest(self._key, recipient.lower().encode("utf-8", "surrogateescape"),
                           "sha256")

    def stream(self, recipient: str, rank: dict[bytes, int]) -> tuple[int, ...]:
        """The recipient's 64-bit values, one per carrier key of `rank` (key -> index)."""
        n = len(rank)
        return struct.unpack(f">{n}Q", self.stream_bytes(recipient, n))

    def stream_bytes(self, recipient: str, n: int) -> bytes:
        """The recipient's first n stream values as bytes (big-endian 64-bit each)."""
        return hashlib.shake_256(self.seed(recipient)).digest(8 * n)

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


class Cut(enum.IntEnum):
    """How a message's word carriers are cut into blocks (stored with each message, so a
    message is always decoded and re-signed the way it was first signed)."""

    EVEN = 0  # equal blocks; each doubles floor(size * rate): wastes up to one double a block
    UNITS = 1  # blocks made of whole budget units (6 gaps holding 1 double at rate 1/6), cut
    #            within the groups of word_runs: each group of n gaps doubles floor(n * rate)
    #            in all, and no block, and so no rendering, more than its rate


EVEN, UNITS = Cut.EVEN, Cut.UNITS
CUT = UNITS

# Code versions: how a recipient's 64-bit values are drawn (stored with each message).
V2 = 2  # one SHAKE-256 stream per recipient, read at each carrier key's rank among all the
#         message's carrier keys: scoring an excerpt reads every recipient's whole stream
V3 = 3  # one SHAKE-256 stream per CHUNK consecutive positions of the message's reading order:
#         scoring an excerpt reads only the chunks holding its carriers and their blocks
VERSIONS = (V2, V3)
CHUNK = 136  # v3: carrier positions per keyed stream: 136 values of 8 bytes fill exactly 8
#              SHAKE-256 output blocks (136 bytes each), no squeezed byte wasted; measured
#              against 64, 128 and 256 (README "Speed", code v3)


@dataclass(frozen=True)
class Scheme:
    """Everything a message is signed with but the key: logged with the message, so that its
    retries re-sign it and a decode reads it the way it was first signed."""

    version: int  # V2 or V3
    word_rate: float  # share of word gaps doubled (config.PROFILES)
    block: int = BLOCK  # word carriers per block; 0: independent bits (before blocks)
    cut: Cut = CUT  # how blocks are cut
    rules: int = RULES  # carriers.RULES the carriers were found with (0: before them)

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"unknown code version {self.version}")
        object.__setattr__(self, "cut", Cut(self.cut))  # ValueError for an unknown cut

    def with_rate(self, word_rate: float) -> Scheme:
        return replace(self, word_rate=word_rate)


SCHEME = Scheme(V3, 1 / 6, BLOCK, UNITS, RULES)  # new mail (word rate: the config's profile)


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


def word_threshold(rate: float) -> int:
    """The integer t with `v < t` exactly when `v / TWO64 < rate`, for every 64-bit v: the
    independent word coins of messages logged before blocks compared as floats, and the bulk
    path compares integers (bisection on Python's own int -> float division, so the two agree
    to the last value)."""
    lo, hi = 0, 1 << 64  # v / TWO64 < rate holds for v < lo, fails for v >= hi
    while lo < hi:
        mid = (lo + hi) // 2
        if mid / TWO64 < rate:
            lo = mid + 1
        else:
            hi = mid
    return lo


HALF = 1 << 63  # a sentence carrier is doubled when its stream value is below this
_MAX64 = np.uint64((1 << 64) - 1)
_CHUNK = 1 << 22  # stream values held at once when reading many recipients (32 MiB)


@dataclass(frozen=True)
class Reading:
    """How one list of carriers (a copy's, or what an excerpt shows) reads a recipient's stream,
    worked out once per message and list: where each carrier's value sits in the stream and
    which rule makes its bit. Bits for any number of recipients then take array operations
    only, no Python loop over carriers."""

    size: int  # carriers in the list
    sentence: np.ndarray  # positions of sentence carriers
    sentence_rank: np.ndarray  # ... and their ranks in the stream
    word: np.ndarray  # positions of word carriers
    word_rank: np.ndarray
    blocked: bool  # word carriers in blocks (else independent coins)
    word_below: int  # independent word coins: doubled when the value is below this
    word_block: np.ndarray  # with blocks: each word position's block, among `block_ranks`' rows
    block_ranks: np.ndarray  # (blocks read, widest) ranks of the members of each block read
    block_pad: np.ndarray  # True where a row of block_ranks is padding
    block_ones: np.ndarray  # doubles per block read (>= 1: a block doubling none reads no row)
    key: tuple[Sequence[bytes], Sequence[int]] = field(repr=False, default=([], []))  # made for
    # v3: the chunks (CHUNK positions each) the ranks above index, in this order; None (v2):
    # the ranks index the recipient's whole stream
    chunks: np.ndarray | None = None

    @property
    def width(self) -> int:
        """Stream values one recipient's row holds for this reading."""
        return -1 if self.chunks is None else len(self.chunks) * CHUNK

    def bits(self, streams: np.ndarray) -> np.ndarray:
        """Bits (uint8, one row per recipient) from stream values (uint64, one row per
        recipient, one column per rank): sentence carriers below one half; word carriers
        below the coin threshold, or, in blocks, at most the block's `ones`-th smallest
        member value (ties doubled alike, as the loop over carriers did). Every carrier is
        one gather of its value and one of its threshold, compared at once."""
        rank, which, can, padded, kth = self._plan
        n = streams.shape[0]
        if not streams.shape[1]:  # no carrier at all: whatever the list holds reads 0
            streams = np.zeros((n, 1), dtype=np.uint64)
        thresholds = np.empty((n, 2 + len(kth)), dtype=np.uint64)
        thresholds[:, 0] = HALF - 1
        thresholds[:, 1] = min(self.word_below, 1 << 64) - 1 if self.word_below else 0
        if len(kth):
            ext = np.concatenate((streams, np.full((n, 1), _MAX64)), axis=1)
            members = np.take(ext, padded, axis=1)  # padding reads the last column, MAX
            members.sort(axis=2)
            thresholds[:, 2:] = members.reshape(n, -1).take(kth, axis=1)
        out = np.take(streams, rank, axis=1) <= np.take(thresholds, which, axis=1)
        out &= can
        return out.view(np.uint8)

    @property
    def _plan(self) -> tuple[np.ndarray, ...]:
        """Per carrier: where its value sits in a row of stream values, which threshold it is
        compared with (0: one half, 1: the word coin, 2 + i: block row i's `ones`-th smallest)
        and whether it can be doubled at all; the block rows' ranks with padding at -1 (the
        MAX column appended), and each row's threshold in the flattened sorted rows. Worked out
        on first use, once per list of carriers."""
        got = self.__dict__.get("_plan_cache")
        if got is None:
            rank = np.zeros(self.size, dtype=np.intp)
            which = np.zeros(self.size, dtype=np.intp)
            can = np.zeros(self.size, dtype=bool)
            rank[self.sentence] = self.sentence_rank
            can[self.sentence] = True
            rank[self.word] = self.word_rank
            if not self.blocked:
                which[self.word] = 1
                can[self.word] = self.word_below > 0
            else:
                live = self.word_block >= 0  # word carriers of a block doubling none stay 0
                which[self.word[live]] = 2 + self.word_block[live]
                can[self.word[live]] = True
            padded = np.where(self.block_pad, -1, self.block_ranks)
            widest = self.block_ranks.shape[1] if self.block_ranks.ndim == 2 else 0
            kth = np.arange(len(self.block_ones)) * widest + self.block_ones - 1
            got = (rank, which, can, padded, kth.astype(np.intp))
            self.__dict__["_plan_cache"] = got
        return got

def _same(items: Sequence, saved: Sequence) -> bool:
    return items is saved or (items if isinstance(items, list) else list(items)) == list(saved)


class MessageCode:
    """Every recipient's bits for one logged message, signed with `scheme`.

    Sentence carriers are fair keyed coins. Word carriers are, with `block` > 0, exactly
    `ones` of each block (the ones whose keyed uniforms are smallest in the block; blocks cut
    as `cut` says), and with `block` == 0 (messages logged before blocks existed) independent
    coins of probability `word_rate`. `docs` are the message's documents as (carrier keys of
    every gap, gap classes).

    Where a recipient's values come from depends on the code version: V2 reads one stream per
    recipient at each carrier key's rank among all of them (CodeBook); V3 gives each carrier
    key a position (the message's reading order: documents in part order, each key at its
    first occurrence; the plain and HTML renderings of a sentence share keys and so positions)
    and reads position i from the keyed stream of chunk i // CHUNK, so scoring an excerpt
    computes only the chunks its carriers and their blocks' members fall in. Chunk c of
    recipient r: SHAKE-256(HMAC(key, "relay/code/v3|" + identity) || c as 4 bytes big-endian
    || r lower-cased, UTF-8), read as CHUNK little-endian 64-bit values: one hash call per
    chunk and recipient, no per-recipient seed.

    Bits are computed in bulk (numpy) through a `Reading` of the carrier list, made once per
    list: `bits_row` keeps the last one (a copy's carriers are the same for every recipient),
    `bits_many` and `disagreements` read many recipients at once (the decoder's scoring).
    """

    def __init__(self, key: bytes, identity: str,
                 docs: Sequence[tuple[Sequence[bytes], Sequence[int]]], scheme: Scheme) -> None:
        self.scheme = scheme
        self.word_rate = scheme.word_rate
        carriers = (c for ck, cl in docs for c, k in zip(ck, cl, strict=True) if k)
        self.book: CodeBook | None = None
        if scheme.version == V2:
            self.book = CodeBook(key, identity, set(carriers))
            self._rank = self.book.ranks(())
        else:
            sub = _sub(key, b"relay/code/v3|" + identity.encode())
            self._rank = {c: i for i, c in enumerate(dict.fromkeys(carriers))}
            # chunk i's prefix: the message's secret and i; the recipient follows (fixed-length
            # prefix, so the input is unambiguous)
            self._tags = [sub + struct.pack(">I", i) for i in range(-(-len(self._rank) // CHUNK))]
        self.blocks = (Blocks.of(docs, scheme.word_rate, scheme.block, scheme.cut)
                       if scheme.block else None)
        # where each block's members read the stream: fixed per message, not per copy
        self._block_ranks = tuple(tuple(self._rank[m] for m in members)
                                  for members in self.blocks.members) if self.blocks else ()
        self._last: Reading | None = None

    def in_block(self, ckey: bytes) -> int | None:
        return None if self.blocks is None else self.blocks.index.get(ckey)

    def reading(self, ckeys: Sequence[bytes], classes: Sequence[int]) -> Reading:
        """How `ckeys` (with their gap classes) read a recipient's stream. Raises KeyError for
        a carrier key outside the message, as reading it one by one did."""
        if len(ckeys) != len(classes):
            raise ValueError("one class per carrier key")
        rank, blocks = self._rank, self.blocks
        sent: list[int] = []
        sent_rank: list[int] = []
        word: list[int] = []
        word_rank: list[int] = []
        word_block: list[int] = []
        for j, (c, cls) in enumerate(zip(ckeys, classes, strict=True)):
            if cls == SENTENCE:
                sent.append(j)
                sent_rank.append(rank[c])
            elif cls == WORD:
                word.append(j)
                word_rank.append(rank[c])
                if blocks is not None:
                    word_block.append(blocks.index[c])
        # the blocks read, each once, in a dense numbering; a block doubling none reads no row
        used: dict[int, int] = {}
        local = []
        for b in word_block:
            if blocks is not None and blocks.ones[b] == 0:
                local.append(-1)
                continue
            local.append(used.setdefault(b, len(used)))
        widest = max((len(self._block_ranks[b]) for b in used), default=0)
        ranks = np.zeros((len(used), widest), dtype=np.intp)
        pad = np.ones((len(used), widest), dtype=bool)
        for b, i in used.items():
            r = self._block_ranks[b]
            ranks[i, :len(r)] = r
            pad[i, :len(r)] = False
        ones = np.array([blocks.ones[b] for b in used] if blocks is not None else [],
                        dtype=np.intp)
        ix = np.intp
        s_rank, w_rank = np.array(sent_rank, dtype=ix), np.array(word_rank, dtype=ix)
        chunks = None
        if self.scheme.version == V3:  # only the chunks read, renumbered densely
            chunks = np.unique(np.concatenate([s_rank, w_rank, ranks[~pad]]) // CHUNK)

            def dense(pos: np.ndarray) -> np.ndarray:
                return np.searchsorted(chunks, pos // CHUNK) * CHUNK + pos % CHUNK

            s_rank, w_rank = dense(s_rank), dense(w_rank)
            ranks = np.where(pad, 0, dense(ranks))
        return Reading(len(ckeys), np.array(sent, dtype=ix), s_rank,
                       np.array(word, dtype=ix), w_rank,
                       blocks is not None, word_threshold(self.word_rate),
                       np.array(local, dtype=ix), ranks, pad, ones,
                       (ckeys if isinstance(ckeys, list) else list(ckeys),
                        classes if isinstance(classes, list) else list(classes)), chunks)

    def _reading(self, ckeys: Sequence[bytes], classes: Sequence[int]) -> Reading:
        """The last Reading made, when it was made for these very carriers (a copy's are the
        same for every recipient), else a new one."""
        last = self._last
        if last is not None and last.size == len(ckeys) and _same(ckeys, last.key[0]) \
                and _same(classes, last.key[1]):
            return last
        made = self.reading(ckeys, classes)  # returned as made, even if another thread
        self._last = made  # replaces the saved one meanwhile
        return made

    def streams(self, recipients: Sequence[str], chunks: np.ndarray | None = None) -> np.ndarray:
        """Stream values (uint64), one row per recipient: v2, one column per rank; v3, CHUNK
        columns per chunk of `chunks` (all of them when None), in that order."""
        if self.book is not None:
            n = len(self._rank)
            raw = b"".join([self.book.stream_bytes(r, n) for r in recipients])
            return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(recipients), n)
        tags = self._tags if chunks is None else [self._tags[c] for c in chunks.tolist()]
        size, shake = 8 * CHUNK, hashlib.shake_256
        raw = b"".join([shake(t + r).digest(size)
                        for r in [r.lower().encode("utf-8", "surrogateescape")
                                  for r in recipients]
                        for t in tags])
        return np.frombuffer(raw, dtype="<u8").reshape(len(recipients), len(tags) * CHUNK)

    def bits(self, recipient: str, ckeys: Sequence[bytes], classes: Sequence[int]) -> list[int]:
        return self.bits_row(recipient, ckeys, classes).tolist()

    def bits_row(self, recipient: str, ckeys: Sequence[bytes],
                 classes: Sequence[int]) -> np.ndarray:
        """One copy's bits (uint8) for the carriers `ckeys`: the Reading of the list is made
        once (the last one is kept, and found again at once when `ckeys` is the same list
        object), then per copy one seed, its streams and array operations."""
        reading = self._reading(ckeys, classes)
        return reading.bits(self.streams([recipient], reading.chunks))[0]

    def _step(self, reading: Reading) -> int:
        width = len(self._rank) if reading.chunks is None else reading.width
        return max(1, _CHUNK // max(1, width))

    def bits_many(self, recipients: Sequence[str], reading: Reading) -> np.ndarray:
        """Bits of many recipients (uint8, a row each), read in chunks of bounded memory."""
        out = np.zeros((len(recipients), reading.size), dtype=np.uint8)
        step = self._step(reading)
        for i in range(0, len(recipients), step):
            out[i:i + step] = reading.bits(self.streams(recipients[i:i + step], reading.chunks))
        return out

    def disagreements(self, recipients: Sequence[str], ckeys: Sequence[bytes],
                      classes: Sequence[int], observed: Sequence[int]) -> list[int]:
        """Per recipient, on how many of `ckeys` its bit differs from `observed`."""
        if len(observed) != len(ckeys):
            raise ValueError("one observed bit per carrier key")
        reading = self.reading(ckeys, classes)
        y = np.asarray(observed, dtype=np.uint8)
        out: list[int] = []
        step = self._step(reading)
        for i in range(0, len(recipients), step):
            b = reading.bits(self.streams(recipients[i:i + step], reading.chunks))
            out.extend((b != y).sum(axis=1).tolist())
        return out
