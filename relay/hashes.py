"""Hashes of a message and its words: the message identity, keyed word hashes, shingles (the
index that finds a message from an excerpt) and carrier keys (what a gap is called, from the
words around it, so that the text/plain and text/html renderings of a sentence name the same
gap alike). `subkey` derives the per-purpose keys from the signature key.

Everything secret comes from the signature key; nothing keyed here is derivable from public
data.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence


def subkey(key: bytes, label: bytes) -> bytes:
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
    wk = subkey(key, b"relay/words/v1")[:32]
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
