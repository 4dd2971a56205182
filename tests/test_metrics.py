"""The [metrics] endpoint of a running relay, scraped over HTTP after real traffic: a fan-out
with one copy refused (so one DSN), an ordinary message, and the health answer."""

from __future__ import annotations

import asyncio

from conftest import Sink, StartRelay, free_port, make_message, smtp_send
from prometheus_client.parser import text_string_to_metric_families

from relay.config import Config
from relay.metrics import Metrics

STAFF = [f"member{i}@example.com" for i in range(10)]


async def http_get(port: int, path: str) -> tuple[int, str]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def samples(text: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def test_metrics_after_a_fanout_show_the_right_counts(cfg: Config, sink: Sink,
                                                           start_relay: StartRelay) -> None:
    port = free_port()
    relay = await start_relay(cfg.with_keys(metrics=dict(listen=("127.0.0.1", port))))
    sink.rcpt_replies[STAFF[7]] = "550 5.1.1 no such user"
    assert (await smtp_send(relay.port, "boss@example.com", STAFF,
                            make_message())).startswith("250")
    sink.rcpt_replies.clear()
    assert (await smtp_send(relay.port, "boss@example.com", ["a@example.com"],
                            make_message(to="a@example.com"))).startswith("250")

    status, body = await http_get(port, "/metrics")
    assert status == 200
    m = samples(body)
    assert m["relay_messages_total{kind=fingerprinted}"] == 1
    assert m["relay_messages_total{kind=ordinary}"] == 1
    assert m["relay_copies_total{outcome=accepted}"] == 9
    assert m["relay_copies_total{outcome=permfail}"] == 1
    assert m["relay_copies_total{outcome=tempfail}"] == 0
    assert m["relay_dsn_total"] == 1
    assert m["relay_replies_total{code=2xx}"] == 2
    assert m["relay_fanout_seconds_count"] == 1 and m["relay_fanout_seconds_sum"] > 0
    assert "member" not in body  # no recipient ever appears

    assert await http_get(port, "/health") == (200, "ok\n")
    assert (await http_get(port, "/nope"))[0] == 404
    relay.deliverer.begin_shutdown()
    assert await http_get(port, "/health") == (503, "stopping\n")


async def test_tempfailed_copies_are_counted(cfg: Config, sink: Sink,
                                             start_relay: StartRelay) -> None:
    relay = await start_relay(cfg)  # counted even when not served
    sink.rcpt_replies[STAFF[2]] = "450 4.2.1 busy"
    reply = await smtp_send(relay.port, "boss@example.com", STAFF, make_message())
    assert reply.startswith("450")
    m = samples(relay.deliverer.metrics.text().decode())
    assert m["relay_copies_total{outcome=tempfail}"] == 1
    assert m["relay_copies_total{outcome=accepted}"] == 9
    assert m["relay_replies_total{code=4xx}"] == 1


def test_metrics_table() -> None:
    m = Metrics()
    m.transaction(True, "250 2.0.0 ok", 1.5)
    m.transaction(False, "451 4.4.1 later", 0.1)
    m.transaction(None, "554 5.7.1 no", 0.0)  # refused before a decision
    s = samples(m.text().decode())
    assert s["relay_messages_total{kind=fingerprinted}"] == 1
    assert s["relay_messages_total{kind=ordinary}"] == 1
    assert (s["relay_replies_total{code=2xx}"], s["relay_replies_total{code=4xx}"],
            s["relay_replies_total{code=5xx}"]) == (1, 1, 1)
    assert s["relay_fanout_seconds_count"] == 1 and s["relay_fanout_seconds_sum"] == 1.5


async def test_metrics_port_taken_is_one_config_error(cfg: Config, start_relay: StartRelay
                                                      ) -> None:
    import socket

    import pytest

    from relay.config import ConfigError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(ConfigError, match="metrics.listen"):
            await start_relay(cfg.with_keys(metrics=dict(listen=("127.0.0.1", taken))))
