"""relay.analysis: the worker processes that analyse all-staff mail and make its copies.

Real spawned workers, no stand-ins: what a worker returns must be what the relay process would
have made itself, and a worker that runs out of time or dies is replaced, never reused.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import mimesamples
import pytest
import pytest_asyncio

from relay import analysis, fingerprint
from relay.scheme import SCHEME
from relay.smtpclient import wire_body

KEY = bytes(range(32))
SENDER = "boss@example.com"
RCPTS = [f"staff{i:03d}@example.com" for i in range(20)]


def job(raw: bytes) -> analysis.Job:
    return analysis.Job(raw, SENDER, "k1", KEY, SCHEME.with_rate(1 / 6), None)


@pytest_asyncio.fixture
async def analyser() -> AsyncIterator[analysis.Analyser]:
    a = analysis.Analyser(workers=1)
    a.start()
    await a.ready()
    try:
        yield a
    finally:
        a.close()


@pytest.fixture(scope="module")
def raw() -> bytes:
    return mimesamples.build(mimesamples.prose())


async def test_a_worker_prepares_what_the_relay_would(analyser: analysis.Analyser,
                                                      raw: bytes) -> None:
    loop = asyncio.get_running_loop()
    got = await analyser.prepare(job(raw), 60, loop.time() + 60)
    here = fingerprint.prepare(raw, SENDER, "k1", KEY, SCHEME.with_rate(1 / 6))
    assert got.raw == raw
    assert got.carriers == here.carriers > 0
    assert got.log_entry(SENDER) == here.log_entry(SENDER)
    for r in RCPTS[:3]:
        assert got.copy_for(r) == here.copy_for(r)


async def test_a_worker_makes_the_copies_ready_for_the_wire(analyser: analysis.Analyser,
                                                            raw: bytes) -> None:
    here = fingerprint.prepare(raw, SENDER, "k1", KEY, SCHEME.with_rate(1 / 6))
    first = await analyser.render("m1", here, RCPTS[:10], 60)
    again = await analyser.render("m1", here, RCPTS[10:], 60)  # the worker kept the message
    assert first + again == [wire_body(here.copy_for(r)) for r in RCPTS]
    assert len(set(first + again)) == len(RCPTS)


async def test_a_worker_that_dies_is_replaced(analyser: analysis.Analyser, raw: bytes) -> None:
    (pid,) = analyser.pids
    os.kill(pid, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    with pytest.raises(analysis.AnalysisFailed, match="died"):
        await analyser.prepare(job(raw), 60, loop.time() + 60)
    await analyser.ready()
    (new,) = analyser.pids
    assert new != pid
    got = await analyser.prepare(job(raw), 60, loop.time() + 60)  # the new one works
    assert got.carriers > 0


async def test_a_worker_over_its_time_limit_is_replaced(analyser: analysis.Analyser) -> None:
    big = mimesamples.build(mimesamples.prose(400))
    (pid,) = analyser.pids
    loop = asyncio.get_running_loop()
    with pytest.raises(analysis.AnalysisFailed, match="took longer than"):
        await analyser.prepare(job(big), 0.001, loop.time() + 60)
    await analyser.ready()
    assert analyser.pids and analyser.pids[0] != pid
