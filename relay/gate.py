"""Who may talk to the relay: the decisions a new connection gets before any SMTP is spoken.
Pure; `session.Gate` carries them out (one write and a close), `handler` asks `peer_allowed`
again at MAIL and RCPT.

* Clients outside `[listen] allow` get `554 5.7.1` instead of a greeting and are disconnected.
* Hostile clients (see relay.limits): at most `[listen] max_connections` sessions in all and
  `max_connections_per_client` per address (more get `421 4.7.0`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import limits

Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def peer_allowed(peer: Any, allow: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                 ) -> bool:
    """Is the client address (a peername tuple) inside one of the allowed networks?
    IPv4-mapped IPv6 addresses count as IPv4. Unix sockets and unknown peers: no."""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in allow)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Refusal:
    """How a connection is turned away: the one line written to it before the close, and the
    warning logged (at most once per `key` and interval; None: the line itself)."""

    reply: str
    warning: str
    key: str | None = None


def refusal(peer: Any, allow: Networks, hostname: str, open_total: int,
            open_per_client: Mapping[str, int], max_total: int,
            max_per_client: int) -> Refusal | None:
    """None when the client may have a session, else why not. `open_total` and
    `open_per_client` (limits.client_key -> sessions) count the sessions already open."""
    client = limits.client_key(peer)
    if not peer_allowed(peer, allow):
        return Refusal(f"554 5.7.1 {hostname} access denied",
                       f"refused connection from {client} (not in [listen] allow)")
    why = limits.admit(open_total + 1, open_per_client.get(client, 0) + 1, max_total,
                       max_per_client)
    if why is None:
        return None
    return Refusal(f"421 4.7.0 {why}, try again later",
                   f"refused connection from {client}: {why} ({open_total} open)",
                   f"refused {client}: {why}")
