"""Getting accepted mail to the upstream MTA: ordinary pass-through and the fingerprinted fan-out.

Guarantees (see INTERFACE.md):

* Ordinary mail: one upstream transaction, same envelope sender, all recipients, the bytes as
  received. When the upstream takes some recipients and temp-fails others, the per-recipient
  outcome is recorded (table `deliveries`) so that the client's retry goes only to the others.
* All-staff mail: `fingerprint.prepare()` once, the message logged, then one upstream
  transaction per recipient with that recipient's copy. Each copy's outcome is committed to the
  database (group commit, fsynced) as soon as the upstream has answered, before the worker sends
  its next copy (so a kill leaves at most one unrecorded accepted copy per connection); a
  retry (same bytes, same envelope sender: same identity) skips every copy that is already
  accepted or permanently refused.
* The reply to the client: 250 only when every recipient is accepted or permanently refused and
  reported (one RFC 3464 notification from `<>`, recorded so a retry never sends a second one);
  451 as soon as anything is temporary (the client retries and resumes); 5xx with the
  upstream's reply when no recipient at all can be delivered.
* One fan-out per message identity at a time (a retry arriving while copies are still in
  flight waits for them, or gets 451): no copy is ever sent twice by overlapping attempts.
  Store errors leave the outcome in memory, stop the fan-out and answer 451 4.3.0, so the retry
  neither loses nor doubles a copy (as long as the process lives).

Time budget. The client waits for the DATA reply from its final "." (Postfix:
smtp_data_done_timeout = 600 s; INTERFACE: 300 s). With R recipients, C upstream connections
(`[upstream] concurrency`) and t_copy seconds per copy, a fan-out needs ceil(R/C) * t_copy. The
relay starts no new copy after `fanout_budget` (default 240 s) from the end of DATA, lets the
copies in flight finish (each bounded by `[upstream] timeout`), and answers at the latest
REPLY_LIMIT = 290 s after the end of DATA: 451 if copies remain, and the retry resumes where the
fan-out stopped. Measured (bench/fanout.py, 2 cores, smtp-sink upstream, C = 8, a 35 KB
text+HTML+PDF message): 255 copies/s, so 10,000 copies take about 40 s and a Postfix batch of
50 about 0.2 s; only an upstream slower than C * 240 s / R per copy (R = 50: 38 s per copy)
ever splits a batch over two attempts. The receive time does not count against the
client's timer; the relay's own session timer is re-armed when DATA ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import analysis, dsn, smtpclient
from .config import Config
from .hashes import message_identity
from .keys import KeyError_, Keyring
from .metrics import Metrics
from .policy import addressed_to_list, expand, is_all_staff, unexpanded_lists
from .scheme import SCHEME
from .store import ACCEPTED, PERMFAIL, TEMPFAIL, Store, StoreError

if TYPE_CHECKING:
    from . import fingerprint

log = logging.getLogger("relay")

FINAL = (ACCEPTED, PERMFAIL)
REPLY_LIMIT = 290.0  # seconds from the end of DATA to the reply, at the latest
STOP_REPLY_WINDOW = 20.0  # after SIGTERM, every open DATA is answered within this
IDLE_RECONNECT = 20.0  # an upstream connection idle longer than this is replaced
DOWN_HOLD = 0.5  # after a failed connect, sends fail fast for this long (no hammering)
PREPARE_INLINE = 64 * 1024  # copies of messages bigger than this are made in a thread
RENDER_BATCH = 16  # copies per request to a worker process (fewer for big messages)
RENDER_BATCH_BYTES = 2 << 20  # ... so that a batch is at most about this many bytes


@dataclass(frozen=True)
class Outcome:
    state: str  # ACCEPTED / TEMPFAIL / PERMFAIL
    reply: str  # "250 ..." or the refusal, one line

    @property
    def final(self) -> bool:
        return self.state in FINAL


@dataclass
class Transaction:
    """One accepted DATA, as the delivery side needs it."""

    qid: str
    sender: str  # "<>" for the null sender
    rcpts: list[str]
    mail_options: list[str]  # the client's BODY= / SMTPUTF8, passed on upstream
    data: bytes
    arrived: datetime = field(default_factory=lambda: datetime.now(UTC))
    fingerprinted: bool | None = None
    copies: int = 0
    identity: str | None = None


def _line(text: str) -> str:
    return dsn.one_line(text, 400)


def _outcome(code: int, message: str) -> Outcome:
    if 200 <= code < 300:
        state = ACCEPTED
    elif 500 <= code < 600:
        state = PERMFAIL
    else:
        state = TEMPFAIL
    return Outcome(state, _line(f"{code} {message}"))


def wire_sender(sender: str) -> str:
    return "" if sender in ("<>", "") else sender


# --- upstream connections -----------------------------------------------------------------

@dataclass
class _Slot:
    smtp: smtpclient.Connection | None = None
    last_used: float = 0.0


class UpstreamPool:
    """`size` reused SMTP connections to the upstream (relay.smtpclient: PIPELINING when
    offered); a connection is opened when first needed and replaced after any trouble or when
    it has been idle for a while."""

    def __init__(self, host: str, port: int, size: int, timeout: float,
                 local_hostname: str) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.local_hostname = local_hostname
        self.size = size
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(_Slot())
        self._down_until = 0.0
        self._down_reason = ""

    @property
    def remote(self) -> str:
        return self.host

    async def send(self, sender: str, rcpts: Sequence[str], data: bytes,
                   mail_options: Sequence[str] = (), stuffed: bool = False
                   ) -> dict[str, Outcome]:
        """One upstream transaction; the outcome for every recipient. Never raises (but for
        cancellation). `stuffed`: data is smtpclient.wire_body() of the message already."""
        slot = await self._slots.get()
        ok = False
        try:
            result = await self._send(slot, sender, rcpts, data, mail_options, stuffed)
            ok = True
            return result
        finally:
            if not ok and slot.smtp is not None:  # cancelled mid-transaction: state unknown
                slot.smtp.close()
                slot.smtp = None
            slot.last_used = time.monotonic()
            self._slots.put_nowait(slot)

    def _all(self, rcpts: Sequence[str], out: Outcome) -> dict[str, Outcome]:
        return {r: out for r in rcpts}

    def _drop(self, slot: _Slot) -> None:
        if slot.smtp is not None:
            slot.smtp.close()
            slot.smtp = None

    async def _connect(self, slot: _Slot) -> Outcome | None:
        now = time.monotonic()
        if slot.smtp is not None and (not slot.smtp.is_connected
                                      or now - slot.last_used > IDLE_RECONNECT):
            if slot.smtp.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.smtp.quit(), 2.0)
            self._drop(slot)
        if slot.smtp is not None:
            return None
        if now < self._down_until:
            return Outcome(TEMPFAIL, self._down_reason)
        try:
            slot.smtp = await smtpclient.Connection.open(self.host, self.port, self.timeout,
                                                         self.local_hostname)
            return None
        except smtpclient.Refused as e:
            reason = _line(f"451 4.4.1 upstream refused the connection: {e}")
        except (smtpclient.Trouble, OSError, TimeoutError) as e:
            reason = _line(f"451 4.4.1 upstream {self.host}:{self.port} unreachable: "
                           f"{e.__class__.__name__} {e}")
        # fail the next attempts fast instead of waiting for a connect timeout each time
        self._down_until = time.monotonic() + DOWN_HOLD
        self._down_reason = reason
        return Outcome(TEMPFAIL, reason)

    async def _send(self, slot: _Slot, sender: str, rcpts: Sequence[str], data: bytes,
                    mail_options: Sequence[str], stuffed: bool = False) -> dict[str, Outcome]:
        trouble = await self._connect(slot)
        if trouble is not None:
            return self._all(rcpts, trouble)
        smtp = slot.smtp
        assert smtp is not None
        try:
            t = await smtp.send(wire_sender(sender), rcpts, data, mail_options, stuffed)
        except smtpclient.NotSupported as e:
            return self._all(rcpts, Outcome(PERMFAIL, _line(f"553 5.6.7 upstream: {e}")))
        except ValueError as e:  # an address that cannot go on a command line
            return self._all(rcpts, Outcome(PERMFAIL, _line(f"553 5.1.3 {e}")))
        except (smtpclient.Trouble, OSError, TimeoutError) as e:
            self._drop(slot)
            return self._all(rcpts, Outcome(
                TEMPFAIL, _line(f"451 4.4.2 upstream connection trouble: "
                                f"{e.__class__.__name__} {e}")))
        return self._outcomes(slot, rcpts, t)

    def _outcomes(self, slot: _Slot, rcpts: Sequence[str], t: smtpclient.Transaction
                  ) -> dict[str, Outcome]:
        """Each recipient's outcome from the upstream's replies: MAIL refused: that for all;
        RCPT refused: that; DATA refused: that for the recipients RCPT took."""
        smtp = slot.smtp
        replies = [t.mail, *t.rcpts] + ([t.data] if t.data is not None else [])
        if any(r.code == 421 for r in replies) or smtp is None or not smtp.is_connected:
            self._drop(slot)
        if not t.mail.ok:
            return self._all(rcpts, _outcome(t.mail.code, t.mail.text))
        out: dict[str, Outcome] = {}
        data = t.data if t.data is not None else smtpclient.Reply(451, "4.4.0 no DATA reply")
        for i, r in enumerate(rcpts):
            rr = t.rcpts[i] if i < len(t.rcpts) else None
            if rr is None:
                out[r] = Outcome(TEMPFAIL, "451 4.4.0 no reply for recipient")
            elif not rr.ok:
                out[r] = _outcome(rr.code, rr.text)
            elif data.ok:
                out[r] = Outcome(ACCEPTED, "250 accepted")
            else:
                out[r] = _outcome(data.code, data.text)
        return out

    async def close(self) -> None:
        while not self._slots.empty():
            slot = self._slots.get_nowait()
            if slot.smtp is not None and slot.smtp.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(slot.smtp.quit(), 2.0)
            self._drop(slot)


DATA_CHUNK = smtpclient.DATA_CHUNK  # a message bigger than this goes upstream a chunk at a time


# --- the database, off the event loop -------------------------------------------------------

class AsyncStore:
    """The Store used from one dedicated thread (sqlite connections belong to their thread;
    fsyncs must not block the event loop). Copy outcomes are group-committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ex = ThreadPoolExecutor(1, thread_name_prefix="relay-store")
        self._store: Store | None = None
        self._batch: list[tuple[str, str, Outcome, asyncio.Future[None]]] = []
        self._flushing = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._ex, Store, self.path)

    async def call(self, name: str, *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        store = self._store
        if store is None:
            raise StoreError(f"{self.path}: database is not open")
        fn: Callable[..., Any] = getattr(store, name)
        return await loop.run_in_executor(self._ex, lambda: fn(*args, **kw))

    async def run(self, fn: Callable[[Store], Any]) -> Any:
        """Run fn(store) in the store thread (maintenance, tests)."""
        store = self._store
        if store is None:
            raise StoreError(f"{self.path}: database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._ex, fn, store)

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
                raise StoreError(f"{self.path}: database is not open")
            for identity, rows in by_id.items():
                store.set_copy_states(identity, rows)

        done = asyncio.wrap_future(self._ex.submit(commit))
        done.add_done_callback(lambda f: self._committed(batch, f))

    def _committed(self, batch: list[tuple[str, str, Outcome, asyncio.Future[None]]],
                   f: asyncio.Future[None]) -> None:
        err: BaseException | None = None
        if f.cancelled():
            err = StoreError(f"{self.path}: commit cancelled")
        elif f.exception() is not None:
            e = f.exception()
            err = e if isinstance(e, StoreError) else StoreError(f"{self.path}: {e}")
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
                await self.call("close")
        self._ex.shutdown(wait=True)


# --- the deliverer ------------------------------------------------------------------------

class _Busy(Exception):
    pass


class Deliverer:
    """Turns an accepted transaction into upstream transactions and an SMTP reply."""

    def __init__(self, cfg: Config, pool: UpstreamPool, store: AsyncStore, keyring: Keyring,
                 members: dict[str, tuple[str, ...]]) -> None:
        self.cfg = cfg
        self.pool = pool
        self.store = store
        self.keyring = keyring
        self.members = members
        self.stopping = False
        self._stop_reply_by = float("inf")
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        # outcomes the upstream gave but the database could not take (store trouble)
        self._unrecorded_copies: dict[str, dict[str, tuple[str, Outcome]]] = {}
        self._unrecorded_deliveries: dict[str, dict[str, tuple[str, Outcome]]] = {}
        self.jobs: set[asyncio.Task[str]] = set()
        self.metrics = Metrics()  # counted always, served when [metrics] listen is set
        self.analyser: analysis.Analyser | None = None  # see start()
        self._analyses: dict[str, asyncio.Task[fingerprint.Prepared]] = {}

    async def start(self) -> None:
        """Start the analysis workers and wait for them to be ready."""
        self.analyser = analysis.Analyser()
        self.analyser.start()
        await self.analyser.ready()

    def close(self) -> None:
        if self.analyser is not None:
            self.analyser.close()

    def begin_shutdown(self) -> None:
        """No new copies from now on; every open DATA is answered within STOP_REPLY_WINDOW."""
        if not self.stopping:
            self.stopping = True
            self._stop_reply_by = asyncio.get_running_loop().time() + STOP_REPLY_WINDOW

    # the reply window ---------------------------------------------------------------------

    def windows(self, t0: float) -> tuple[float, float]:
        """(stop starting copies at, reply at the latest at) for a DATA that ended at t0."""
        reply_by = t0 + min(REPLY_LIMIT, self.cfg.fanout_budget + self.cfg.upstream_timeout + 10)
        stop_new = min(t0 + self.cfg.fanout_budget, reply_by - 5)
        return stop_new, reply_by

    async def deliver(self, txn: Transaction) -> str:
        """The reply to the client's DATA. Runs the delivery in its own task: if the client
        goes away (the handler is cancelled) or the reply window closes, the copies in flight
        still finish and get recorded."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stop_new, reply_by = self.windows(t0)
        job = loop.create_task(self._job(txn, stop_new))
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)
        job.add_done_callback(lambda j: self._late(txn, j, t0, reply_by))
        while not job.done():
            left = min(reply_by, self._stop_reply_by) - loop.time()
            if left <= 0:
                reply = ("451 4.3.2 relay shutting down, try again later" if self.stopping else
                         "451 4.4.5 delivery still in progress, try again later")
                self._log(txn, reply)
                return reply
            await asyncio.wait({job}, timeout=min(left, 0.25))
        reply = job.result()
        self._log(txn, reply)
        return reply

    def _late(self, txn: Transaction, job: asyncio.Task[str], t0: float, reply_by: float) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        now = asyncio.get_running_loop().time()
        if now > min(reply_by, self._stop_reply_by):
            log.info("%s finished after the reply: %s", txn.qid, job.result())

    def _log(self, txn: Transaction, reply: str) -> None:
        # one line per transaction: never subjects, never whether or how copies are signed;
        # identity: the first 16 hex digits of the message identity (the same for every batch
        # and retry of one message); time: seconds from the end of DATA to this reply
        seconds = (datetime.now(UTC) - txn.arrived).total_seconds()
        log.info("%s from=<%s> rcpts=%d transactions=%d size=%d identity=%s time=%.3f "
                 "result=%s", txn.qid, wire_sender(txn.sender), len(txn.rcpts), txn.copies,
                 len(txn.data), (txn.identity or "-")[:16], seconds, reply)
        self.metrics.transaction(txn.fingerprinted, reply, seconds)

    async def _flush_unrecorded(self) -> None:
        """Write outcomes the database refused earlier (only final ones are kept, so writing
        them late never undoes a newer state)."""
        for memo, method in ((self._unrecorded_copies, "set_copy_states"),
                             (self._unrecorded_deliveries, "set_delivery_states")):
            for identity in list(memo):
                rows = [(r, o.state, o.reply) for r, o in memo[identity].values()]
                await self.store.call(method, identity, rows)
                memo.pop(identity, None)

    async def _job(self, txn: Transaction, stop_new: float) -> str:
        try:
            if self._unrecorded_copies or self._unrecorded_deliveries:
                await self._flush_unrecorded()
            for addr in unexpanded_lists(txn.rcpts, self.cfg, self.members):
                log.warning("%s list address <%s> arrived unexpanded: its members will all get "
                            "the same copy; expand it in the MTA before the relay "
                            "(virtual_alias_maps) or give it a [policy.members] file",
                            txn.qid, addr)
            rcpts = expand(txn.rcpts, self.members)
            txn.copies = len(rcpts)
            fp = (is_all_staff(txn.data, rcpts, self.cfg)
                  or addressed_to_list(txn.rcpts, self.cfg))
            txn.fingerprinted = fp
            if fp:
                return await self._fanout(txn, rcpts, stop_new)
            txn.copies = 1
            return await self._ordinary(txn, rcpts, stop_new)
        except _Busy:
            return "451 4.4.5 an earlier delivery of this message is still in progress"
        except StoreError as e:
            log.error("%s store trouble: %s", txn.qid, e)
            return "451 4.3.0 local database trouble, try again later"
        except Exception:
            log.exception("%s delivery failed", txn.qid)
            return "451 4.3.0 internal error, try again later"

    @contextlib.asynccontextmanager
    async def _identity(self, identity: str, until: float) -> Any:
        lock, refs = self._locks.setdefault(identity, (asyncio.Lock(), [0]))
        refs[0] += 1
        try:
            if lock.locked():  # an earlier attempt of this message is still running
                timeout = max(0.0, until - asyncio.get_running_loop().time())
                try:
                    await asyncio.wait_for(lock.acquire(), timeout)
                except TimeoutError:
                    raise _Busy() from None
            else:
                # never through wait_for: with a timeout of 0 it gives up even on a free lock,
                # which made a message whose analysis outlasted its budget 451 on every retry
                await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            refs[0] -= 1
            if refs[0] == 0:
                self._locks.pop(identity, None)

    async def _identity_of(self, txn: Transaction) -> str:
        if len(txn.data) > PREPARE_INLINE:
            loop = asyncio.get_running_loop()
            txn.identity = await loop.run_in_executor(None, message_identity, txn.data,
                                                      txn.sender)
        else:
            txn.identity = message_identity(txn.data, txn.sender)
        return txn.identity

    # ordinary mail --------------------------------------------------------------------------

    async def _ordinary(self, txn: Transaction, rcpts: list[str], stop_new: float,
                        record_all: bool = False) -> str:
        identity = await self._identity_of(txn)
        async with self._identity(identity, stop_new):
            prior = await self.store.call("delivery_states", identity)
            known = {r.lower(): Outcome(st, rep or "") for r, (st, rep) in prior.items()}
            todo = [r for r in rcpts if not (r.lower() in known and known[r.lower()].final)]
            outcomes: dict[str, Outcome] = {}
            if todo and self.stopping:
                outcomes = {r: Outcome(TEMPFAIL, "451 4.3.2 relay shutting down") for r in todo}
            elif todo:
                outcomes = await self.pool.send(txn.sender, todo, txn.data, txn.mail_options)
                if record_all or prior or any(o.state != ACCEPTED for o in outcomes.values()):
                    rows = [(r, o.state, o.reply) for r, o in outcomes.items()]
                    try:
                        await self.store.call("set_delivery_states", identity, rows)
                    except StoreError as e:
                        log.error("%s store trouble: %s", txn.qid, e)
                        self._unrecorded_deliveries.setdefault(identity, {}).update(
                            {r.lower(): (r, o) for r, o in outcomes.items() if o.final})
                        if any(o.state == TEMPFAIL for o in outcomes.values()):
                            return "451 4.3.0 local database trouble, try again later"
            states = {r: outcomes.get(r) or known.get(r.lower())
                      or Outcome(TEMPFAIL, "451 4.4.0 not attempted") for r in rcpts}
            return await self._conclude(txn, identity, rcpts, states)

    # fingerprinted mail ----------------------------------------------------------------------

    async def _fanout(self, txn: Transaction, rcpts: list[str], stop_new: float) -> str:
        identity = await self._identity_of(txn)
        key_id, key = self.keyring.current
        scheme = SCHEME.with_rate(self.cfg.word_rate)
        earlier = await self.store.call("signing_of", identity)
        if earlier is None and len(txn.data) > self.cfg.max_message_bytes:
            return await self._untouched(txn, rcpts, stop_new, identity,
                                         f"message of {len(txn.data)} bytes is over "
                                         f"[policy] max_message_bytes")
        if earlier is None and await self.store.call("delivery_states", identity):
            # an earlier attempt delivered it untouched to some: the rest gets the same
            return await self._untouched(txn, rcpts, stop_new, identity,
                                         "an earlier attempt delivered it untouched")
        if earlier is not None:  # a retry: same key and scheme as the copies already sent
            try:
                key_id, scheme = earlier
                key = self.keyring.get(key_id)
            except KeyError_:
                log.warning("%s key %s of an earlier attempt is gone; signing with the "
                            "current key", txn.qid, earlier[0])
                key_id, key = self.keyring.current
        job = analysis.Job(txn.data, txn.sender, key_id, key, scheme, self.cfg.max_text_bytes)
        try:
            prepared = await self._analysed(identity, job, stop_new)
        except analysis.AnalysisFailed as e:
            prepared = None
            why = str(e)
        except TimeoutError:
            return "451 4.3.0 too much mail to analyse right now, try again later"
        else:
            why = prepared.untouched or ""
        if prepared is None or prepared.untouched:
            if earlier is None:
                return await self._untouched(txn, rcpts, stop_new, identity, why)
            # copies of an earlier attempt are out: the rest get one each, untouched
            log.info("%s not fingerprinted: %s", txn.qid, why)
            prepared = None
        else:
            assert prepared.identity == identity
            for reason in prepared.skipped:
                log.info("%s part left unchanged: %s", txn.qid, reason)
        async with self._identity(identity, stop_new):
            if prepared is not None:
                await self.store.call("record_message", **prepared.log_entry(txn.sender))
            details = await self.store.call("copy_details", identity)
            known = {r.lower(): Outcome(st, rep or "") for r, (st, rep) in details.items()}
            todo = [r for r in rcpts if not (r.lower() in known and known[r.lower()].final)]
            if todo:
                await self.store.call("add_copies", identity, todo)
            results = await self._run_copies(txn, prepared or _Untouched(txn.data), identity,
                                             todo, stop_new)
            states = {r: results.get(r) or known.get(r.lower())
                      or Outcome(TEMPFAIL, "451 4.4.0 not attempted") for r in rcpts}
            return await self._conclude(txn, identity, rcpts, states)

    async def _untouched(self, txn: Transaction, rcpts: list[str], stop_new: float,
                         identity: str, why: str) -> str:
        """All-staff mail that is not fingerprinted (too big, analysis too slow): delivered as
        ordinary mail, every recipient's outcome recorded so a retry stays untouched."""
        log.info("%s not fingerprinted, delivered untouched: %s", txn.qid, why)
        txn.copies = 1
        return await self._ordinary(txn, rcpts, stop_new, record_all=True)

    def _analysis_done(self, identity: str, task: asyncio.Task[Any]) -> None:
        self._analyses.pop(identity, None)
        if not task.cancelled():
            task.exception()  # retrieved: an attempt that went away may not be awaiting it

    async def _analysed(self, identity: str, job: analysis.Job, stop_new: float
                        ) -> fingerprint.Prepared:
        """The message analysed in a worker process, within the time limit. Attempts of the
        same message at the same time share one analysis."""
        loop = asyncio.get_running_loop()
        running = self._analyses.get(identity)
        if running is None:
            if self.analyser is None:
                self.analyser = analysis.Analyser()
                self.analyser.start()
            # the fan-out keeps at least half of its budget whatever the analysis does
            limit = min(self.cfg.analysis_timeout, self.cfg.fanout_budget / 2)
            running = loop.create_task(self.analyser.prepare(job, limit, stop_new - limit))
            self._analyses[identity] = running
            running.add_done_callback(lambda t: self._analysis_done(identity, t))
        return await asyncio.shield(running)

    async def _run_copies(self, txn: Transaction, prepared: fingerprint.Prepared | _Untouched,
                          identity: str, todo: list[str], stop_new: float
                          ) -> dict[str, Outcome]:
        loop = asyncio.get_running_loop()
        queue = deque(todo)
        results: dict[str, Outcome] = {}
        why: list[str] = []
        big = len(txn.data) > PREPARE_INLINE
        feed = (_Feed(self.analyser, prepared, queue, self.cfg.analysis_timeout, big, txn.qid)
                if self.analyser is not None and not isinstance(prepared, _Untouched)
                and todo else None)

        def halt() -> str | None:
            if self.stopping:
                return "451 4.3.2 relay shutting down; the rest follows on retry"
            if loop.time() >= stop_new:
                return "451 4.4.5 fan-out time budget used up; the rest follows on retry"
            return why[0] if why else None

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
                self._unrecorded_copies.setdefault(identity, {})[rcpt.lower()] = (rcpt, out)

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
                out = (await self.pool.send(txn.sender, [rcpt], data, txn.mail_options,
                                            stuffed))[rcpt]
                results[rcpt] = out
                self.metrics.copy(out.state)
                pending = self.store.submit_copy(identity, rcpt, out)
                pending.add_done_callback(functools.partial(recorded, rcpt, out))
                records.append(pending)

        records: list[asyncio.Future[None]] = []
        n = min(self.pool.size, len(todo))
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

    # the reply -------------------------------------------------------------------------------

    async def _conclude(self, txn: Transaction, identity: str, rcpts: list[str],
                        states: dict[str, Outcome]) -> str:
        temp = [r for r in rcpts if not states[r].final]
        if temp:
            first = states[temp[0]].reply
            code = first[:3] if first[:3] in ("450", "451", "452") else "451"
            enhanced = dsn.status_of(first) if first[:1] == "4" else "4.4.0"
            detail = first.split(None, 2)[2:] if enhanced in first else first.split(None, 1)[1:]
            return _line(f"{code} {enhanced} {len(temp)} of {len(rcpts)} recipient(s) not "
                         f"delivered yet, try again later ({''.join(detail) or first})")
        perm = [r for r in rcpts if states[r].state == PERMFAIL]
        if perm and len(perm) == len(rcpts):
            first = states[perm[0]].reply
            code = int(first[:3]) if first[:3].isdigit() else 554
            if not 550 <= code <= 554:
                code = 554
            text = first[3:].strip() or "5.0.0 refused by the upstream"
            if len(rcpts) > 1:
                text = f"{text} (and every other recipient refused too)"
            return _line(f"{code} {text}")
        why = dsn.withheld(txn.sender, (*self.cfg.lists, *self.cfg.members)) if perm else None
        if why:
            log.warning("%s %d recipient(s) refused permanently; no notice: %s", txn.qid,
                        len(perm), why)
        elif perm and wire_sender(txn.sender):
            notice = await self.store.call("notice_state", identity)
            if notice is None:
                n = dsn.build(reporting_mta=self.cfg.hostname, sender=txn.sender,
                              failures=[dsn.Failure(r, states[r].reply) for r in perm],
                              original=txn.data, arrival=txn.arrived,
                              remote_mta=self.pool.remote)
                out = (await self.pool.send("<>", [txn.sender], n.data, n.mail_options))[
                    txn.sender]
                if out.state == TEMPFAIL:
                    return _line("451 4.4.0 could not send the delivery status notification, "
                                 f"try again later ({out.reply})")
                if out.state == PERMFAIL:
                    log.warning("%s delivery status notification refused: %s", txn.qid,
                                out.reply)
                else:
                    self.metrics.dsn()
                try:
                    await self.store.call("set_notice_state", identity, out.state, out.reply)
                except StoreError as e:
                    log.error("%s store trouble: %s", txn.qid, e)
            log.info("%s %d recipient(s) refused permanently; notice sent to the sender",
                     txn.qid, len(perm))
        if perm:
            return f"250 2.0.0 {txn.qid} accepted; {len(perm)} recipient(s) refused, " \
                   "see the delivery status notification"
        return f"250 2.0.0 {txn.qid} accepted"


class _Feed:
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


class _Untouched:
    """Stands for a Prepared message when copies must go out unchanged."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def copy_for(self, recipient: str) -> bytes:
        return self.raw
