"""relay.gate: who may connect, and the refusal a connection gets, as tables."""

from __future__ import annotations

import ipaddress

import pytest

from relay.gate import Refusal, is_loopback, peer_allowed, refusal

LOCAL = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
OFFICE = (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("2001:db8:1::/48"))


@pytest.mark.parametrize("peer,allow,ok", [
    (("127.0.0.1", 4000), LOCAL, True),
    (("::1", 4000, 0, 0), LOCAL, True),
    (("::ffff:127.0.0.1", 4000, 0, 0), LOCAL, True),  # IPv4-mapped counts as IPv4
    (("10.1.2.3", 25), OFFICE, True),
    (("10.2.0.1", 25), OFFICE, False),
    (("2001:db8:1:9::5", 25, 0, 0), OFFICE, True),
    (("2001:db8:2::5", 25, 0, 0), OFFICE, False),
    (("fe80::1%eth0", 25, 0, 2), (ipaddress.ip_network("fe80::/64"),), True),
    (("127.0.0.1", 25), (), False),
    (None, LOCAL, False),  # unknown peer
    ("/run/relay.sock", LOCAL, False),  # a Unix socket
    ((), LOCAL, False),
    (("not an ip", 25), LOCAL, False),
])
def test_peer_allowed(peer: object, allow: tuple, ok: bool) -> None:
    assert peer_allowed(peer, allow) is ok


@pytest.mark.parametrize("host,loop", [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("relay.example.com", False),
])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


@pytest.mark.parametrize("peer,total,mine,want", [
    (("10.1.0.7", 25), 0, {}, None),
    (("10.1.0.7", 25), 5, {"10.1.0.7": 2}, None),  # the 6th session, the client's 3rd
    (("192.0.2.7", 25), 0, {}, Refusal(
        "554 5.7.1 relay.example access denied",
        "refused connection from 192.0.2.7 (not in [listen] allow)")),
    (("10.1.0.7", 25), 6, {}, Refusal(
        "421 4.7.0 too many connections, try again later",
        "refused connection from 10.1.0.7: too many connections (6 open)",
        "refused 10.1.0.7: too many connections")),
    (("10.1.0.7", 25), 4, {"10.1.0.7": 3, "10.1.0.8": 1}, Refusal(
        "421 4.7.0 too many connections from your address, try again later",
        "refused connection from 10.1.0.7: too many connections from your address (4 open)",
        "refused 10.1.0.7: too many connections from your address")),
    # one client is an IPv6 /64: another address of the same /64 counts against it
    (("2001:db8:1:2::9", 25, 0, 0), 3, {"2001:db8:1:2::/64": 3}, Refusal(
        "421 4.7.0 too many connections from your address, try again later",
        "refused connection from 2001:db8:1:2::/64: too many connections from your address "
        "(3 open)", "refused 2001:db8:1:2::/64: too many connections from your address")),
])
def test_refusal(peer: object, total: int, mine: dict[str, int], want: Refusal | None) -> None:
    assert refusal(peer, OFFICE, "relay.example", total, mine, max_total=6,
                   max_per_client=3) == want
