"""systemd readiness (sd_notify(3)) without a dependency: one datagram to $NOTIFY_SOCKET.

`relay serve` sends READY=1 once it listens and STOPPING=1 when a stop begins, so the unit can
be `Type=notify`. Without $NOTIFY_SOCKET (not started by systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=...") to systemd; False when there is no socket
    or it cannot be reached (never raises: readiness must not stop the relay)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or addr[0] not in ("/", "@"):
        return False
    target = "\0" + addr[1:] if addr[0] == "@" else addr  # "@": Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(target)
            s.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True
