"""The store adapter the event loop uses: typed calls in the store thread, copy outcomes
group-committed (real SQLite files, a real PostgreSQL server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pgserver import Backend

from relay.asyncstore import AsyncStore
from relay.outcomes import Outcome
from relay.scheme import SCHEME
from relay.store import ACCEPTED, PERMFAIL


async def test_copy_outcome_is_committed_before_the_worker_moves_on(
        tmp_path: Path, backend: Backend) -> None:
    """submit_copy hands the outcome to the database thread at once: by the time that thread
    has finished what it was given, the row is durable, although the event loop never ran in
    between (no await). Two outcomes submitted during one commit go together in the next."""
    db = tmp_path / "r.db"
    store = AsyncStore(db, backend.url)
    await store.open()
    try:
        await store.record_message(dict(identity="i1", key_id="k1", scheme=SCHEME.with_rate(1 / 6),
                                        sender="boss@example.com", message_id=None, subject=None,
                                        date=None, size=1, documents=[], doc_shingles=[]))
        await store.add_copies("i1", ["a@example.com", "b@example.com", "c@example.com"])
        fut = store.submit_copy("i1", "a@example.com", Outcome(ACCEPTED, "250 ok"))
        b = store.submit_copy("i1", "b@example.com", Outcome(ACCEPTED, "250 ok"))
        c = store.submit_copy("i1", "c@example.com", Outcome(PERMFAIL, "550 no"))
        store._ex.submit(lambda: None).result(timeout=10)  # the store thread, not the loop
        conn = backend.store(db).db  # another connection: what is durable, not what is cached
        states = dict(conn.execute("SELECT recipient, state FROM copies").fetchall())
        assert states["a@example.com"] == ACCEPTED
        assert not fut.done()  # the loop has not run yet: durability did not wait for it
        await asyncio.gather(fut, b, c)
        states = dict(conn.execute("SELECT recipient, state FROM copies").fetchall())
        assert states == {"a@example.com": ACCEPTED, "b@example.com": ACCEPTED,
                          "c@example.com": PERMFAIL}
        conn.close()
    finally:
        await store.close()
