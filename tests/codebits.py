"""Test helper: code v2's bits one carrier at a time, straight from `codes.CodeBook`'s stream.

The relay makes bits only through `codes.MessageCode` (in bulk); these are the per-carrier bits
the v2 code is defined by, for tests that check properties of the keyed stream itself (bias,
independence, key and recipient dependence) with any bias per carrier, and for the statistics'
simulated null. A recipient's value for carrier key c is the big-endian 64-bit value at c's
rank in the stream (`CodeBook.ranks`), read as a uniform in [0, 1); the bit is 1 below the bias.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from relay.codes import TWO64, CodeBook


def uniforms(book: CodeBook, recipient: str, ckeys: Sequence[bytes]) -> list[float]:
    rank = book.ranks(ckeys)
    n = len(rank)
    stream = struct.unpack(f">{n}Q", book.stream_bytes(recipient, n))
    return [stream[rank[c]] / TWO64 for c in ckeys]


def bits(book: CodeBook, recipient: str, ckeys: Sequence[bytes],
         biases: Sequence[float]) -> list[int]:
    if len(ckeys) != len(biases):
        raise ValueError("one bias per carrier key")
    return [int(u < p) for u, p in zip(uniforms(book, recipient, ckeys), biases, strict=True)]
