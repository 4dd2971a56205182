"""relay.smtpclient: reply parsing, the DATA body, address checks (tables); PIPELINING and the
transaction's replies against real servers on loopback (a recording server written here, the
aiosmtpd sink, Postfix's smtp-sink)."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from conftest import Sink, free_port, require_tool

from relay.smtpclient import Connection, Reply, Trouble, check_address, parse_replies, wire_body


@pytest.mark.parametrize(("buf", "replies", "used"), [
    (b"250 ok\r\n", [Reply(250, "ok")], 8),
    (b"250 ok\r\n354 go", [Reply(250, "ok")], 8),
    (b"250-a\r\n250-PIPELINING\r\n250 SIZE 10\r\n", [Reply(250, "a\nPIPELINING\nSIZE 10")], 36),
    (b"250-a\r\n", [], 0),
    (b"250 ok\r\n550 5.1.1 no\r\n354 go\r\n",
     [Reply(250, "ok"), Reply(550, "5.1.1 no"), Reply(354, "go")], 30),
    (b"250\r\n", [Reply(250, "")], 5),
    (b"", [], 0),
])
def test_parse_replies(buf: bytes, replies: list[Reply], used: int) -> None:
    assert parse_replies(bytearray(buf)) == (replies, used)


@pytest.mark.parametrize("buf", [b"hello\r\n", b"25 ok\r\n", b"250x\r\n"])
def test_parse_replies_refuses_what_is_not_smtp(buf: bytes) -> None:
    with pytest.raises(Trouble):
        parse_replies(bytearray(buf))


@pytest.mark.parametrize(("data", "wire"), [
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\r\nb", b"a\r\nb\r\n"),
    (b".a\r\n.\r\n..b\r\nc.\r\n", b"..a\r\n..\r\n...b\r\nc.\r\n"),
    (b"a\nb\rc\r\n.d\n", b"a\r\nb\r\nc\r\n..d\r\n"),  # bare LF / CR: normalised first
    (b"a\n.\nb", b"a\r\n..\r\nb\r\n"),  # never an end of data inside the content
    (b"", b"\r\n"),
])
def test_wire_body(data: bytes, wire: bytes) -> None:
    assert wire_body(data) == wire


@pytest.mark.parametrize(("address", "ok"), [
    ("a@example.com", True), ('"john..doe"@example.com', True), ("", True),
    ("ü@example.com", True),
    ("a b@example.com", False), ("a>@x", False), ("a\r\nRCPT TO:<x>@x", False),
    ("a\x00@x", False), ("a\x7f@x", False),
])
def test_check_address(address: str, ok: bool) -> None:
    if ok:
        assert check_address(address) == address
    else:
        with pytest.raises(ValueError):
            check_address(address)


class Recorder:
    """A minimal SMTP server that offers PIPELINING (or not) and records each read: which
    commands arrived together before it answered any of them."""

    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.reads: list[bytes] = []
        self.messages: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 rec\r\n")
        buf = b""
        data: list[bytes] | None = None
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            self.reads.append(chunk)
            buf += chunk
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                if data is not None:
                    if line == b".":
                        self.messages.append(b"".join(data))
                        data = None
                        writer.write(b"250 2.0.0 taken\r\n")
                    else:  # dot-stuffing undone
                        data.append(line[1:] + b"\r\n" if line[:1] == b"." else line + b"\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    ext = b"250-PIPELINING\r\n" if self.pipelining else b""
                    writer.write(b"250-rec\r\n" + ext + b"250 8BITMIME\r\n")
                elif verb == b"RCPT" and b"refuse" in line:
                    writer.write(b"550 5.1.1 no such user\r\n")
                elif verb == b"DATA":
                    data = []
                    writer.write(b"354 go\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    writer.close()
                    return
                else:
                    writer.write(b"250 ok\r\n")
            await writer.drain()


async def recorded(pipelining: bool, rcpts: list[str], data: bytes) -> tuple[Recorder, object]:
    rec = Recorder(pipelining)
    server = await asyncio.start_server(rec.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await Connection.open("127.0.0.1", port, 10, "relay.test")
        t = await conn.send("a@example.com", rcpts, data)
        await conn.quit()
    finally:
        server.close()
    return rec, t


async def test_pipelining_sends_mail_rcpt_and_data_together() -> None:
    data = b"Subject: x\r\n\r\n.dot\r\nend\r\n"
    rec, t = await recorded(True, ["b@example.com", "c@example.com"], data)
    assert rec.reads[1] == (b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                            b"RCPT TO:<c@example.com>\r\nDATA\r\n")
    assert rec.messages == [data]
    assert t.mail.ok and [r.code for r in t.rcpts] == [250, 250] and t.data.code == 250


async def test_without_pipelining_one_command_at_a_time() -> None:
    data = b"Subject: x\r\n\r\nbody\r\n"
    rec, t = await recorded(False, ["b@example.com"], data)
    assert rec.reads[1] == b"MAIL FROM:<a@example.com>\r\n"
    assert rec.reads[2] == b"RCPT TO:<b@example.com>\r\n"
    assert rec.messages == [data]
    assert t.data.code == 250


@pytest.mark.parametrize("pipelining", [True, False])
async def test_refused_recipients_are_reported_each(pipelining: bool) -> None:
    rec, t = await recorded(pipelining, ["refuse@example.com", "b@example.com"], b"x\r\n")
    assert [r.code for r in t.rcpts] == [550, 250] and t.data.code == 250
    assert rec.messages == [b"x\r\n"]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_every_recipient_refused_sends_no_message(pipelining: bool) -> None:
    rec, t = await recorded(pipelining, ["refuse@example.com"], b"x\r\n")
    assert [r.code for r in t.rcpts] == [550]
    assert t.data is None or not t.data.ok
    assert rec.messages in ([], [b""])  # at most an empty message after a pipelined 354


async def test_aiosmtpd_sink_without_pipelining(sink: Sink) -> None:
    conn = await Connection.open("127.0.0.1", sink.port, 10, "relay.test")
    assert not conn.supports("pipelining")
    for i in range(3):
        t = await conn.send("a@example.com", [f"r{i}@example.com"], b"S: x\r\n\r\n.x\r\n")
        assert t.data is not None and t.data.code == 250
    await conn.quit()
    assert [m.data for m in sink.messages] == [b"S: x\r\n\r\n.x\r\n"] * 3


async def test_postfix_smtp_sink_offers_pipelining() -> None:
    exe = require_tool("smtp-sink", "/usr/sbin/smtp-sink")
    port = free_port()
    p = subprocess.Popen([exe, "-u", "nobody", f"127.0.0.1:{port}", "10"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                conn = await Connection.open("127.0.0.1", port, 10, "relay.test")
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert conn.supports("pipelining")
        for i in range(5):
            t = await conn.send("a@example.com", [f"r{i}@example.com", "s@example.com"],
                                b"Subject: x\r\n\r\n.\r\n..\r\nbody\r\n")
            assert t.mail.ok and all(r.ok for r in t.rcpts) and t.data.code == 250
        await conn.quit()
    finally:
        p.terminate()
        p.wait()
