"""The aiosmtpd handler hooks: thin; the decisions live in relay.addresses, relay.policy and
relay.delivery, and the handler answers with their reply.

* MAIL/RCPT addresses are forwarded exactly as received; a source route is dropped; see
  relay.addresses for what is refused. More than `max_recipients` recipients: `452 4.5.3`.
* Message data: bare CR and bare LF are normalised to CRLF before anything else (so the
  fingerprinted copies, the message identity and what goes upstream all agree, and no bare CR/LF
  is ever sent upstream). The end of DATA is only CRLF.CRLF; a `\\n.\\n` inside the content is
  content and goes upstream as an ordinary (dot-stuffed) line, never as a second message.
* BODY=8BITMIME and SMTPUTF8 given by the client are passed on to the upstream MAIL FROM.
* Any unexpected error answers `451 4.3.0` (never a 5xx the client would bounce on).
* Warnings a client can provoke (refused connections, failed AUTH, accept errors such as
  EMFILE) are logged at most once per client and minute, with a count of the rest.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import Envelope, Session

from . import limits
from .addresses import check_rcpt, check_sender, mail_options_upstream, strip_route
from .config import Listen
from .delivery import Deliverer, Transaction
from .gate import peer_allowed
from .policy import normalise_newlines

if TYPE_CHECKING:
    from .session import RelaySMTP

log = logging.getLogger("relay")

LOG_INTERVAL = 60.0  # seconds: at most one line per client and kind of warning


def new_qid() -> str:
    return secrets.token_hex(5).upper()


def _refuse(session: Session, what: str, address: str, bad: tuple[int, str]) -> str:
    reply = f"{bad[0]} {bad[1]}"
    shown = ascii(address)[1:-1][:300]  # no control characters in the log
    log.info("refused %s <%s> from %s: %s", what, shown,
             session.peer[0] if session.peer else "?", reply)
    return reply


class Handler:
    """aiosmtpd handler hooks: thin; the decisions live in relay.policy and relay.delivery."""

    def __init__(self, listen: Listen, deliverer: Deliverer) -> None:
        self.listen = listen
        self.deliverer = deliverer
        self.connections: set[RelaySMTP] = set()
        self.per_client: dict[str, int] = {}
        self.throttle = limits.LogThrottle(LOG_INTERVAL)

    def opened(self, conn: RelaySMTP) -> None:
        self.connections.add(conn)
        self.per_client[conn.client] = self.per_client.get(conn.client, 0) + 1

    def closed(self, conn: RelaySMTP) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            n = self.per_client.get(conn.client, 0) - 1
            if n > 0:
                self.per_client[conn.client] = n
            else:
                self.per_client.pop(conn.client, None)

    def warn(self, line: str, key: str | None = None, level: int = logging.WARNING) -> bool:
        """Log `line` unless a line with the same key (default: the line) was logged less
        than LOG_INTERVAL ago; the next line written says how many were held back."""
        held = self.throttle.allow(key or line, time.monotonic())
        if held is None:
            return False
        log.log(level, "%s%s", line, f" ({held} more since the last such line)" if held else "")
        return True

    def flush_warnings(self) -> None:
        for key, n in self.throttle.flush(time.monotonic()):
            log.warning("%d more not logged in the last %.0f s: %s", n, LOG_INTERVAL, key)

    @property
    def stopping(self) -> bool:
        return self.deliverer.stopping

    def _peer_ok(self, server: RelaySMTP, session: Session) -> bool:
        ok = server.peer_ok
        if ok is None:
            ok = server.peer_ok = peer_allowed(session.peer, self.listen.allow)
        return ok

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if not self._peer_ok(server, session):
            return "550 5.7.1 relaying denied"
        if self.stopping:
            return "421 4.3.2 shutting down, try again later"
        path = strip_route(address)
        if path is None:
            return "553 5.1.3 malformed source route"
        bad = check_sender(path, bool(envelope.smtp_utf8))
        if bad is not None:
            return _refuse(session, "MAIL", address, bad)
        envelope.mail_from = path
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not self._peer_ok(server, session):
            return "550 5.7.1 relaying denied"
        if len(envelope.rcpt_tos) >= self.listen.max_recipients:
            return "452 4.5.3 too many recipients"
        path = strip_route(address)
        if path is None:
            return "553 5.1.3 malformed source route"
        bad = check_rcpt(path, self.listen.domains, bool(envelope.smtp_utf8))
        if bad is not None:
            return _refuse(session, "RCPT", address, bad)
        envelope.rcpt_tos.append(path)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        if self.stopping:
            return "451 4.3.2 shutting down, try again later"
        raw = envelope.original_content
        assert isinstance(raw, bytes) and envelope.mail_from is not None
        txn = Transaction(qid=new_qid(), sender=envelope.mail_from,
                          rcpts=list(envelope.rcpt_tos),
                          mail_options=mail_options_upstream(envelope.mail_options),
                          data=normalise_newlines(raw))
        loop = asyncio.get_running_loop()
        _, reply_by = self.deliverer.windows(loop.time())
        server.rearm_timeout(reply_by - loop.time() + 30)
        return await self.deliverer.deliver(txn)

    async def handle_exception(self, error: Exception) -> str:
        key = f"session error: {error.__class__.__name__}"
        if self.throttle.allow(key, time.monotonic()) is not None:  # one traceback a minute
            log.error("%s: %s", key, error, exc_info=error)
        return "451 4.3.0 internal error, try again later"

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's exception handler: resource errors of the accept loop (EMFILE...) are
        logged as one line per minute, everything else as asyncio would."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRORS:
            self.warn(f"{context.get('message', 'error')}: {exc.strerror}", level=logging.ERROR)
            return
        loop.default_exception_handler(context)


_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
