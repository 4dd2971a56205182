"""Pure decisions that keep one hostile client from wearing the relay down. No I/O: every
function takes the current time (`now`, seconds, any monotonic clock) from its caller.

* `client_key`: who "one client" is: an IPv4 address, or the /64 of an IPv6 address (one host
  usually owns a whole /64, so counting single IPv6 addresses would count nothing).
* `admit`: the connection limits (global and per client) as one decision.
* `Backoff`: failed AUTH attempts per client; after `free` failures each further attempt has to
  wait twice as long as the one before (capped), and failures older than `forget` are forgotten.
* `LogThrottle`: at most one log line per key and interval; the lines held back are counted and
  reported with the next line or by `flush`.

Every table is bounded (`max_keys`): an attacker who cycles through addresses can make the
relay forget old entries, never grow without limit.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

Reply = tuple[int, str]

AUTH_FAILURES_PER_SESSION = 3  # the 3rd failure in one session is answered 421 and closes it


def client_key(peer: Any) -> str:
    """'192.0.2.7', '2001:db8:1:2::/64', or '?' for a peer that is not an IP (address, port)
    tuple. IPv4-mapped IPv6 counts as IPv4."""
    if not isinstance(peer, tuple) or not peer:
        return "?"
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def admit(total: int, from_client: int, max_total: int, max_per_client: int) -> str | None:
    """None when a new connection may be served, else why not (the text of its
    `421 4.7.0 ..., try again later`). `total` and `from_client` count the open connections
    including the new one."""
    if total > max_total:
        return "too many connections"
    if from_client > max_per_client:
        return "too many connections from your address"
    return None


@dataclass
class _Failures:
    count: int
    last: float


class Backoff:
    """Failed attempts per key. `wait(key, now)` is how many seconds the key must still wait
    before its next attempt (0.0: go ahead): nothing for the first `free` failures, then `base`,
    2 `base`, 4 `base`... after the last failure, at most `cap`. A key with no failure for
    `forget` seconds starts over. A success does not clear the count (an attacker sharing an
    address with a real user must not be reset by that user)."""

    def __init__(self, free: int = 5, base: float = 1.0, cap: float = 300.0,
                 forget: float = 3600.0, max_keys: int = 10_000) -> None:
        self.free, self.base, self.cap, self.forget = free, base, cap, forget
        self.max_keys = max_keys
        self._t: OrderedDict[str, _Failures] = OrderedDict()

    def _get(self, key: str, now: float) -> _Failures | None:
        f = self._t.get(key)
        if f is not None and now - f.last >= self.forget:
            del self._t[key]
            return None
        return f

    def wait(self, key: str, now: float) -> float:
        f = self._get(key, now)
        if f is None or f.count < self.free:
            return 0.0
        delay = min(self.cap, self.base * 2.0 ** (f.count - self.free))
        return max(0.0, f.last + delay - now)

    def fail(self, key: str, now: float) -> None:
        f = self._get(key, now)
        if f is None:
            f = self._t[key] = _Failures(0, now)
            while len(self._t) > self.max_keys:
                self._t.popitem(last=False)
        f.count += 1
        f.last = now
        self._t.move_to_end(key)

    def failures(self, key: str, now: float) -> int:
        f = self._get(key, now)
        return f.count if f is not None else 0


@dataclass
class _Held:
    since: float  # start of the key's current interval (when its last line was written)
    held: int  # lines held back since


class LogThrottle:
    """At most one line per key and `interval`. `allow(key, now)` returns None to hold the line
    back, or the number of lines held back since the key's previous line (write the line, and
    mention that number when it is not 0). `flush(now)` returns the keys whose interval is over
    with lines still held back (and forgets them), for a periodic summary. When more than
    `max_keys` keys are live, the oldest are dropped (their held counts are returned by
    `flush` first, so nothing is silently lost while the table has room)."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._t: OrderedDict[str, _Held] = OrderedDict()
        self.dropped = 0  # held lines of keys evicted from a full table

    def allow(self, key: str, now: float) -> int | None:
        h = self._t.get(key)
        if h is not None and now - h.since < self.interval:
            h.held += 1
            return None
        held = h.held if h is not None else 0
        self._t[key] = _Held(now, 0)
        self._t.move_to_end(key)
        while len(self._t) > self.max_keys:
            _, old = self._t.popitem(last=False)
            self.dropped += old.held
        return held

    def flush(self, now: float) -> list[tuple[str, int]]:
        out = []
        for key in list(self._t):
            h = self._t[key]
            if now - h.since >= self.interval:
                if h.held:
                    out.append((key, h.held))
                del self._t[key]
        if self.dropped:
            out.append(("(other clients)", self.dropped))
            self.dropped = 0
        return out
