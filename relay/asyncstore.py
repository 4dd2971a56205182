"""The Store used from the event loop: one dedicated thread (sqlite connections belong to
their thread; fsyncs must not block the event loop), a typed async method per operation, and
copy outcomes group-committed (`submit_copy`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from . import lease
from .outcomes import Outcome
from .scheme import Scheme
from .store import Store, StoreError, open_store
from .storeschema import redact

T = TypeVar("T")


class AsyncStore:
    """The Store used from one dedicated thread (sqlite connections belong to their thread;
    fsyncs must not block the event loop). Copy outcomes are group-committed."""

    def __init__(self, path: Path, url: str | None = None) -> None:
        self.path = path
        self.url = url  # [store] url: PostgreSQL instead of the SQLite file `path`
        self.name = redact(url) if url else str(path)  # for messages: never a password
        self._ex = ThreadPoolExecutor(1, thread_name_prefix="relay-store")
        self._store: Store | None = None
        self._batch: list[tuple[str, str, Outcome, asyncio.Future[None]]] = []
        self._flushing = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._ex,
                                                 lambda: open_store(self.path, self.url))

    async def run(self, fn: Callable[[Store], T]) -> T:
        """Run fn(store) in the store thread (the methods below; maintenance, tests)."""
        store = self._store
        if store is None:
            raise StoreError(f"{self.name}: database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._ex, fn, store)

    # one method per store operation the relay uses (relay.store.Store has the details)

    async def record_message(self, entry: Mapping[str, Any]) -> None:
        """Log a fingerprinted message once; `entry`: fingerprint.Prepared.log_entry()."""
        await self.run(lambda s: s.record_message(**entry))

    async def signing_of(self, identity: str) -> tuple[str, Scheme] | None:
        return await self.run(lambda s: s.signing_of(identity))

    async def add_copies(self, identity: str, recipients: Sequence[str]) -> None:
        await self.run(lambda s: s.add_copies(identity, recipients))

    async def copy_details(self, identity: str) -> dict[str, tuple[str, str | None]]:
        return await self.run(lambda s: s.copy_details(identity))

    async def set_copy_states(self, identity: str,
                              rows: Sequence[tuple[str, str, str | None]]) -> None:
        await self.run(lambda s: s.set_copy_states(identity, rows))

    async def delivery_states(self, identity: str) -> dict[str, tuple[str, str | None]]:
        return await self.run(lambda s: s.delivery_states(identity))

    async def set_delivery_states(self, identity: str,
                                  rows: Sequence[tuple[str, str, str | None]]) -> None:
        await self.run(lambda s: s.set_delivery_states(identity, rows))

    async def prune_deliveries(self, older_than: float) -> int:
        return await self.run(lambda s: s.prune_deliveries(older_than))

    async def notice_state(self, identity: str) -> str | None:
        return await self.run(lambda s: s.notice_state(identity))

    async def set_notice_state(self, identity: str, state: str, reply: str | None) -> None:
        await self.run(lambda s: s.set_notice_state(identity, state, reply))

    # claims across relays (relay.claims decides, relay.lease has the SQL)

    async def claim_holder(self, identity: str) -> tuple[str, float] | None:
        return await self.run(lambda s: lease.holder(s, identity))

    async def take_claim(self, identity: str, owner: str, now: float, until: float) -> bool:
        return await self.run(lambda s: lease.take(s, identity, owner, now, until))

    async def seize_claim(self, identity: str, gone: str, owner: str, until: float) -> bool:
        return await self.run(lambda s: lease.seize(s, identity, gone, owner, until))

    async def release_claim(self, identity: str, owner: str, now: float) -> None:
        await self.run(lambda s: lease.release(s, identity, owner, now))

    # copy outcomes, group-committed

    def submit_copy(self, identity: str, rcpt: str, out: Outcome) -> asyncio.Future[None]:
        """Queue one copy's outcome for commit and return at once. If the store thread is idle
        it starts on it now, before the caller does anything else: the time between an
        upstream 250 and its durable record (the window in which a kill -9 makes the retry send
        that copy again) is one commit, not a wait for the event loop. Outcomes arriving during
        a commit go together in the next one (group commit)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((identity, rcpt, out, fut))
        if not self._flushing:
            self._flushing = True
            self._commit_batch()
        return fut

    def _commit_batch(self) -> None:
        batch, self._batch = self._batch, []
        by_id: dict[str, list[tuple[str, str, str | None]]] = {}
        for identity, rcpt, out, _ in batch:
            by_id.setdefault(identity, []).append((rcpt, out.state, out.reply))
        store = self._store

        def commit() -> None:
            if store is None:
                raise StoreError(f"{self.name}: database is not open")
            for identity, rows in by_id.items():
                store.set_copy_states(identity, rows)

        done = asyncio.wrap_future(self._ex.submit(commit))
        done.add_done_callback(lambda f: self._committed(batch, f))

    def _committed(self, batch: list[tuple[str, str, Outcome, asyncio.Future[None]]],
                   f: asyncio.Future[None]) -> None:
        err: BaseException | None = None
        if f.cancelled():
            err = StoreError(f"{self.name}: commit cancelled")
        elif f.exception() is not None:
            e = f.exception()
            err = e if isinstance(e, StoreError) else StoreError(f"{self.name}: {e}")
        for *_, fut in batch:  # never leave a waiter hanging
            if not fut.done():
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)
        if self._batch:
            self._commit_batch()
        else:
            self._flushing = False

    async def close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self.run(Store.close)
        self._ex.shutdown(wait=True)
