"""Signals for monitoring: Prometheus counters (prometheus_client) and a small HTTP endpoint.

`[metrics] listen = "127.0.0.1:9464"` serves:
* `GET /metrics`: the Prometheus text format;
* `GET /health`: `200 ok` while the relay accepts mail, `503 stopping` once a stop began.

What is counted (one registry per running relay):
* `relay_messages_total{kind="ordinary"|"fingerprinted"}`: client transactions (DATA) by kind.
  Postfix hands a list over in batches of 50, so one list message counts once per batch.
* `relay_copies_total{outcome="accepted"|"tempfail"|"permfail"}`: upstream answers to the
  fingerprinted copies (a copy temp-failed and later accepted counts in both).
* `relay_dsn_total`: delivery status notifications the upstream accepted.
* `relay_replies_total{code="2xx"|"4xx"|"5xx"}`: the relay's replies to DATA.
* `relay_fanout_seconds`: per fingerprinted transaction, seconds from the end of DATA to the
  relay's reply (all its copies answered).
Nothing here says which recipient got which copy, or anything about signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger("relay")

prometheus_client.disable_created_metrics()  # no *_created series: counters only

FANOUT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 240, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.messages = Counter("relay_messages", "Client transactions (DATA) by kind",
                                ["kind"], registry=r)
        self.copies = Counter("relay_copies", "Upstream answers to fingerprinted copies",
                              ["outcome"], registry=r)
        self.dsns = Counter("relay_dsn", "Delivery status notifications sent", registry=r)
        self.replies = Counter("relay_replies", "Replies to the client's DATA by class",
                               ["code"], registry=r)
        self.fanout = Histogram("relay_fanout_seconds", "End of DATA to reply, per "
                                "fingerprinted transaction", buckets=FANOUT_BUCKETS, registry=r)
        for kind in ("ordinary", "fingerprinted"):
            self.messages.labels(kind)
        for outcome in ("accepted", "tempfail", "permfail"):
            self.copies.labels(outcome)
        for code in ("2xx", "4xx", "5xx"):
            self.replies.labels(code)

    def copy(self, state: str) -> None:
        self.copies.labels(state).inc()

    def dsn(self) -> None:
        self.dsns.inc()

    def transaction(self, fingerprinted: bool | None, reply: str, seconds: float) -> None:
        if fingerprinted is not None:
            self.messages.labels("fingerprinted" if fingerprinted else "ordinary").inc()
            if fingerprinted:
                self.fanout.observe(seconds)
        if reply[:1] in ("2", "4", "5"):
            self.replies.labels(f"{reply[0]}xx").inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


async def serve_http(host: str, port: int, metrics: Metrics, healthy: Callable[[], bool]
                     ) -> asyncio.base_events.Server:
    """The /metrics and /health endpoint (HTTP/1.0 style: one request per connection)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while True:  # headers, ignored
                line = await asyncio.wait_for(reader.readline(), 10)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", prometheus_client.CONTENT_TYPE_LATEST, \
                    metrics.text()
            elif path in ("/health", "/healthz"):
                ok = healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", b"ok\n" if ok else b"stopping\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"/metrics or /health\n"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head + (b"" if parts[:1] == ["HEAD"] else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    log.info("metrics on http://%s:%d/metrics, health on /health", host,
             server.sockets[0].getsockname()[1])
    return server
