"""relay.fanout, directly: one fan-out's copies through a real upstream pool into an aiosmtpd
sink on loopback, outcomes group-committed to a real SQLite log, copies made in real analysis
worker processes or in this process. The relay around it is tested in tests/test_delivery.py and
tests/test_crash.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import mimesamples
import pytest
import pytest_asyncio
from conftest import Sink
from pgserver import Backend

from relay import analysis
from relay.asyncstore import AsyncStore
from relay.config import Upstream
from relay.delivery import Transaction
from relay.fanout import send_copies
from relay.fingerprint import Prepared, prepare
from relay.metrics import Metrics
from relay.outcomes import ACCEPTED, PERMFAIL, TEMPFAIL
from relay.policy import normalise_newlines
from relay.scheme import SCHEME
from relay.upstream import UpstreamPool

BOSS = "boss@example.com"
STAFF = [f"staff{i:03d}@example.com" for i in range(40)]


@pytest_asyncio.fixture
async def store(tmp_path: Path, backend: Backend) -> AsyncIterator[AsyncStore]:
    s = AsyncStore(tmp_path / "relay.db", backend.url)  # each test on SQLite and PostgreSQL
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    raw = normalise_newlines(mimesamples.build(mimesamples.prose()))  # as relay.handler does
    return prepare(raw, BOSS, "k1", bytes(range(32)), SCHEME.with_rate(1 / 6))


async def fan_out(sink: Sink, store: AsyncStore, p: Prepared, rcpts: list[str],
                  analyser: analysis.Analyser | None, stop_in: float = 60.0) -> dict:
    await store.record_message(p.log_entry(BOSS))
    await store.add_copies(p.identity, rcpts)
    pool = UpstreamPool(Upstream(port=sink.port, concurrency=4, timeout=10.0), "relay.test")
    try:
        txn = Transaction("q1", BOSS, rcpts, [], p.raw)
        return await send_copies(
            txn, p, p.identity, list(rcpts), asyncio.get_running_loop().time() + stop_in,
            pool=pool, store=store, metrics=Metrics(), analyser=analyser, analysis_timeout=20,
            stopping=lambda: False, unrecorded={})
    finally:
        await pool.close()


@pytest.mark.parametrize("in_workers", [False, True])
async def test_each_recipient_gets_its_own_copy_once_and_it_is_recorded(
        sink: Sink, store: AsyncStore, prepared: Prepared, in_workers: bool) -> None:
    sink.rcpt_replies[STAFF[7]] = "550 5.1.1 no such user"
    analyser = analysis.Analyser(1) if in_workers else None
    if analyser is not None:
        analyser.start()
    try:
        got = await fan_out(sink, store, prepared, STAFF, analyser)
    finally:
        if analyser is not None:
            analyser.close()
    assert {r: o.state for r, o in got.items()} == {
        r: PERMFAIL if r == STAFF[7] else ACCEPTED for r in STAFF}
    sent = {m.rcpt_tos[0]: m.data for m in sink.messages}
    assert len(sink.messages) == len(sent) == len(STAFF) - 1  # one transaction each
    assert all(data == prepared.copy_for(r) for r, data in sent.items())
    assert len(set(sent.values())) == len(sent)  # every copy its own
    recorded = await store.copy_details(prepared.identity)
    assert {r: s for r, (s, _) in recorded.items()} == {r: o.state for r, o in got.items()}


async def test_past_its_time_budget_it_starts_no_copy(sink: Sink, store: AsyncStore,
                                                      prepared: Prepared) -> None:
    got = await fan_out(sink, store, prepared, STAFF[:5], None, stop_in=-1)
    assert {o.state for o in got.values()} == {TEMPFAIL}
    assert all("time budget" in o.reply for o in got.values())
    assert sink.messages == []
