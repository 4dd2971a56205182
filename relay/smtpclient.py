"""The relay's SMTP client for the upstream: one connection, one transaction at a time, with
PIPELINING (RFC 2920) when the upstream offers it.

Why not aiosmtplib's `sendmail` (used before): per copy it parsed the addresses five times with
`email.utils.parseaddr`, normalised line endings twice (once for SIZE) and dot-stuffed with
regular expressions, ran one `asyncio.wait_for` per reply and waited for four round trips
(MAIL, RCPT, DATA, the message). Measured in the relay's own fan-out (bench/speed.py message,
31 KB, copies equal to the original so that rendering does not count, cProfile): 0.68 ms of
regular expressions and 0.49 ms of address parsing per copy. Here, the data the relay hands
over is CRLF-only already (relay.handler normalises it; a copy is spliced from it), so a copy is
checked with three `bytes.count` calls and dot-stuffed with one `bytes.replace`; addresses are
sent exactly as relay.addresses accepted them (checked here only for characters that could inject
a command); MAIL, every RCPT and DATA go out in one write when the upstream offers PIPELINING,
and the message and its final dot in one more: two round trips per transaction.

Replies are returned, not raised: `Transaction` holds the MAIL reply, one reply per RCPT and
the DATA reply (the 354 refusal or the final reply); relay.delivery turns them into outcomes.
Connection trouble (reset, EOF, timeout) raises `Trouble`; the connection is unusable then.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_REPLY = 32 * 1024  # a reply (all its lines) longer than this is trouble
DATA_CHUNK = 1 << 20  # a message bigger than this is stuffed and written a chunk at a time
_UNSAFE = re.compile(r"[\x00-\x20\x7f<>]")  # never inside an address on a command line
_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")


class Trouble(Exception):
    """The connection broke, timed out or spoke something that is not SMTP."""


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def parse_replies(buf: bytearray) -> tuple[list[Reply], int]:
    """The complete replies at the start of `buf` and how many bytes they took. A line that
    does not start with three digits raises Trouble."""
    out: list[Reply] = []
    pos = done = 0
    lines: list[bytes] = []
    while True:
        end = buf.find(b"\n", pos)
        if end < 0:
            break
        line = bytes(buf[pos:end + 1])
        pos = end + 1
        code = line[:3]
        if not code.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
            raise Trouble(f"not an SMTP reply: {line[:60]!r}")
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            out.append(Reply(int(code), b"\n".join(lines).decode("utf-8", "surrogateescape")))
            lines = []
            done = pos
    return out, done


def wire_body(data: bytes) -> bytes:
    """The message as it goes after DATA: CRLF line ends, dot-stuffed, ending in CRLF (without
    the final "."). Only data with a bare CR or LF needs the regular expression."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_ENDS.sub(b"\r\n", data)
    data = data.replace(b"\r\n.", b"\r\n..")
    if data[:1] == b".":
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def check_address(address: str) -> str:
    """The address as it goes in `<...>`; ValueError for one that could inject a command."""
    if _UNSAFE.search(address):
        raise ValueError(f"address {address!r} cannot go on an SMTP command line")
    return address


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.replies: deque[Reply] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.paused = False
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def _wake(self) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            replies, used = parse_replies(self.buf)
        except Trouble as e:
            self._fail(e)
            return
        if used:
            del self.buf[:used]
            self.replies.extend(replies)
            self._wake()
        elif len(self.buf) > MAX_REPLY:
            self._fail(Trouble("reply too long"))

    def _fail(self, e: Exception) -> None:
        if self.error is None:
            self.error = e
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def eof_received(self) -> bool:
        if self.error is None:
            self.error = Trouble("the upstream closed the connection")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = Trouble(f"connection lost: {exc}" if exc else "connection lost")
        self.transport = None
        self._wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def reply(self, timeout: float) -> Reply:
        while not self.replies:
            if self.error is not None:
                raise self.error
            w = self.waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._timeout, w)
            try:
                await w
            finally:
                timer.cancel()
        return self.replies.popleft()

    def _timeout(self, w: asyncio.Future[None]) -> None:
        if not w.done():
            self._fail(Trouble("timed out waiting for the upstream's reply"))

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise self.error or Trouble("connection lost")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.paused and self.transport is not None:
            self.drained = self.loop.create_future()
            await self.drained
        if self.error is not None:
            raise self.error


@dataclass
class Transaction:
    """What the upstream answered: MAIL, each RCPT (in order), DATA (None: not reached)."""

    mail: Reply
    rcpts: list[Reply] = field(default_factory=list)
    data: Reply | None = None


class Connection:
    """One upstream SMTP connection after its greeting and EHLO (or HELO)."""

    def __init__(self, proto: _Protocol, timeout: float, extensions: dict[str, str]) -> None:
        self._p = proto
        self.timeout = timeout
        self.extensions = extensions

    @classmethod
    async def open(cls, host: str, port: int, timeout: float, local_hostname: str
                   ) -> Connection:
        """Connect, read the greeting, say EHLO (HELO if EHLO is refused). Raises Trouble or
        OSError/TimeoutError for the connection, Refused for a greeting or EHLO/HELO that is
        not 2xx."""
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(loop), host, port), timeout)
        conn = cls(proto, timeout, {})
        try:
            greeting = await proto.reply(timeout)
            if greeting.code != 220:
                raise Refused(greeting)
            ehlo = await conn.command(f"EHLO {local_hostname}")
            if ehlo.ok:
                for line in ehlo.text.split("\n")[1:]:
                    kw, _, params = line.strip().partition(" ")
                    conn.extensions[kw.lower()] = params
            else:
                helo = await conn.command(f"HELO {local_hostname}")
                if not helo.ok:
                    raise Refused(helo)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def is_connected(self) -> bool:
        t = self._p.transport
        return t is not None and not t.is_closing() and self._p.error is None

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    async def command(self, line: str) -> Reply:
        self._p.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return await self._p.reply(self.timeout)

    async def send(self, sender: str, rcpts: Sequence[str], data: bytes,
                   mail_options: Sequence[str] = (), stuffed: bool = False) -> Transaction:
        """One transaction. `stuffed`: data is wire_body() of the message already (made in a
        worker process). ValueError for an address that cannot go on a command line (nothing
        sent), NotSupported for SMTPUTF8 the upstream lacks, Trouble for the connection."""
        utf8 = any(o.upper() == "SMTPUTF8" for o in mail_options)
        if utf8 and not self.supports("smtputf8"):
            raise NotSupported("SMTPUTF8 is not supported by the upstream")
        enc = "utf-8" if utf8 else "ascii"
        try:
            mail_to = [check_address(r).encode(enc) for r in rcpts]
            mail_from = check_address(sender).encode(enc)
        except UnicodeEncodeError as e:
            raise ValueError(f"address not in {enc}: {e}") from None
        if stuffed:
            body: bytes | None = data
        else:
            body = wire_body(data) if len(data) <= DATA_CHUNK else None
        options = list(mail_options)
        if self.supports("size"):
            options.insert(0, f"SIZE={len(body) if body is not None else len(data)}")
        mail = b"MAIL FROM:<" + mail_from + b">" + "".join(
            f" {o}" for o in options).encode("ascii", "surrogateescape") + b"\r\n"
        p, timeout = self._p, self.timeout
        rcpt_lines = [b"RCPT TO:<" + r + b">\r\n" for r in mail_to]
        if self.supports("pipelining"):
            p.write(b"".join([mail, *rcpt_lines, b"DATA\r\n"]))
            t = Transaction(await p.reply(timeout))
            for _ in rcpt_lines:
                t.rcpts.append(await p.reply(timeout))
            t.data = await p.reply(timeout)
        else:
            p.write(mail)
            t = Transaction(await p.reply(timeout))
            if t.mail.ok:
                for line in rcpt_lines:
                    p.write(line)
                    t.rcpts.append(await p.reply(timeout))
                if any(r.ok for r in t.rcpts):
                    p.write(b"DATA\r\n")
                    t.data = await p.reply(timeout)
        accepted = t.mail.ok and any(r.ok for r in t.rcpts)
        if t.data is not None and t.data.code == 354:
            if not accepted:  # 354 with nobody to deliver to: end an empty message
                p.write(b".\r\n")
                await p.reply(timeout)
                t.data = Reply(554, "5.5.1 no valid recipients")
            else:
                if body is not None and len(body) > DATA_CHUNK:
                    for i in range(0, len(body), DATA_CHUNK):  # the event loop runs between
                        p.write(body[i:i + DATA_CHUNK])
                        await p.drain()
                        await asyncio.sleep(0)
                elif body is not None:
                    p.write(body)
                else:
                    await self._write_chunked(data)
                p.write(b".\r\n")
                t.data = await p.reply(timeout)
        if not (accepted and t.data is not None and t.data.ok) and self.is_connected:
            await self.command("RSET")  # a fresh envelope for the next transaction
        return t

    async def _write_chunked(self, data: bytes) -> None:
        """A big message a chunk at a time (cut after a line end), the event loop running in
        between, each chunk written when the transport has room."""
        pos, n = 0, len(data)
        while pos < n:
            end = data.rfind(b"\n", pos, pos + DATA_CHUNK) + 1 if pos + DATA_CHUNK < n else n
            if end <= pos:  # no line end in the window (cannot be sent anyway)
                end = min(n, pos + DATA_CHUNK)
            chunk = data[pos:end]
            crlf = chunk.count(b"\r\n")
            if chunk.count(b"\n") != crlf or chunk.count(b"\r") != crlf:
                chunk = _LINE_ENDS.sub(b"\r\n", chunk)
            chunk = chunk.replace(b"\r\n.", b"\r\n..")
            if chunk[:1] == b".":  # the chunk starts a line
                chunk = b"." + chunk
            if end == n and not chunk.endswith(b"\r\n"):
                chunk += b"\r\n"
            self._p.write(chunk)
            del chunk
            pos = end
            await self._p.drain()
            await asyncio.sleep(0)

    async def quit(self) -> None:
        try:
            await self.command("QUIT")
        finally:
            self.close()

    def close(self) -> None:
        if self._p.transport is not None:
            self._p.transport.close()
        if self._p.error is None:
            self._p.error = Trouble("connection closed")


class Refused(Exception):
    """The greeting or EHLO/HELO was not accepted."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code} {reply.text}")
        self.reply = reply


class NotSupported(Exception):
    """The transaction needs an extension the upstream does not offer."""
