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
* One delivery per message identity at a time, also across relays sharing the log (a lock
  here, a claim in the store there: relay.lease); a retry arriving meanwhile waits, or gets
  451: no copy is ever sent twice by overlapping attempts. Store errors leave the outcome in
  memory, stop the fan-out and answer 451 4.3.0, so the retry neither loses nor doubles a copy
  (as long as the process lives). Ordinary mail goes without the store (README, Choices).

The reply window and the time budget: relay.outcomes (`windows`, REPLY_LIMIT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import analysis, claims, dsn, outcomes
from .asyncstore import AsyncStore
from .config import Policy, Signature, Upstream
from .fanout import PREPARE_INLINE, Untouched, send_copies
from .hashes import message_identity
from .keys import KeyFileError, Keyring
from .lease import KEEP, Busy, Claimer
from .metrics import Metrics
from .outcomes import PERMFAIL, TEMPFAIL, Outcome, wire_sender
from .policy import addressed_to_list, expand, is_all_staff, unexpanded_lists
from .scheme import SCHEME
from .store import StoreError
from .upstream import UpstreamPool

if TYPE_CHECKING:
    from . import fingerprint

log = logging.getLogger("relay")

STOP_REPLY_WINDOW = 20.0  # after SIGTERM, every open DATA is answered within this


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


# --- the deliverer ------------------------------------------------------------------------

class _Busy(Exception):
    pass


class Deliverer:
    """Turns an accepted transaction into upstream transactions and an SMTP reply."""

    def __init__(self, policy: Policy, upstream: Upstream, signature: Signature, hostname: str,
                 pool: UpstreamPool, store: AsyncStore, keyring: Keyring,
                 members: dict[str, tuple[str, ...]]) -> None:
        self.policy, self.upstream, self.signature = policy, upstream, signature
        self.hostname = hostname  # [listen] hostname: the notices' Reporting-MTA
        self.pool, self.store, self.keyring, self.members = pool, store, keyring, members
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
        self.claimer = Claimer(store, claims.timing(upstream.timeout),  # across relays
                               signature.key_file.parent / "owners")

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
        return outcomes.windows(t0, self.upstream.fanout_budget, self.upstream.timeout)

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
                reply = outcomes.late_reply(self.stopping)
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

    async def _flush_unrecorded(self) -> StoreError | None:
        """Write outcomes the database refused earlier (only final ones are kept, so writing
        them late never undoes a newer state); the error when it still cannot."""
        for memo, write in ((self._unrecorded_copies, self.store.set_copy_states),
                            (self._unrecorded_deliveries, self.store.set_delivery_states)):
            for identity in list(memo):
                try:
                    await write(identity, outcomes.rows(memo[identity].values()))
                except StoreError as e:
                    return e
                memo.pop(identity, None)
        return None

    async def _job(self, txn: Transaction, stop_new: float) -> str:
        try:
            unflushed = await self._flush_unrecorded()  # all-staff mail needs it; ordinary not
            for addr in unexpanded_lists(txn.rcpts, self.policy, self.members):
                log.warning("%s list address <%s> arrived unexpanded: its members will all get "
                            "the same copy; expand it in the MTA before the relay "
                            "(virtual_alias_maps) or give it a [policy.members] file",
                            txn.qid, addr)
            rcpts = expand(txn.rcpts, self.members)
            txn.copies = len(rcpts)
            fp = (is_all_staff(txn.data, rcpts, self.policy)
                  or addressed_to_list(txn.rcpts, self.policy))
            txn.fingerprinted = fp
            if fp:
                if unflushed is not None:
                    raise unflushed
                return await self._fanout(txn, rcpts, stop_new)
            txn.copies = 1
            return await self._ordinary(txn, rcpts, stop_new)
        except (_Busy, Busy):
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

    async def _read(self, txn: Transaction, read: Awaitable[Any], default: Any, need: bool) -> Any:
        """A store read; `default` when the store fails and the mail may go without it."""
        try:
            return await read
        except StoreError as e:
            if need:
                raise
            log.error("%s store trouble, delivering without its record: %s", txn.qid, e)
            return default

    # ordinary mail --------------------------------------------------------------------------

    async def _ordinary(self, txn: Transaction, rcpts: list[str], stop_new: float,
                        record_all: bool = False) -> str:
        identity = await self._identity_of(txn)
        async with (self._identity(identity, stop_new),
                    self.claimer.held(identity, stop_new, txn.qid, record_all, None) as held):
            prior = await self._read(txn, self.store.delivery_states(identity), {}, record_all)
            known = outcomes.recorded(prior) | {
                k: o for k, (_, o) in self._unrecorded_deliveries.get(identity, {}).items()}
            todo = outcomes.remaining(rcpts, known)
            got: dict[str, Outcome] = {}
            why = "451 4.3.2 relay shutting down" if self.stopping else held.halt()
            if todo and why:
                got = {r: Outcome(TEMPFAIL, why) for r in todo}
            elif todo:
                got = await self.pool.send(txn.sender, todo, txn.data, txn.mail_options)
                if outcomes.must_record(record_all, bool(prior), got):
                    try:
                        await self.store.set_delivery_states(identity, outcomes.rows(got.items()))
                    except StoreError as e:
                        log.error("%s store trouble: %s", txn.qid, e)
                        self._unrecorded_deliveries.setdefault(identity, {}).update(
                            {r.lower(): (r, o) for r, o in got.items() if o.final})
                        if any(o.state == TEMPFAIL for o in got.values()):
                            return "451 4.3.0 local database trouble, try again later"
            states = outcomes.states(rcpts, got, known)
            return await self._conclude(txn, identity, rcpts, states, record_all)

    # fingerprinted mail ----------------------------------------------------------------------

    async def _fanout(self, txn: Transaction, rcpts: list[str], stop_new: float) -> str:
        identity = await self._identity_of(txn)
        key_id, key = self.keyring.current
        scheme = SCHEME.with_rate(self.signature.word_rate)
        earlier = await self.store.signing_of(identity)
        if earlier is None and len(txn.data) > self.policy.max_message_bytes:
            return await self._untouched(txn, rcpts, stop_new, identity,
                                         f"message of {len(txn.data)} bytes is over "
                                         f"[policy] max_message_bytes")
        if earlier is None and await self.store.delivery_states(identity):
            # an earlier attempt delivered it untouched to some: the rest gets the same
            return await self._untouched(txn, rcpts, stop_new, identity,
                                         "an earlier attempt delivered it untouched")
        if earlier is not None:  # a retry: same key and scheme as the copies already sent
            try:
                key_id, scheme = earlier
                key = self.keyring.get(key_id)
            except KeyFileError:
                log.warning("%s key %s of an earlier attempt is gone; signing with the "
                            "current key", txn.qid, earlier[0])
                key_id, key = self.keyring.current
        job = analysis.Job(txn.data, txn.sender, key_id, key, scheme, self.policy.max_text_bytes)
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
        signing = (prepared.key_id, prepared.scheme) if prepared and earlier is None else KEEP
        async with (self._identity(identity, stop_new),
                    self.claimer.held(identity, stop_new, txn.qid, True, signing) as held):
            if prepared is not None:
                await self.store.record_message(prepared.log_entry(txn.sender))
            known = outcomes.recorded(await self.store.copy_details(identity))
            todo = outcomes.remaining(rcpts, known)
            if todo:
                await self.store.add_copies(identity, todo)
            results = await send_copies(
                txn, prepared or Untouched(txn.data), identity, todo, stop_new, pool=self.pool,
                store=self.store, metrics=self.metrics, analyser=self.analyser,
                analysis_timeout=self.policy.analysis_timeout, stopping=lambda: self.stopping,
                unrecorded=self._unrecorded_copies, lease=held.halt)
            states = outcomes.states(rcpts, results, known)
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
            limit = min(self.policy.analysis_timeout, self.upstream.fanout_budget / 2)
            running = loop.create_task(self.analyser.prepare(job, limit, stop_new - limit))
            self._analyses[identity] = running
            running.add_done_callback(lambda t: self._analysis_done(identity, t))
        return await asyncio.shield(running)

    # the reply -------------------------------------------------------------------------------

    async def _conclude(self, txn: Transaction, identity: str, rcpts: list[str],
                        states: dict[str, Outcome], needed: bool = True) -> str:
        c = outcomes.conclude(txn.qid, txn.sender, rcpts, states,
                              (*self.policy.lists, *self.policy.members))
        if c.withheld:
            log.warning("%s %d recipient(s) refused permanently; no notice: %s", txn.qid,
                        len(c.refused), c.withheld)
        elif c.notice_due:
            # ordinary mail without the store: the notice goes (a 250 is not retried)
            notice = await self._read(txn, self.store.notice_state(identity), None, needed)
            if notice is None:
                n = dsn.build(reporting_mta=self.hostname, sender=txn.sender,
                              failures=[dsn.Failure(r, states[r].reply) for r in c.refused],
                              original=txn.data, arrival=txn.arrived,
                              remote_mta=self.pool.remote)
                out = (await self.pool.send("<>", [txn.sender], n.data, n.mail_options))[
                    txn.sender]
                not_sent = outcomes.notice_not_sent(out)
                if not_sent is not None:
                    return not_sent
                if out.state == PERMFAIL:
                    log.warning("%s delivery status notification refused: %s", txn.qid,
                                out.reply)
                else:
                    self.metrics.dsn()
                try:
                    await self.store.set_notice_state(identity, out.state, out.reply)
                except StoreError as e:
                    log.error("%s store trouble: %s", txn.qid, e)
            log.info("%s %d recipient(s) refused permanently; notice sent to the sender",
                     txn.qid, len(c.refused))
        return c.reply
