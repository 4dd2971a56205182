"""`relay serve`: start the SMTP listener in front of the delivery side, run it until a signal,
stop it gracefully.

What a connection meets, in order: relay.gate (who may connect, the connection limits), carried
out by relay.session's Gate; the aiosmtpd session (relay.session.RelaySMTP) with AUTH
(relay.smtpauth) and TLS; the handler hooks (relay.handler), which hand each message to
relay.delivery.

* STARTTLS when `[listen] tls_cert`/`tls_key` are set; required before MAIL when the relay
  listens on anything but loopback. AUTH (PLAIN, LOGIN) only after STARTTLS, and then required,
  when `[listen] auth_file` is set (format: relay.passwords).
* SIGTERM/SIGINT: stop accepting connections, idle sessions get `421`, every DATA in progress
  still gets its reply (250 or 4xx) within 20 s, then exit 0. SIGHUP re-reads the members and
  auth files.
* aiosmtpd's own warnings (one per bogus command a client sends) are logged at most once per
  minute and kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import time

from . import keys, limits, sdnotify
from .asyncstore import AsyncStore
from .config import Config, ConfigError, Listen
from .delivery import Deliverer
from .gate import is_loopback
from .handler import LOG_INTERVAL, Handler
from .passwords import load_auth_file
from .policy import load_members
from .session import Gate, RelaySMTP
from .smtpauth import Authenticator
from .upstream import UpstreamPool

log = logging.getLogger("relay")

STOP_GRACE = 25.0  # seconds to wait for open DATA after SIGTERM before closing everything


def tls_context(listen: Listen, source: str) -> ssl.SSLContext | None:
    """The STARTTLS context of `[listen] tls_cert`/`tls_key`; `source` names the config file."""
    if listen.tls_cert is None or listen.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(listen.tls_cert), str(listen.tls_key))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{source}: listen.tls_cert/tls_key: cannot load "
                          f"{listen.tls_cert}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


class Relay:
    """The running relay: listener, upstream pool, store thread. `start()` / `stop()` so
    tests can run it in-process; `serve()` wraps it for the command line. It takes the whole
    Config and hands each component its section(s)."""

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
        cfg, listen = self.cfg, self.cfg.listen
        members = load_members(cfg.policy)
        keyring = keys.load(cfg.signature.key_file, create=True)
        tls = tls_context(listen, cfg.source)
        self.authenticator = (Authenticator(load_auth_file(listen.auth_file))
                              if listen.auth_file is not None else None)
        self.flusher: asyncio.Task[None] | None = None
        self.store = AsyncStore(cfg.store.path, cfg.store.url)
        await self.store.open()
        await self.store.prune_deliveries(time.time() - 14 * 86400)
        self.pool = UpstreamPool(cfg.upstream, listen.hostname)
        self.deliverer = Deliverer(cfg.policy, cfg.upstream, cfg.signature, listen.hostname,
                                   self.pool, self.store, keyring, members)
        await self.deliverer.start()
        self.handler = handler = Handler(listen, self.deliverer)
        if self.authenticator is not None:
            self.authenticator.handler = handler
        loopback = is_loopback(listen.host)
        if not loopback and tls is None:
            log.warning("listening on %s without TLS: set [listen] tls_cert and tls_key",
                        listen.host)
        auth = self.authenticator

        def session() -> RelaySMTP:
            return RelaySMTP(handler, data_size_limit=listen.max_message_size,
                             enable_SMTPUTF8=True, decode_data=False, hostname=listen.hostname,
                             timeout=listen.timeout, tls_context=tls,
                             require_starttls=bool(tls) and not loopback,
                             authenticator=auth, auth_required=auth is not None,
                             auth_require_tls=True)

        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(lambda: Gate(handler, session),
                                                   host=listen.host, port=listen.port)
        except OSError as e:
            await self.close_backends()
            raise ConfigError(f"{cfg.source}: listen: cannot listen on "
                              f"{listen.host}:{listen.port}: {e.strerror or e}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        loop.set_exception_handler(handler.loop_exception)
        self.flusher = loop.create_task(self._flush_warnings())
        log.info("listening on %s:%d, upstream %s:%d, %d connection(s)", listen.host,
                 self.port, cfg.upstream.host, cfg.upstream.port, cfg.upstream.concurrency)
        await self.start_operations()

    async def start_operations(self) -> None:
        """The metrics endpoint ([metrics] listen) and the daily retention purge ([store]
        keep_days), both beside the SMTP service: neither delays it."""
        from .metrics import serve_http
        from .operator import retention_loop

        cfg, deliverer, store = self.cfg, self.deliverer, self.store
        assert deliverer is not None and store is not None
        if cfg.metrics.listen is not None:
            try:
                self.metrics_server = await serve_http(
                    *cfg.metrics.listen, deliverer.metrics,
                    lambda: bool(self.server and self.server.is_serving()
                                 and not deliverer.stopping))
            except OSError as e:
                await self.stop(grace=0)
                raise ConfigError(f"{cfg.source}: metrics.listen: cannot listen on "
                                  f"{cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}: "
                                  f"{e.strerror or e}") from None
        if cfg.store.keep_days > 0:
            self.retention = asyncio.get_running_loop().create_task(
                retention_loop(store, cfg.store.keep_days))

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
            self.deliverer.members = load_members(self.cfg.policy)
            auth_file = self.cfg.listen.auth_file
            if self.authenticator is not None and auth_file is not None:
                self.authenticator.users = load_auth_file(auth_file)
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
    sdnotify.notify(f"READY=1\nSTATUS=listening on {cfg.listen.host}:{relay.port}")
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
