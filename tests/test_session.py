"""relay.session: the Gate every connection meets first (`[listen] allow`, the connection
limits: one line, then closed, before an SMTP session exists) and the per-connection counts the
handler keeps, over loopback."""

from __future__ import annotations

import asyncio

from conftest import Client, Sink, StartRelay, make_message, smtp_send

from relay.config import Config


async def test_client_outside_allow_is_refused_at_connect(cfg: Config, start_relay: StartRelay,
                                                          sink: Sink) -> None:
    from ipaddress import ip_network

    relay = await start_relay(cfg.with_keys(listen=dict(allow=(ip_network("10.0.0.0/8"),))))
    c = await Client.connect(relay.port)
    greeting = await c.reply()
    assert greeting.startswith("554 5.7.1")
    assert await c.reader.read() == b""  # and the connection is closed
    await c.close()
    assert sink.messages == []


async def test_connection_limits(cfg: Config, start_relay: StartRelay, sink: Sink) -> None:
    relay = await start_relay(cfg.with_keys(listen=dict(max_connections=6,
                                                        max_connections_per_client=3)))
    held = []
    for _ in range(3):
        c = await Client.connect(relay.port)
        assert (await c.reply()).startswith("220")
        held.append(c)
    r, w = await asyncio.open_connection("127.0.0.1", relay.port)
    c = Client(r, w)
    assert (await c.reply()).startswith("421 4.7.0 too many connections from your address")
    assert await r.read() == b""
    await c.close()
    for i in range(3):  # other clients still get in, up to the global limit
        r, w = await asyncio.open_connection("127.0.0.1", relay.port,
                                             local_addr=(f"127.0.0.{i + 2}", 0))
        c = Client(r, w)
        assert (await c.reply()).startswith("220")
        held.append(c)
    r, w = await asyncio.open_connection("127.0.0.1", relay.port, local_addr=("127.0.0.9", 0))
    c = Client(r, w)
    assert (await c.reply()).startswith("421 4.7.0 too many connections,")
    await c.close()
    for c in held:
        await c.close()
    await asyncio.sleep(0.2)
    assert not relay.handler.per_client  # every count went back to zero
    reply = await smtp_send(relay.port, "a@example.com", ["b@example.com"],
                            make_message(to="b@example.com"))
    assert reply.startswith("250") and len(sink.messages) == 1
