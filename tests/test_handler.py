"""relay.handler: the aiosmtpd hooks (MAIL, RCPT, DATA, errors), over loopback into a recording
aiosmtpd sink: envelope paths refused or passed exactly as written, the recipient limit, bare
CR/LF normalised so nothing is smuggled, one 451 for an unexpected error, warnings at a
bounded rate."""

from __future__ import annotations

import asyncio
import logging

import pytest
from conftest import Client, Sink, StartRelay, make_message, smtp_send

from relay.config import Config


def test_warn_holds_repeats_back_and_counts_them(caplog) -> None:
    from relay.handler import Handler

    caplog.set_level(logging.INFO, logger="relay")
    h = Handler.__new__(Handler)  # warn() needs only the throttle
    from relay import limits

    h.throttle = limits.LogThrottle(60.0)
    assert h.warn("refused x", key="k") is True
    assert [h.warn("refused x", key="k") for _ in range(4)] == [False] * 4
    h.throttle.interval = 0.0  # the minute is over
    assert h.warn("refused x", key="k") is True
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["refused x", "refused x (4 more since the last such line)"]


def test_queue_ids_are_distinct_hex() -> None:
    from relay.handler import new_qid

    ids = {new_qid() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 10 and int(i, 16) >= 0 for i in ids)


async def test_null_sender_and_source_route(relay, sink: Sink) -> None:
    data = make_message(to="bob@example.com")
    c = await Client.connect(relay.port)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<>")).startswith("250")
    assert (await c.cmd("RCPT TO:<@hop.example,@hop2.example:bob@example.com>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    assert (await c.cmd(data + b".")).startswith("250")
    await c.close()
    assert sink.messages[0].mail_from == "<>"
    assert sink.messages[0].rcpt_tos == ["bob@example.com"]  # the route is dropped


async def test_utf8_address_needs_smtputf8(relay, sink: Sink) -> None:
    reply = await smtp_send(relay.port, "a@example.com", ["jürgen@exämple.de"], b"x\r\n")
    assert reply.startswith("553 5.6.7")
    reply = await smtp_send(relay.port, "zoë@example.com", ["b@example.com"], b"x\r\n")
    assert reply.startswith("553 5.6.7")
    assert sink.messages == []


@pytest.mark.parametrize("rcpt,code", [
    ("a%b@example.net", "553 5.7.1"),
    ("b!a@example.net", "553 5.7.1"),
    ('"a@b"@example.net', "553 5.7.1"),
    ("a@[192.0.2.1]", "550 5.7.1"),
    ("@example.net", "553 5.1.3"),
    ("a(x)@example.net", "553 5.1.3"),
    ("x" * 65 + "@example.net", "553 5.1.3"),
    ("a, b@example.net", "553"),
    ("outsider@other.example", "550 5.7.1"),
])
async def test_open_relay_forms_are_refused(cfg: Config, start_relay: StartRelay, sink: Sink,
                                            rcpt: str, code: str) -> None:
    relay = await start_relay(cfg.with_keys(listen=dict(domains=("example.net",))))
    c = await Client.connect(relay.port)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<a@example.com>")).startswith("250")
    reply = await c.cmd(f"RCPT TO:<{rcpt}>")
    assert reply.startswith(code), reply
    assert (await c.cmd("RCPT TO:<ok@example.net>")).startswith("250")
    await c.close()


async def test_malformed_paths(relay, sink: Sink) -> None:
    c = await Client.connect(relay.port)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<a@example.com")).startswith("553")
    assert (await c.cmd("MAIL FROM:<a%b@example.com>")).startswith("553 5.7.1")
    assert (await c.cmd("MAIL FROM:<a@example.com>")).startswith("250")
    assert (await c.cmd("RCPT TO:<@-bad-:x@example.com>")).startswith("553")
    await c.close()


async def test_too_many_recipients(cfg: Config, start_relay: StartRelay, sink: Sink) -> None:
    relay = await start_relay(cfg.with_keys(listen=dict(max_recipients=3),
                                            policy=dict(min_recipients=0)))
    c = await Client.connect(relay.port)
    await c.reply()
    await c.cmd("EHLO client.test")
    await c.cmd("MAIL FROM:<a@example.com>")
    for i in range(3):
        assert (await c.cmd(f"RCPT TO:<r{i}@example.com>")).startswith("250")
    assert (await c.cmd("RCPT TO:<r9@example.com>")).startswith("452 4.5.3")
    await c.cmd("DATA")
    assert (await c.cmd(make_message(to="x@example.com") + b".")).startswith("250")
    await c.close()
    assert sink.messages[0].rcpt_tos == ["r0@example.com", "r1@example.com", "r2@example.com"]


async def test_bare_lf_is_normalised_and_never_smuggles(relay, sink: Sink) -> None:
    c = await Client.connect(relay.port)
    await c.reply()
    await c.cmd("EHLO client.test")
    await c.cmd("MAIL FROM:<a@example.com>")
    await c.cmd("RCPT TO:<b@example.com>")
    await c.cmd("DATA")
    payload = (b"Subject: smuggle\r\nTo: b@example.com\r\n\r\nline one\n.\nMAIL FROM:<evil@x>\n"
               b"RCPT TO:<victim@example.com>\nDATA\nevil\r.\rmore\r\n")
    reply = await c.cmd(payload + b".")
    assert reply.startswith("250")
    await c.close()
    assert len(sink.messages) == 1
    m = sink.messages[0]
    assert m.rcpt_tos == ["b@example.com"]
    assert m.data == (b"Subject: smuggle\r\nTo: b@example.com\r\n\r\nline one\r\n.\r\n"
                      b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
                      b"evil\r\n.\r\nmore\r\n")


async def test_handle_exception_answers_451(relay, sink: Sink) -> None:
    from relay.handler import Handler

    assert relay.handler is not None
    assert (await Handler.handle_exception(relay.handler, RuntimeError("boom"))).startswith(
        "451 4.3.0")


async def test_refusals_are_logged_at_a_bounded_rate(cfg: Config, start_relay: StartRelay,
                                                     sink: Sink, caplog) -> None:
    import logging
    from ipaddress import ip_network

    relay = await start_relay(cfg.with_keys(listen=dict(allow=(ip_network("10.0.0.0/8"),))))
    caplog.set_level(logging.INFO, logger="relay")
    for _ in range(50):
        c = await Client.connect(relay.port)
        assert (await c.reply()).startswith("554")
        await c.close()
    lines = [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]
    assert lines == ["refused connection from 127.0.0.1 (not in [listen] allow)"]
    relay.handler.throttle.interval = 0.0  # the minute is over: the next line counts the rest
    relay.handler.flush_warnings()
    assert any("49 more" in r.getMessage() for r in caplog.records)


async def test_accept_errors_are_one_line_per_interval(relay, caplog) -> None:
    import errno
    import logging

    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    for _ in range(100):
        loop.call_exception_handler({
            "message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files")})
    lines = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert lines[0].getMessage() == "socket.accept() out of system resource: Too many open files"


async def test_smtputf8_address_with_c1_or_bidi_is_refused(relay, sink: Sink) -> None:
    for rcpt in ("a\u009b31m@example.com", "b\u202eob@example.com"):
        reply = await smtp_send(relay.port, "a@example.com", [rcpt], b"x\r\n",
                                mail_options="SMTPUTF8")
        assert reply.startswith("553 5.1.3"), reply
    reply = await smtp_send(relay.port, "\u202eb@example.com", ["b@example.com"], b"x\r\n",
                            mail_options="SMTPUTF8")
    assert reply.startswith("553 5.1.3"), reply
    assert sink.messages == []
