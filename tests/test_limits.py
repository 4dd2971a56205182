"""relay.limits: the connection, AUTH and log-rate decisions, as tables."""

from __future__ import annotations

import pytest

from relay.limits import Backoff, LogThrottle, admit, client_key


@pytest.mark.parametrize("peer,key", [
    (("192.0.2.7", 25), "192.0.2.7"),
    (("::ffff:192.0.2.7", 25, 0, 0), "192.0.2.7"),
    (("2001:db8:1:2:aaaa::1", 25, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:bbbb::9", 25, 0, 0), "2001:db8:1:2::/64"),
    (("fe80::1%eth0", 25, 0, 2), "fe80::/64"),
    (None, "?"),
    ("/run/sock", "?"),
    (("not an ip", 1), "?"),
])
def test_client_key(peer: object, key: str) -> None:
    assert client_key(peer) == key


@pytest.mark.parametrize("total,mine,why", [
    (1, 1, None),
    (200, 20, None),
    (201, 1, "too many connections"),
    (50, 21, "too many connections from your address"),
    (201, 21, "too many connections"),
])
def test_admit(total: int, mine: int, why: str | None) -> None:
    assert admit(total, mine, max_total=200, max_per_client=20) == why


def test_backoff_table() -> None:
    b = Backoff(free=3, base=2.0, cap=10.0, forget=100.0)
    # (time, failure at that time?, expected wait before the next attempt)
    steps = [
        (0.0, True, 0.0),   # 1 failure: free
        (1.0, True, 0.0),   # 2
        (2.0, True, 2.0),   # 3rd failure: next attempt waits base
        (3.0, False, 1.0),  # one second later: one more to wait
        (4.0, True, 4.0),   # 4th: doubles
        (8.0, True, 8.0),   # 5th
        (16.0, True, 10.0),  # 6th: capped
        (20.0, False, 6.0),
        (116.0, False, 0.0),  # 100 s after the last failure: forgotten
    ]
    for now, failed, wait in steps:
        if failed:
            b.fail("a", now)
        assert b.wait("a", now) == pytest.approx(wait), now
        assert b.wait("b", now) == 0.0  # other clients are not affected
    assert b.failures("a", 116.0) == 0


def test_backoff_table_is_bounded() -> None:
    b = Backoff(free=0, base=1.0, max_keys=3)
    for i in range(10):
        b.fail(f"k{i}", 0.0)
    assert len(b._t) == 3
    assert b.wait("k9", 0.0) > 0 and b.wait("k0", 0.0) == 0.0


def test_log_throttle_table() -> None:
    t = LogThrottle(interval=60.0)
    # (time, key, what allow() returns: None = hold back, n = write, n lines were held)
    steps = [
        (0.0, "a", 0),
        (1.0, "a", None),
        (2.0, "a", None),
        (3.0, "b", 0),
        (59.0, "a", None),
        (60.0, "a", 3),  # a new interval: write, and say 3 were held back
        (61.0, "a", None),
        (61.0, "b", None),
    ]
    for now, key, want in steps:
        assert t.allow(key, now) == want, (now, key)
    assert t.flush(62.0) == []  # intervals still running
    assert sorted(t.flush(121.0)) == [("a", 1), ("b", 1)]
    assert t.flush(200.0) == []  # reported once
    assert t.allow("a", 200.0) == 0


def test_log_throttle_is_bounded_and_counts_what_it_drops() -> None:
    t = LogThrottle(interval=60.0, max_keys=2)
    for i in range(5):
        assert t.allow(f"k{i}", 0.0) == 0
        assert t.allow(f"k{i}", 1.0) is None
    assert len(t._t) == 2
    assert sorted(t.flush(100.0)) == [("(other clients)", 3), ("k3", 1), ("k4", 1)]
