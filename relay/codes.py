"""Per-recipient code bits: which carriers a recipient's copy doubles, for one copy or for many
recipients at once (the decoder's scoring).

Per carrier, a recipient's bit is 1 (doubled gap) with probability `scheme.bias` (0.5 for
sentence gaps, the profile's word rate for ordinary word gaps; word carriers in blocks are
exactly `ones` of each block, relay.wordblocks), drawn from a keyed stream of (message identity,
recipient) read at the carrier key's place (relay.hashes.carrier_keys). The carrier key depends
on the words around the gap, so the text/plain and text/html renderings of the same sentence
carry the same bit. How the stream is drawn is the code version (relay.scheme): v2, one stream
per recipient (`CodeBook`); v3, one stream per chunk of the message's reading order.
`MessageCode` computes bits in bulk through a `Reading` of a list of carriers.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .carriers import SENTENCE, WORD
from .hashes import subkey
from .scheme import CHUNK, V2, V3, Scheme
from .wordblocks import Blocks

TWO64 = float(1 << 64)


class CodeBook:
    """Code v2's keyed values of one message for any recipient (MessageCode makes the bits).

    A recipient's values come from one SHAKE-256 stream keyed by (key, identity, recipient),
    read at the rank of each carrier key among all of the message's carrier keys (`universe`,
    the same set at signing and at decoding). One hash call per copy, whatever the length.
    Without a universe, the carrier keys passed to each call are the universe.
    """

    def __init__(self, key: bytes, identity: str, universe: Iterable[bytes] | None = None) -> None:
        self._key = subkey(key, b"relay/code/v2|" + identity.encode())
        self._rank: dict[bytes, int] | None = None
        if universe is not None:
            self._rank = {c: i for i, c in enumerate(sorted(set(universe)))}

    def seed(self, recipient: str) -> bytes:
        return hmac.digest(self._key, recipient.lower().encode("utf-8", "surrogateescape"),
                           "sha256")

    def stream_bytes(self, recipient: str, n: int) -> bytes:
        """The recipient's first n stream values as bytes (big-endian 64-bit each)."""
        return hashlib.shake_256(self.seed(recipient)).digest(8 * n)

    def ranks(self, ckeys: Sequence[bytes]) -> dict[bytes, int]:
        """Where each carrier key reads the stream: its rank in the universe (without one,
        among `ckeys`)."""
        if self._rank is not None:
            return self._rank
        return {c: i for i, c in enumerate(sorted(set(ckeys)))}


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
            sub = subkey(key, b"relay/code/v3|" + identity.encode())
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
