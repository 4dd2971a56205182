"""The upstream connections: `[upstream] concurrency` reused relay.smtpclient connections, each
send one transaction whose every recipient gets an Outcome (relay.outcomes); never raises."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from . import smtpclient
from .config import Upstream
from .outcomes import PERMFAIL, TEMPFAIL, Outcome, line, of_transaction, wire_sender

IDLE_RECONNECT = 20.0  # an upstream connection idle longer than this is replaced
DOWN_HOLD = 0.5  # after a failed connect, sends fail fast for this long (no hammering)


@dataclass
class _Slot:
    smtp: smtpclient.Connection | None = None
    last_used: float = 0.0


class UpstreamPool:
    """`size` (`[upstream] concurrency`) reused SMTP connections to the upstream
    (relay.smtpclient: PIPELINING when offered); a connection is opened when first needed and
    replaced after any trouble or when it has been idle for a while. `local_hostname` is what
    the relay says in EHLO (`[listen] hostname`)."""

    def __init__(self, upstream: Upstream, local_hostname: str) -> None:
        self.host, self.port, self.timeout = upstream.host, upstream.port, upstream.timeout
        self.local_hostname = local_hostname
        self.size = size = upstream.concurrency
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(_Slot())
        self._down_until = 0.0
        self._down_reason = ""

    @property
    def remote(self) -> str:
        return self.host

    async def send(self, sender: str, rcpts: Sequence[str], data: bytes,
                   mail_options: Sequence[str] = (), stuffed: bool = False
                   ) -> dict[str, Outcome]:
        """One upstream transaction; the outcome for every recipient. Never raises (but for
        cancellation). `stuffed`: data is smtpclient.wire_body() of the message already."""
        slot = await self._slots.get()
        ok = False
        try:
            result = await self._send(slot, sender, rcpts, data, mail_options, stuffed)
            ok = True
            return result
        finally:
            if not ok and slot.smtp is not None:  # cancelled mid-transaction: state unknown
                slot.smtp.close()
                slot.smtp = None
            slot.last_used = time.monotonic()
            self._slots.put_nowait(slot)

    def _all(self, rcpts: Sequence[str], out: Outcome) -> dict[str, Outcome]:
        return {r: out for r in rcpts}

    def _drop(self, slot: _Slot) -> None:
        if slot.smtp is not None:
            slot.smtp.close()
            slot.smtp = None

    async def _connect(self, slot: _Slot) -> Outcome | None:
        now = time.monotonic()
        if slot.smtp is not None and (not slot.smtp.is_connected
                                      or now - slot.last_used > IDLE_RECONNECT):
            if slot.smtp.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.smtp.quit(), 2.0)
            self._drop(slot)
        if slot.smtp is not None:
            return None
        if now < self._down_until:
            return Outcome(TEMPFAIL, self._down_reason)
        try:
            slot.smtp = await smtpclient.Connection.open(self.host, self.port, self.timeout,
                                                         self.local_hostname)
            return None
        except smtpclient.Refused as e:
            reason = line(f"451 4.4.1 upstream refused the connection: {e}")
        except (smtpclient.Trouble, OSError, TimeoutError) as e:
            reason = line(f"451 4.4.1 upstream {self.host}:{self.port} unreachable: "
                           f"{e.__class__.__name__} {e}")
        # fail the next attempts fast instead of waiting for a connect timeout each time
        self._down_until = time.monotonic() + DOWN_HOLD
        self._down_reason = reason
        return Outcome(TEMPFAIL, reason)

    async def _send(self, slot: _Slot, sender: str, rcpts: Sequence[str], data: bytes,
                    mail_options: Sequence[str], stuffed: bool = False) -> dict[str, Outcome]:
        trouble = await self._connect(slot)
        if trouble is not None:
            return self._all(rcpts, trouble)
        smtp = slot.smtp
        assert smtp is not None
        try:
            t = await smtp.send(wire_sender(sender), rcpts, data, mail_options, stuffed)
        except smtpclient.NotSupported as e:
            return self._all(rcpts, Outcome(PERMFAIL, line(f"553 5.6.7 upstream: {e}")))
        except ValueError as e:  # an address that cannot go on a command line
            return self._all(rcpts, Outcome(PERMFAIL, line(f"553 5.1.3 {e}")))
        except (smtpclient.Trouble, OSError, TimeoutError) as e:
            self._drop(slot)
            return self._all(rcpts, Outcome(
                TEMPFAIL, line(f"451 4.4.2 upstream connection trouble: "
                                f"{e.__class__.__name__} {e}")))
        return self._outcomes(slot, rcpts, t)

    def _outcomes(self, slot: _Slot, rcpts: Sequence[str], t: smtpclient.Transaction
                  ) -> dict[str, Outcome]:
        """Each recipient's outcome (outcomes.of_transaction); the connection is dropped after
        a 421 or when it went away."""
        smtp = slot.smtp
        replies = [t.mail, *t.rcpts] + ([t.data] if t.data is not None else [])
        if any(r.code == 421 for r in replies) or smtp is None or not smtp.is_connected:
            self._drop(slot)
        return of_transaction(rcpts, t.mail, t.rcpts, t.data)

    async def close(self) -> None:
        while not self._slots.empty():
            slot = self._slots.get_nowait()
            if slot.smtp is not None and slot.smtp.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.smtp.quit(), 2.0)
            self._drop(slot)
