"""`relay serve`: the SMTP listener in front of the delivery side.

The SMTP handler stays thin: it checks who may talk to the relay and which envelope addresses
it takes (relay.addresses, relay.policy), then hands the message to relay.delivery and
answers with its reply.

* Clients outside `[listen] allow` get `554 5.7.1` instead of a greeting and are disconnected.
* MAIL/RCPT addresses are parsed strictly (RFC 5321) and forwarded exactly as received; a
  source route is dropped; see relay.addresses for what is refused. More than
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
* Hostile clients (see relay.limits): at most `[listen] max_connections` sessions in all and
  `max_connections_per_client` per address (more get `421 4.7.0`); AUTH failures end the session
  at the 3rd and back off per address; passwords are hashed on a small thread pool, never on the
  event loop. Warnings a client can provoke (refused connections, failed AUTH, accept errors
  such as EMFILE) are logged at most once per client and minute, with a count of the rest.
* SIGTERM/SIGINT: stop accepting connections, idle sessions get `421`, every DATA in progress
  still gets its reply (250 or 4xx) within 20 s, then exit 0. SIGHUP re-reads the members and
  auth files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from . import keys, limits, sdnotify
from .addresses import check_rcpt, check_sender, mail_options_upstream, parse_path, strip_route
from .asyncstore import AsyncStore
from .config import Config, ConfigError
from .delivery import Deliverer, Transaction
from .passwords import dummy_hash, load_auth_file, verify_password
from .policy import load_members, normalise_newlines
from .upstream import UpstreamPool

log = logging.getLogger("relay")

STOP_GRACE = 25.0  # seconds to wait for open DATA after SIGTERM before closing everything
LOG_INTERVAL = 60.0  # seconds: at most one line per client and kind of warning
_CHECK = AuthResult(success=False, handled=False)  # "credentials parsed, check them" (internal)


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
        peer = transport.get_extra_info("peername")
        client = limits.client_key(peer)
        if not peer_allowed(peer, h.cfg.allow):
            h.warn(f"refused connection from {client} (not in [listen] allow)")
            reply = f"554 5.7.1 {h.cfg.hostname} access denied"
        else:
            why = limits.admit(len(h.connections) + 1, h.per_client.get(client, 0) + 1,
                               h.cfg.max_connections, h.cfg.max_connections_per_client)
            if why is None:
                smtp = self.session()
                transport.set_protocol(smtp)
                smtp.connection_made(transport)
                return
            h.warn(f"refused connection from {client}: {why} ({len(h.connections)} open)",
                   key=f"refused {client}: {why}")
            reply = f"421 4.7.0 {why}, try again later"
        transport.write(reply.encode() + b"\r\n")
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # a refused client's words, between the refusal and the close

    def connection_lost(self, exc: Exception | None) -> None:
        pass


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
            ok = server.peer_ok = peer_allowed(session.peer, self.cfg.allow)
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
        if len(envelope.rcpt_tos) >= self.cfg.max_recipients:
            return "452 4.5.3 too many recipients"
        path = strip_route(address)
        if path is None:
            return "553 5.1.3 malformed source route"
        bad = check_rcpt(path, self.cfg.domains, bool(envelope.smtp_utf8))
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


class Authenticator:
    """AUTH PLAIN / LOGIN over the `[listen] auth_file` users (only after STARTTLS).

    * Hashes are checked on a pool of WORKERS threads (scrypt and PBKDF2 release the GIL),
      never on the event loop; at most MAX_PENDING checks wait at once, an attempt beyond that
      gets `454 4.7.0` at once, so attackers cannot queue up unbounded work.
    * An unknown user is checked against a dummy hash of the same cost: the time to refuse
      does not tell which users exist.
    * The 3rd failure in a session is answered `421 4.7.0` and closes it; per client address
      (limits.Backoff) after 5 failures each further attempt must wait 1, 2, 4... up to 300 s
      after the last failure, and is answered `421 4.7.0` (no hash computed) until then.
    """

    WORKERS = 2
    MAX_PENDING = 8

    def __init__(self, users: dict[str, str], handler: Handler | None = None) -> None:
        self.users = users
        self.handler = handler
        self.backoff = limits.Backoff()
        self.pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="relay-auth")
        self.pending = 0

    @property
    def users(self) -> dict[str, str]:
        return self._users

    @users.setter
    def users(self, users: dict[str, str]) -> None:
        self._users = users
        self.dummy = dummy_hash(users.values())

    def _warn(self, line: str, key: str) -> None:
        if self.handler is not None:
            self.handler.warn(line, key)
        else:
            log.warning("%s", line)

    async def check(self, server: RelaySMTP, data: Any) -> AuthResult:
        loop = asyncio.get_running_loop()
        client = server.client
        if self.backoff.wait(client, loop.time()) > 0:
            self._warn(f"AUTH from {client} refused: too many failures, backing off",
                       f"auth backoff {client}")
            server.auth_close = True
            return AuthResult(success=False, handled=False, message=(
                "421 4.7.0 too many failed authentications from your address, "
                "try again later"))
        if self.pending >= self.MAX_PENDING:
            return AuthResult(success=False, handled=False,
                              message="454 4.7.0 temporary authentication failure, try again later")
        user: str | None = None
        password = b""
        if isinstance(data, LoginPassword):
            password = data.password
            try:
                user = data.login.decode("utf-8")
            except UnicodeDecodeError:
                user = None
        stored = self.users.get(user) if user is not None else None
        self.pending += 1
        try:
            ok = await loop.run_in_executor(self.pool, verify_password, password,
                                            stored if stored is not None else self.dummy)
        finally:
            self.pending -= 1
        if ok and stored is not None:
            return AuthResult(success=True, auth_data=user)
        self.backoff.fail(client, loop.time())
        server.auth_failures += 1
        shown = ascii(user[:64]) if user is not None else "(not UTF-8)"
        self._warn(f"authentication failed for {shown} from {client}", f"auth failed {client}")
        if server.auth_failures >= limits.AUTH_FAILURES_PER_SESSION:
            server.auth_close = True
            return AuthResult(success=False, handled=False,
                              message="421 4.7.0 too many failed authentications, closing")
        return AuthResult(success=False, handled=False)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


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
        self.metrics_server: asyncio.base_events.Server | None = None
        self.retention: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.cfg
        members = load_members(cfg)
        keyring = keys.load(cfg.key_file, create=True)
        tls = tls_context(cfg)
        self.authenticator = (Authenticator(load_auth_file(cfg.auth_file))
                              if cfg.auth_file is not None else None)
        self.flusher: asyncio.Task[None] | None = None
        self.store = AsyncStore(cfg.db_path)
        await self.store.open()
        await self.store.prune_deliveries(time.time() - 14 * 86400)
        self.pool = UpstreamPool(cfg.upstream_host, cfg.upstream_port, cfg.concurrency,
                                 cfg.upstream_timeout, cfg.hostname)
        self.deliverer = Deliverer(cfg, self.pool, self.store, keyring, members)
        await self.deliverer.start()
        self.handler = handler = Handler(cfg, self.deliverer)
        if self.authenticator is not None:
            self.authenticator.handler = handler
        loopback = _is_loopback(cfg.listen_host)
        if not loopback and tls is None:
            log.warning("listening on %s without TLS: set [listen] tls_cert and tls_key",
                        cfg.listen_host)
        auth = self.authenticator

        def session() -> RelaySMTP:
            return RelaySMTP(handler, data_size_limit=cfg.max_message_size,
                             enable_SMTPUTF8=True, decode_data=False, hostname=cfg.hostname,
                             timeout=cfg.session_timeout, tls_context=tls,
                             require_starttls=bool(tls) and not loopback,
                             authenticator=auth, auth_required=auth is not None,
                             auth_require_tls=True)

        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(lambda: Gate(handler, session),
                                                   host=cfg.listen_host,
                                                   port=cfg.listen_port)
        except OSError as e:
            await self.close_backends()
            raise ConfigError(f"{cfg.source}: listen: cannot listen on "
                              f"{cfg.listen_host}:{cfg.listen_port}: {e.strerror or e}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        loop.set_exception_handler(handler.loop_exception)
        self.flusher = loop.create_task(self._flush_warnings())
        log.info("listening on %s:%d, upstream %s:%d, %d connection(s)", cfg.listen_host,
                 self.port, cfg.upstream_host, cfg.upstream_port, cfg.concurrency)
        await self.start_operations()

    async def start_operations(self) -> None:
        """The metrics endpoint ([metrics] listen) and the daily retention purge ([store]
        keep_days), both beside the SMTP service: neither delays it."""
        from .metrics import serve_http
        from .operator import retention_loop

        cfg, deliverer, store = self.cfg, self.deliverer, self.store
        assert deliverer is not None and store is not None
        if cfg.metrics_listen is not None:
            try:
                self.metrics_server = await serve_http(
                    *cfg.metrics_listen, deliverer.metrics,
                    lambda: bool(self.server and self.server.is_serving()
                                 and not deliverer.stopping))
            except OSError as e:
                await self.stop(grace=0)
                raise ConfigError(f"{cfg.source}: metrics.listen: cannot listen on "
                                  f"{cfg.metrics_listen[0]}:{cfg.metrics_listen[1]}: "
                                  f"{e.strerror or e}") from None
        if cfg.keep_days > 0:
            self.retention = asyncio.get_running_loop().create_task(
                retention_loop(store, cfg.keep_days))

    async def _flush_warnings(self) -> None:
        assert self.handler is not None
        while True:
            await asyncio.sleep(LOG_INTERVAL / 2)
            self.handler.flush_warnings()

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
        if self.retention is not None:
            self.retention.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.retention
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.flusher is not None:
            self.flusher.cancel()
            if self.handler is not None:
                self.handler.flush_warnings()
        if self.authenticator is not None:
            self.authenticator.close()
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
    logging.getLogger("mail.log").addFilter(_OncePerInterval())  # its warnings: client-made


class _OncePerInterval(logging.Filter):
    """Lets a record through at most once per LOG_INTERVAL and message template (aiosmtpd
    warns once per bogus command a client sends)."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = limits.LogThrottle(LOG_INTERVAL)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self.throttle.allow(str(record.msg), time.monotonic())
        if held:
            record.msg = f"{record.msg} ({held} more since the last such line)"
        return held is not None


async def _main(cfg: Config) -> int:
    relay = Relay(cfg)
    await relay.start()
    sdnotify.notify(f"READY=1\nSTATUS=listening on {cfg.listen_host}:{relay.port}")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, relay.reload)
    await stop.wait()
    log.info("signal received: stopping")
    sdnotify.notify("STOPPING=1")
    await relay.stop()
    return 0


def serve(cfg: Config) -> int:
    """Run the relay in the foreground until SIGTERM/SIGINT; the exit status."""
    _setup_logging()
    return asyncio.run(_main(cfg))
