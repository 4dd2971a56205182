"""One client connection: the `Gate` every connection meets first, and the aiosmtpd session
(`RelaySMTP`) it hands the accepted ones to.

* The gate answers a refused client (relay.gate: `[listen] allow`, the connection limits) with
  one line and closes it before aiosmtpd's session object is made.
* MAIL/RCPT paths are parsed strictly (RFC 5321, relay.addresses.parse_path), exactly as the
  client wrote them; the handler's hooks (relay.handler) decide what to do with them.
* AUTH PLAIN/LOGIN credentials are parsed by aiosmtpd and checked asynchronously by
  relay.smtpauth; the session keeps the per-session failure count and closes after the 3rd.
* A session stopping while the relay shuts down gets `421 4.3.2`; `in_data` tells the stop which
  sessions still wait for a DATA reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult

from . import limits
from .addresses import parse_path
from .gate import refusal
from .smtpauth import Authenticator

if TYPE_CHECKING:
    from .handler import Handler

_CHECK = AuthResult(success=False, handled=False)  # "credentials parsed, check them" (internal)


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with a connect-time access check, strict envelope paths and the
    bookkeeping a graceful stop needs."""

    def __init__(self, handler: Handler, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self.relay_handler = handler
        self.in_data = False
        self.client = "?"  # limits.client_key of the peer
        self.auth_failures = 0
        self.auth_close = False
        self._auth_data: Any = None
        self.peer_ok: bool | None = None  # peer_allowed(), once per session (not per RCPT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self.client = limits.client_key(transport.get_extra_info("peername"))
            self.relay_handler.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.relay_handler.closed(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        assert self.session is not None
        h = self.relay_handler
        if h.stopping:
            await self.push("421 4.3.2 shutting down, try again later")
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # strict: the path exactly as the client wrote it (aiosmtpd's parser drops comments,
        # unquotes and keeps only the mailbox of a route, which would not be "as received")
        if not arg:
            return "", ""
        parsed = parse_path(arg)
        if parsed is None:
            return None, None
        path, rest = parsed
        return (path if path else "<>"), rest

    async def smtp_DATA(self, arg: str) -> None:
        self.in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self.in_data = False

    def rearm_timeout(self, seconds: float) -> None:
        """Keep aiosmtpd's idle timer from closing the session while the reply is prepared."""
        self._reset_timeout(seconds)

    # AUTH: aiosmtpd parses PLAIN/LOGIN and calls the authenticator synchronously; the
    # credentials are caught there and checked asynchronously (Authenticator.check).
    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        self._auth_data = auth_data
        return _CHECK

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check_credentials(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check_credentials(await super().auth_LOGIN(_, args))

    async def _check_credentials(self, result: AuthResult) -> AuthResult:
        if result is not _CHECK:
            return result
        data, self._auth_data = self._auth_data, None
        auth = self._authenticator
        assert isinstance(auth, Authenticator)
        return await auth.check(self, data)

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self.auth_close and self.transport is not None:
            self.transport.close()


class Gate(asyncio.Protocol):
    """The first protocol of every connection. A client outside `[listen] allow` (554) or over
    a connection limit (421 4.7.0) is answered with one write and closed, before aiosmtpd's
    session object is made (0.7 ms of the event loop each); every other connection is handed
    to a new RelaySMTP."""

    def __init__(self, handler: Handler, session: Callable[[], RelaySMTP]) -> None:
        self.handler = handler
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        h = self.handler
        refused = refusal(transport.get_extra_info("peername"), h.listen.allow,
                          h.listen.hostname, len(h.connections), h.per_client,
                          h.listen.max_connections, h.listen.max_connections_per_client)
        if refused is None:
            smtp = self.session()
            transport.set_protocol(smtp)
            smtp.connection_made(transport)
            return
        h.warn(refused.warning, key=refused.key)
        transport.write(refused.reply.encode() + b"\r\n")
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # a refused client's words, between the refusal and the close

    def connection_lost(self, exc: Exception | None) -> None:
        pass
