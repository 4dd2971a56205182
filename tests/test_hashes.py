"""Hashes of a message and its words: identity, keyed word hashes, shingles, carrier keys."""

from __future__ import annotations

import re

from relay.hashes import (
    carrier_keys,
    message_identity,
    pack_hashes,
    shingles,
    unpack_hashes,
    word_hashes,
)

KEY = bytes(range(32))
KEY2 = bytes(range(1, 33))


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
