"""The upstream pool against a real aiosmtpd sink on loopback: each recipient's outcome, the
connection kept for the next send, replaced after trouble; an upstream that is down."""

from __future__ import annotations

from conftest import Sink, free_port, make_message

from relay.config import Upstream
from relay.outcomes import ACCEPTED, PERMFAIL, TEMPFAIL
from relay.upstream import UpstreamPool

A, B = "a@example.com", "b@example.com"


async def test_each_recipient_gets_its_outcome_and_the_connection_is_kept(sink: Sink) -> None:
    sink.rcpt_replies[B] = "550 5.1.1 <b@example.com>: no such user"
    pool = UpstreamPool(Upstream(port=sink.port, concurrency=1, timeout=5.0), "relay.test")
    try:
        data = make_message(to=A)
        got = await pool.send("boss@example.com", [A, B], data)
        assert {r: (o.state, o.reply) for r, o in got.items()} == {
            A: (ACCEPTED, "250 accepted"),
            B: (PERMFAIL, "550 5.1.1 <b@example.com>: no such user")}
        assert [(m.mail_from, m.rcpt_tos, m.data) for m in sink.messages] == [
            ("boss@example.com", [A], data)]
        got = await pool.send("<>", [A], data)
        assert got[A].state == ACCEPTED
        assert sink.messages[-1].mail_from == "<>"
        assert sink.connections == 1  # one connection for both transactions
    finally:
        await pool.close()


async def test_a_connection_lost_mid_data_is_temporary_and_replaced(sink: Sink) -> None:
    pool = UpstreamPool(Upstream(port=sink.port, concurrency=1, timeout=5.0), "relay.test")
    try:
        sink.drop_after = 0
        got = await pool.send("boss@example.com", [A], make_message(to=A))
        assert got[A].state == TEMPFAIL and got[A].reply.startswith("451 4.4.2 "), got
        sink.drop_after = None
        got = await pool.send("boss@example.com", [A], make_message(to=A))
        assert got[A].state == ACCEPTED
        assert sink.connections == 2
    finally:
        await pool.close()


async def test_an_upstream_that_is_down_is_a_temporary_failure() -> None:
    port = free_port()  # nothing listens there
    pool = UpstreamPool(Upstream(port=port, concurrency=2, timeout=5.0), "relay.test")
    try:
        got = await pool.send("boss@example.com", [A, B], make_message(to=A))
        assert {o.state for o in got.values()} == {TEMPFAIL}
        assert got[A].reply.startswith(f"451 4.4.1 upstream 127.0.0.1:{port} unreachable"), got
    finally:
        await pool.close()
