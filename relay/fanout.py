"""Sending the copies of one fan-out (`send_copies`): made ahead in the analysis worker
processes (`CopyFeed`), one upstream transaction each, each outcome committed before the
worker's next copy. The Deliverer (relay.delivery) decides who gets one and the reply."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import analysis, outcomes
from .asyncstore import AsyncStore
from .metrics import Metrics
from .outcomes import TEMPFAIL, Outcome
from .upstream import UpstreamPool

if TYPE_CHECKING:
    from . import fingerprint
    from .delivery import Transaction

log = logging.getLogger("relay")

PREPARE_INLINE = 64 * 1024  # copies of messages bigger than this are made in a thread
RENDER_BATCH = 16  # copies per request to a worker process (fewer for big messages)
RENDER_BATCH_BYTES = 2 << 20  # ... so that a batch is at most about this many bytes


class CopyFeed:
    """The copies of one fan-out, made ahead in the analysis worker processes
    (analysis.Analyser.render), a batch at a time, by as many requests at once as there are
    workers, so that rendering runs on the other core and never holds the event loop. A batch
    a worker fails to make is made here instead (in a thread for a big message). At most
    `ahead` copies wait to be sent (memory: O(message), not O(recipients x message))."""

    def __init__(self, analyser: analysis.Analyser, prepared: fingerprint.Prepared,
                 queue: deque[str], limit: float, big: bool, qid: str) -> None:
        self.analyser, self.prepared, self.queue = analyser, prepared, queue
        self.limit, self.big, self.qid = limit, big, qid
        self.token = secrets.token_hex(8)
        self.batch = max(1, min(RENDER_BATCH, RENDER_BATCH_BYTES // max(1, len(prepared.raw))))
        self.ahead = 2 * self.batch * analyser.size
        self.ready: deque[tuple[str, bytes, bool]] = deque()  # (rcpt, copy, wire-ready)
        self.busy = 0  # recipients in batches being made
        self.left: list[str] = []  # recipients of batches made after stop()
        self.stopped = False
        self.failed = False
        self._more = asyncio.Event()  # a batch is ready, or nothing more will come
        self._room = asyncio.Event()  # copies were taken from `ready`
        loop = asyncio.get_running_loop()
        self._makers = [loop.create_task(self._make()) for _ in range(analyser.size)]

    async def _make(self) -> None:
        try:
            while self.queue and not self.stopped:
                if len(self.ready) >= self.ahead:
                    self._room.clear()
                    await self._room.wait()
                    continue
                batch = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
                self.busy += len(batch)
                try:
                    copies, stuffed = await self._render(batch)
                except BaseException:
                    self.left += batch
                    raise
                finally:
                    self.busy -= len(batch)
                if self.stopped:
                    self.left += batch
                else:
                    self.ready.extend((r, c, stuffed) for r, c in zip(batch, copies, strict=True))
                self._more.set()
        finally:
            self._more.set()

    async def _render(self, batch: list[str]) -> tuple[list[bytes], bool]:
        """The copies, and whether they are wire_body()s already."""
        if not self.failed:
            try:
                return (await self.analyser.render(self.token, self.prepared, batch, self.limit),
                        True)
            except Exception as e:  # AnalysisFailed, RuntimeError (an error in the worker)
                self.failed = True  # the rest of this fan-out is made here
                log.warning("%s copies made in the relay process: %s", self.qid, e)
        if self.big:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                None, lambda: [self.prepared.copy_for(r) for r in batch]), False
        return [self.prepared.copy_for(r) for r in batch], False

    async def get(self) -> tuple[str, bytes, bool] | None:
        """The next (recipient, copy, wire-ready); None when there is none left (or after
        stop())."""
        while not self.stopped:
            if self.ready:
                self._room.set()
                return self.ready.popleft()
            if not self.queue and not self.busy:
                return None
            if all(m.done() for m in self._makers):  # a maker failed: close() says who is left
                return None
            self._more.clear()
            await self._more.wait()
        return None

    def stop(self) -> list[str]:
        """Make nothing more; the recipients of the copies not handed out (those still being
        made come from close())."""
        self.stopped = True
        left = [r for r, *_ in self.ready] + list(self.queue)
        self.ready.clear()
        self.queue.clear()
        self._more.set()
        self._room.set()
        return left

    async def close(self) -> list[str]:
        """Wait for the batches being made; the recipients whose copies were not handed out."""
        left = self.stop()
        for e in await asyncio.gather(*self._makers, return_exceptions=True):
            if isinstance(e, Exception):
                log.error("%s making copies failed: %s: %s", self.qid, type(e).__name__, e)
        left, self.left = left + self.left, []
        return left


class Untouched:
    """Stands for a Prepared message when copies must go out unchanged."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def copy_for(self, recipient: str) -> bytes:
        return self.raw


async def send_copies(txn: Transaction, prepared: fingerprint.Prepared | Untouched,
                      identity: str, todo: list[str], stop_new: float, *, pool: UpstreamPool,
                      store: AsyncStore, metrics: Metrics, analyser: analysis.Analyser | None,
                      analysis_timeout: float, stopping: Callable[[], bool],
                      unrecorded: dict[str, dict[str, tuple[str, Outcome]]],
                      lease: Callable[[], str | None] = lambda: None) -> dict[str, Outcome]:
    """Send one copy to each recipient of `todo`, `pool.size` at a time; each copy's outcome is
    submitted to the store the moment the upstream answers, and a worker sends its next copy
    only once its previous one is durable (at most one accepted-but-unrecorded copy per
    connection). Stops starting copies at `stop_new`, on `stopping()` or on store trouble
    (outcomes.halt), or when `lease()` says why not (relay.lease.Held.halt: the claim on the
    message may run out): the rest are temporary failures, and a final outcome the store could not
    take is kept in `unrecorded` (by identity). Returns every recipient's outcome of this
    attempt."""
    loop = asyncio.get_running_loop()
    queue = deque(todo)
    results: dict[str, Outcome] = {}
    why: list[str] = []
    big = len(txn.data) > PREPARE_INLINE
    feed = (CopyFeed(analyser, prepared, queue, analysis_timeout, big, txn.qid)
            if analyser is not None and not isinstance(prepared, Untouched)
            and todo else None)

    def halt() -> str | None:
        return outcomes.halt(stopping(), loop.time(), stop_new, why[0] if why else lease())

    def give_up(reason: str) -> None:
        left = list(queue)
        queue.clear()
        if feed is not None:
            left += feed.stop()
        for r in left:
            results[r] = Outcome(TEMPFAIL, reason)

    def recorded(rcpt: str, out: Outcome, committed: asyncio.Future[None]) -> None:
        # the copy's record was submitted to the store thread the moment the reply was
        # read (group commit with the other workers); the worker takes its next copy
        # meanwhile, and waits for this record before sending that copy. This callback
        # runs before that worker resumes.
        e = None if committed.cancelled() else committed.exception()
        if e is None and not committed.cancelled():
            return
        if not why:
            log.error("%s store trouble: %s", txn.qid, e or "commit cancelled")
            why.append("451 4.3.0 local database trouble; the rest follows on retry")
        if out.final:  # a temporary outcome needs no memory: the retry resends
            unrecorded.setdefault(identity, {})[rcpt.lower()] = (rcpt, out)

    async def worker() -> None:
        pending: asyncio.Future[None] | None = None
        while True:
            reason = halt()
            if reason is not None:
                give_up(reason)
                return
            stuffed = False
            if feed is not None:  # made ahead in the worker processes
                item = await feed.get()
                if item is None:
                    return
                rcpt, data, stuffed = item
            elif not queue:
                return
            else:
                rcpt = queue.popleft()
                if big:
                    data = await loop.run_in_executor(None, prepared.copy_for, rcpt)
                else:
                    data = prepared.copy_for(rcpt)
            if pending is not None:
                # the previous copy is durable before this one goes out: a kill can
                # leave at most one accepted-but-unrecorded copy per connection
                await asyncio.wait([pending])  # its failure is handled by recorded()
                reason = halt()
                if reason is not None:
                    results[rcpt] = Outcome(TEMPFAIL, reason)
                    give_up(reason)
                    return
            out = (await pool.send(txn.sender, [rcpt], data, txn.mail_options,
                                   stuffed))[rcpt]
            results[rcpt] = out
            metrics.copy(out.state)
            pending = store.submit_copy(identity, rcpt, out)
            pending.add_done_callback(functools.partial(recorded, rcpt, out))
            records.append(pending)

    records: list[asyncio.Future[None]] = []
    n = min(pool.size, len(todo))
    try:
        if n:
            await asyncio.gather(*(worker() for _ in range(n)))
    finally:
        if feed is not None:
            for r in await feed.close():  # batches that came back after a stop
                results[r] = Outcome(TEMPFAIL, halt() or "451 4.4.0 not attempted")
    if records:
        await asyncio.gather(*records, return_exceptions=True)  # see recorded()
    return results
