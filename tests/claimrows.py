"""Test helper: the claim states as a table, shared by tests/test_claims.py (the pure rule) and
tests/test_lease.py (the same rows against the claim SQL on a real database)."""

from __future__ import annotations

from relay.claims import CLAIMED, EXPIRED, FREE, MINE

ME, OTHER = "mx1/100/aa", "mx2/200/bb"
NOW = 1_000_000.0

STATES = [
    # (holder (owner, expires) or None) -> the state ME finds it in, at NOW
    (None, FREE),
    ((ME, NOW + 100), MINE),
    ((ME, NOW - 100), MINE),  # its own, even expired: a leftover of an earlier attempt here
    ((OTHER, NOW - 0.001), EXPIRED),
    ((OTHER, NOW - 3600), EXPIRED),
    ((OTHER, NOW), CLAIMED),  # expires at NOW: still live (TAKE takes only `expires < now`)
    ((OTHER, NOW + 0.001), CLAIMED),
    ((OTHER, NOW + 200), CLAIMED),
]
