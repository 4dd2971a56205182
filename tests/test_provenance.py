"""relay.provenance, directly: how a gap arrived, and whose copy a later all-staff message was
made from (a forward of one recipient's copy), read from the later message's whitespace as it
arrived. How this turns a verdict inconclusive is tested in tests/test_decoding.py."""

from __future__ import annotations

from pathlib import Path

import mimesamples
import pytest

from relay.carriers import DOUBLED, OTHER, SINGLE
from relay.decoding import Derived
from relay.fingerprint import prepare
from relay.keys import Keyring
from relay.provenance import arrived_gaps, copy_made_from
from relay.scheme import SCHEME
from relay.store import ACCEPTED, Store

KEY = bytes(range(32))
RING = Keyring((("k1", KEY),))
STAFF = [f"staff{i:03d}@example.com" for i in range(200)]


@pytest.mark.parametrize("arrived,gaps", [
    (b"", []),
    (bytes([SINGLE, DOUBLED, OTHER]), [0, 1, None]),
    (bytes([OTHER, OTHER]), [None, None]),
])
def test_arrived_gaps(arrived: bytes, gaps: list[int | None]) -> None:
    assert arrived_gaps(arrived) == gaps


def log(store: Store, raw: bytes, sender: str, key_id: str = "k1") -> str:
    p = prepare(raw, sender, key_id, KEY, SCHEME.with_rate(1 / 6))
    store.record_message(**p.log_entry(sender))
    store.add_copies(p.identity, STAFF)
    store.set_copy_states(p.identity, [(r, ACCEPTED, "250 ok") for r in STAFF])
    return p.identity


def test_a_forward_is_traced_to_the_copy_it_was_made_from(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    first_raw = mimesamples.build(mimesamples.prose(8))
    first = prepare(first_raw, "boss@example.com", "k1", KEY, SCHEME.with_rate(1 / 6))
    earlier = log(store, first_raw, "boss@example.com")
    x = STAFF[17]
    # sent by somebody else than x (an assistant, a list): found from the whitespace alone
    later = log(store, mimesamples.forward_of(first.copy_for(x)), "assistant@example.com")
    assert copy_made_from(store, later, earlier, RING, Derived()) == (x, True)
    # the same text sent again from the original, not from any copy: nobody, though its
    # arrival was logged
    other = log(store, mimesamples.build(mimesamples.prose(3)).replace(
        b"Quarterly plans", b"Other plans"), "boss@example.com")
    assert copy_made_from(store, other, earlier, RING, Derived()) == (None, True)


def test_messages_under_different_keys_are_not_compared(tmp_path: Path) -> None:
    store = Store(tmp_path / "relay.db")
    first_raw = mimesamples.build(mimesamples.prose(8))
    first = prepare(first_raw, "boss@example.com", "k1", KEY, SCHEME.with_rate(1 / 6))
    earlier = log(store, first_raw, "boss@example.com")
    later = log(store, mimesamples.forward_of(first.copy_for(STAFF[3])), "x@example.com",
                key_id="k2")
    assert copy_made_from(store, later, earlier, RING, Derived()) == (None, False)
