"""`relay serve`: the SMTP listener in front of the delivery side.

The SMTP handler stays thin: it checks who may talk to the relay and which envelope addresses
it takes (relay.policy), then hands the message to relay.delivery and answers with its reply.

* Clients outside `[listen] allow` get `554 5.7.1` instead of a greeting and are disconnected.
* MAIL/RCPT addresses are parsed strictly (RFC 5321) and forwarded exactly as received; a
  source route is dropped; see relay.policy for what is refused. More than
  `max_recipients` recipients: `452 4.5.3`.
* Message data: bare CR and bare LF are normalised to CRLF before anything else (so the
  fingerprinted copies, the message identity and what goes upstream all agree, and no bare CR/LF
  is ever sent upstream). The end of DATA is only CRLF.CRLF; a `\\n.\\n` inside the content is
  content and goes upstream as an ordinary (dot-stuffed) line, never as a second message.
* BODY=8BITMIME and SMTPUTF8 given by the client are passed on to the upstream MAIL FROM.
* Any unexpected error answers `451 4.3.0` (never a 5xx the client would bounce on).
* STARTTLS when `[listen] tls_cert`/`tls_key` are set; required before MAIL when the relay
  listens on anything but loopback. AUTH (PLAIN, LOGIN) only after STARTTLS, and then required,
  when `[listen] auth_file` is set (format: relay.policy, section "SMTP AUTH").
* SIGTERM/SIGINT: stop accepting connections, idle sessions get `421`, every DATA in progress
  still gets its reply (250 or 4xx) within 20 s, then exit 0. SIGHUP re-reads the members and
  auth files.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from . import keys
from .config import Config, ConfigError
from .delivery import AsyncStore, Deliverer, Transaction, UpstreamPool
from .policy import (
    check_rcpt,
    check_sender,
    load_auth_file,
    load_members,
    mail_options_upstream,
    normalise_newlines,
    parse_path,
    strip_route,
    verify_password,
)

log = logging.getLogger("relay")

STOP_GRACE = 25.0  # seconds to wait for open DATA after SIGTERM before closing everything


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


def new_qid() -> str:
    return secrets.token_hex(5).upper()


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with a connect-time access check, strict envelope paths and the
    bookkeeping a graceful stop needs."""

    def __init__(self, handler: Handler, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self.relay_handler = handler
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self.relay_handler.connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.relay_handler.connections.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        assert self.session is not None
        h = self.relay_handler
        if not peer_allowed(self.session.peer, h.cfg.allow):
            log.warning("refused connection from %s (not in [listen] allow)",
                        self.session.peer[0] if self.session.peer else "?")
            await self.push(f"554 5.7.1 {self.hostname} access denied")
            assert self.transport is not None
            self.transport.close()
            return
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


def _refuse(session: Session, what: str, address: str, bad: tuple[int, str]) -> str:
    reply = f"{bad[0]} {bad[1]}"
    shown = ascii(address)[1:-1][:300]  # no control characters in the log
    log.info("refused %s <%s> from %s: %s", what, shown,
             session.peer[0] if session.peer else "?", reply)
    return reply


class Handler:
    """aiosmtpd handler hooks: thin; the decisions live in relay.policy and relay.delivery."""

    def __init__(self, cfg: Config, deliverer: Deliverer) -> None:
        self.cfg = cfg
        self.deliverer = deliverer
        self.connections: set[RelaySMTP] = set()

    @property
    def stopping(self) -> bool:
        return self.deliverer.stopping

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if not peer_allowed(session.peer, self.cfg.allow):
            return "550 5.7.1 relaying denied"
        if self.stopping:
            return "421 4.3.2 shutting down, try again later"
        path = strip_route(address)
        if path is None:
            return "553 5.1.3 malformed source route"
        bad = check_sender(path, self.cfg, bool(envelope.smtp_utf8))
        if bad is not None:
            return _refuse(session, "MAIL", address, bad)
        envelope.mail_from = path
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not peer_allowed(session.peer, self.cfg.allow):
            return "550 5.7.1 relaying denied"
        if len(envelope.rcpt_tos) >= self.cfg.max_recipients:
            return "452 4.5.3 too many recipients"
        path = strip_route(address)
        if path is None:
            return "553 5.1.3 malformed source route"
        bad = check_rcpt(path, self.cfg, bool(envelope.smtp_utf8))
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
        log.error("session error: %s: %s", error.__class__.__name__, error, exc_info=error)
        return "451 4.3.0 internal error, try again later"


class Authenticator:
    """aiosmtpd authenticator over the `[listen] auth_file` users (AUTH PLAIN / LOGIN, only
    after STARTTLS)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        fail = AuthResult(success=False, handled=False)
        if not isinstance(auth_data, LoginPassword):
            return fail
        try:
            user = auth_data.login.decode("utf-8")
        except UnicodeDecodeError:
            return fail
        stored = self.users.get(user)
        if stored is None or not verify_password(auth_data.password, stored):
            log.warning("authentication failed for %r from %s", user[:64],
                        session.peer[0] if session.peer else "?")
            return fail
        return AuthResult(success=True, auth_data=user)


def tls_context(cfg: Config) -> ssl.SSLContext | None:
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{cfg.source}: listen.tls_cert/tls_key: cannot load "
                          f"{cfg.tls_cert}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


class Relay:
    """The running relay: listener, upstream pool, store thread. `start()` / `stop()` so
    tests can run it in-process; `serve()` wraps it for the command line."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.server: asyncio.base_events.Server | None = None
        self.store: AsyncStore | None = None
        self.pool: UpstreamPool | None = None
        self.deliverer: Deliverer | None = None
        self.handler: Handler | None = None
        self.authenticator: Authenticator | None = None
        self.port = 0

    async def start(self) -> None:
        cfg = self.cfg
        members = load_members(cfg)
        keyring = keys.load(cfg.key_file, create=True)
        tls = tls_context(cfg)
        self.authenticator = (Authenticator(load_auth_file(cfg.auth_file))
                              if cfg.auth_file is not None else None)
        self.store = AsyncStore(cfg.db_path)
        await self.store.open()
        await self.store.call("prune_deliveries", time.time() - 14 * 86400)
        self.pool = UpstreamPool(cfg.upstream_host, cfg.upstream_port, cfg.concurrency,
                                 cfg.upstream_timeout, cfg.hostname)
        self.deliverer = Deliverer(cfg, self.pool, self.store, keyring, members)
        await self.deliverer.start()
        self.handler = handler = Handler(cfg, self.deliverer)
        loopback = _is_loopback(cfg.listen_host)
        if not loopback and tls is None:
            log.warning("listening on %s without TLS: set [listen] tls_cert and tls_key",
                        cfg.listen_host)
        auth = self.authenticator

        def factory() -> RelaySMTP:
            return RelaySMTP(handler, data_size_limit=cfg.max_message_size,
                             enable_SMTPUTF8=True, decode_data=False, hostname=cfg.hostname,
                             timeout=cfg.session_timeout, tls_context=tls,
                             require_starttls=bool(tls) and not loopback,
                             authenticator=auth, auth_required=auth is not None,
                             auth_require_tls=True)

        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(factory, host=cfg.listen_host,
                                                   port=cfg.listen_port)
        except OSError as e:
            await self.close_backends()
            raise ConfigError(f"{cfg.source}: listen: cannot listen on "
                              f"{cfg.listen_host}:{cfg.listen_port}: {e.strerror or e}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d, upstream %s:%d, %d connection(s)", cfg.listen_host,
                 self.port, cfg.upstream_host, cfg.upstream_port, cfg.concurrency)

    def reload(self) -> None:
        """SIGHUP: re-read the members files (a bad file keeps the old lists)."""
        if self.deliverer is None:
            return
        try:
            self.deliverer.members = load_members(self.cfg)
            if self.authenticator is not None and self.cfg.auth_file is not None:
                self.authenticator.users = load_auth_file(self.cfg.auth_file)
            log.info("members and auth files re-read")
        except ConfigError as e:
            log.error("not re-read: %s", e)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting, answer every open DATA, close sessions, wait for the copies in
        flight (up to `grace` seconds in all)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        if self.server is not None:
            self.server.close()
        if self.deliverer is not None:
            self.deliverer.begin_shutdown()
        conns = set(self.handler.connections) if self.handler else set()
        for c in conns:
            if not c.in_data and c.transport is not None:
                c.transport.write(b"421 4.3.2 shutting down, try again later\r\n")
                c.transport.close()
        while any(c.in_data for c in conns) and loop.time() < end:
            await asyncio.sleep(0.05)
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        if self.deliverer is not None and self.deliverer.jobs:
            await asyncio.wait(set(self.deliverer.jobs), timeout=max(0.1, end - loop.time()))
        await self.close_backends()
        log.info("stopped")

    async def close_backends(self) -> None:
        if self.deliverer is not None:
            self.deliverer.close()
        if self.pool is not None:
            await self.pool.close()
        if self.store is not None:
            await self.store.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(
            f"%(asctime)s relay[{os.getpid()}]: %(levelname)s %(message)s"))
        root.addHandler(h)
    logging.getLogger("relay").setLevel(logging.INFO)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: per-command chatter


async def _main(cfg: Config) -> int:
    relay = Relay(cfg)
    await relay.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, relay.reload)
    await stop.wait()
    log.info("signal received: stopping")
    await relay.stop()
    return 0


def serve(cfg: Config) -> int:
    """Run the relay in the foreground until SIGTERM/SIGINT; the exit status."""
    _setup_logging()
    return asyncio.run(_main(cfg))
