"""Shared fixtures: a recording SMTP sink (the upstream), a relay config in tmp_path, the relay
itself in-process, and small SMTP client helpers. Real sockets on 127.0.0.1, ports from the OS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

# pg_server (a private PostgreSQL cluster) and backend (a test on SQLite and on PostgreSQL)
from pgserver import backend, pg_server  # noqa: E402, F401

from relay.config import Config, Listen, Policy, Signature, StoreConfig, Upstream

# --- required external tools ------------------------------------------------------------------

INSTALL = "bash .ci/install-system-deps"


def require_tool(name: str, path: str | None = None, install: str = INSTALL) -> str:
    """The path of an external program a test needs (`path` when the caller found it itself,
    else `name` on PATH or in /usr/sbin). Missing, the test is skipped on a developer's machine
    but FAILS under CI=true: in CI every tool is installed, so a missing one is a broken setup,
    never a reason to report green."""
    found = path or shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        why = f"{name} not installed ({install})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and a required tool is missing: {why}", pytrace=False)
        pytest.skip(why)
    return found


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes


@dataclass
class SinkHandler:
    """Records every transaction. `rcpt_replies[address]` answers that RCPT instead of 250;
    `drop_after = N` closes the connection without a reply at the end of DATA once N messages
    were taken; `data_delay` waits before answering DATA."""

    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    data_delay: float = 0.0
    connections: int = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.drop_after is not None and len(self.messages) >= self.drop_after:
            assert server.transport is not None
            server.transport.abort()
            await asyncio.sleep(0)
            return "421 gone"
        assert isinstance(envelope.original_content, bytes)
        self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                      list(envelope.mail_options), envelope.original_content))
        return "250 2.0.0 queued"

    def to(self, rcpt: str) -> list[Received]:
        return [m for m in self.messages if rcpt in m.rcpt_tos]


class Sink:
    def __init__(self, handler: SinkHandler, server: asyncio.base_events.Server) -> None:
        self.handler = handler
        self.server = server
        self.port: int = server.sockets[0].getsockname()[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SinkHandler.__dataclass_fields__:
            setattr(self.handler, name, value)
        else:
            object.__setattr__(self, name, value)

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_sink(port: int = 0, handler: SinkHandler | None = None) -> Sink:
    handler = handler or SinkHandler()

    def factory() -> SMTP:
        handler.connections += 1
        return SMTP(handler, enable_SMTPUTF8=True, decode_data=False, hostname="sink.test",
                    data_size_limit=None)

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port,
                                                            reuse_address=True)
    return Sink(handler, server)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await start_sink()
    yield s
    await s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def base_cfg(tmp_path: Path) -> Config:
    return Config(
        listen=Listen(host="127.0.0.1", port=0, hostname="relay.test", timeout=60.0),
        upstream=Upstream(port=free_port(), timeout=5.0, fanout_budget=30.0, concurrency=4),
        policy=Policy(lists=("all-staff@example.com",), min_recipients=20),
        store=StoreConfig(path=tmp_path / "var" / "relay.db"),
        signature=Signature(key_file=tmp_path / "var" / "relay.key"))


@pytest.fixture
def cfg(base_cfg: Config, sink: Sink) -> Config:
    return base_cfg.with_keys(upstream=dict(port=sink.port))


StartRelay = Callable[..., Awaitable[Any]]


@pytest.fixture
async def start_relay() -> AsyncIterator[StartRelay]:
    """start_relay(cfg) -> a running relay.server.Relay (stopped at teardown)."""
    from relay.server import Relay

    running: list[Relay] = []

    async def start(config: Config) -> Relay:
        r = Relay(config)
        await r.start()
        running.append(r)
        return r

    yield start
    for r in running:
        if r.server is not None and r.server.is_serving():
            await r.stop(grace=5)


@pytest.fixture
async def relay(cfg: Config, start_relay: StartRelay) -> Any:
    return await start_relay(cfg)


class Client:
    """A minimal line-level SMTP client for tests that need exact bytes on the wire."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def reply(self, timeout: float = 30) -> str:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("closed: " + " | ".join(lines))
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    async def cmd(self, line: str | bytes, timeout: float = 30) -> str:
        data = line if isinstance(line, bytes) else line.encode("utf-8")
        self.writer.write(data + b"\r\n")
        await self.writer.drain()
        return await self.reply(timeout)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def smtp_send(port: int, sender: str, rcpts: list[str], data: bytes,
                    mail_options: str = "", timeout: float = 60) -> str:
    """One transaction over a raw connection; data is sent dot-stuffed with CRLF.CRLF.
    Returns the reply to the end of DATA (or the first refusal)."""
    c = await Client.connect(port)
    try:
        greet = await c.reply()
        if not greet.startswith("220"):
            return greet
        await c.cmd("EHLO client.test")
        r = await c.cmd(f"MAIL FROM:<{sender}>{(' ' + mail_options) if mail_options else ''}")
        if not r.startswith("250"):
            return r
        for rc in rcpts:
            r = await c.cmd(f"RCPT TO:<{rc}>")
            if not r.startswith("250"):
                return r
        r = await c.cmd("DATA")
        if not r.startswith("354"):
            return r
        body = data.replace(b"\r\n.", b"\r\n..")
        if body.startswith(b"."):
            body = b"." + body
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        reply = await c.cmd(body + b".", timeout=timeout)
        try:
            await c.cmd("QUIT", timeout=5)
        except (ConnectionError, TimeoutError):
            pass
        return reply
    finally:
        await c.close()


PROSE = (
    "The quarterly review is scheduled for next Thursday in the main hall. Every team lead "
    "should bring a short summary of the work done since the last meeting. We will discuss "
    "the budget for the coming year and the plans for the new office.",
    "Please remember that the parking lot will be closed for repairs during the whole week. "
    "The city has promised that the work will be finished before the end of the month. Staff "
    "who usually drive are asked to use public transport or to share a ride with colleagues.",
    "Finally, the annual staff party will take place on the last Friday of the month. Food and "
    "drinks will be provided by the usual caterer. Partners are welcome, but please tell the "
    "office by the end of next week so that we can plan the seating and the menu.",
)


def make_message(to: str = "all-staff@example.com", subject: str = "Quarterly review",
                 body: str | None = None, extra_headers: str = "",
                 sender: str = "boss@example.com") -> bytes:
    text = body if body is not None else "\r\n\r\n".join(PROSE)
    return (f"From: Boss <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((to, subject, text)))}@example.com>\r\n"
            f"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n{extra_headers}\r\n{text}\r\n").encode()
