"""Claims across relays, the shell (relay.claims decides): the claim SQL run on a Store, and
the Deliverer's hold on a message identity (`Claimer.held`: take the claim or wait for it,
renew it while the delivery runs, release it at the end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import claims
from .store import Store, StoreError

if TYPE_CHECKING:
    from .asyncstore import AsyncStore
    from .scheme import Scheme

log = logging.getLogger("relay")


# --- the SQL, run on a Store in its thread (relay.asyncstore calls these) ---------------------

def holder(store: Store, identity: str) -> tuple[str, float] | None:
    """(owner, expires) of the claim on `identity`; None when there is none."""
    try:
        row = store.db.execute(claims.HOLDER, [identity]).fetchone()
    except sqlite3.Error as e:
        raise StoreError(f"{store.path}: cannot read claims: {e}") from None
    return None if row is None else (row[0], float(row[1]))


def take(store: Store, identity: str, owner: str, now: float, until: float) -> bool:
    """Take or renew `owner`'s claim on `identity` until `until` (claims.TAKE): True when it was
    free, expired before `now` or `owner`'s own; False while another owner's is live."""
    try:
        with store.db.conn:
            return store.db.conn.execute(claims.TAKE, [identity, owner, until, now]).rowcount == 1
    except sqlite3.Error as e:
        raise StoreError(f"{store.path}: cannot claim message: {e}") from None


def release(store: Store, identity: str, owner: str, now: float) -> None:
    """Delete `owner`'s claim on `identity`, and every claim expired before `now`."""
    try:
        with store.db.conn:
            store.db.conn.execute(claims.RELEASE, [identity, owner, now])
    except sqlite3.Error as e:
        raise StoreError(f"{store.path}: cannot release claim: {e}") from None


# --- the Deliverer's hold on a message identity ------------------------------------------------

KEEP = object()  # Claimer.held: no decision made before the claim to check under it


class Busy(Exception):
    """Another relay holds the claim and the time budget is used up (claims.BUSY)."""


def owner_id() -> str:
    """This process's name in the claims table: host, pid and a random part (a restarted relay
    is a new owner, even with the same pid)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


@dataclass
class Held:
    """A claim while its holder delivers: `until` the lease as last confirmed (epoch seconds),
    `lost` when another relay took it over; `halt()` why no further copy may start."""

    timing: claims.Timing
    until: float
    lost: bool = False

    def halt(self) -> str | None:
        return claims.halt(time.time(), self.until, self.timing, self.lost)


class Claimer:
    """Takes, renews and releases this process's claims (relay.claims has the rules)."""

    def __init__(self, store: AsyncStore, timing: claims.Timing, owner: str | None = None
                 ) -> None:
        self.store, self.timing = store, timing
        self.owner = owner or owner_id()

    @contextlib.asynccontextmanager
    async def held(self, identity: str, stop_new: float, qid: str = "-", needed: bool = True,
                   signing: object = KEEP) -> AsyncIterator[Held]:
        """Hold the claim on `identity` while the body runs: take it, or wait for another
        relay's until `stop_new` (the loop's clock) and then raise Busy, having sent nothing;
        renew it meanwhile; release it after. With `needed` False: no claim (ordinary mail).
        `signing`: what the Deliverer decided before the claim (`recheck`); KEEP: nothing."""
        if not needed:
            yield Held(claims.Timing(math.inf, math.inf, 0.0), math.inf)
            return
        loop = asyncio.get_running_loop()
        while True:
            now = time.time()
            step = claims.decide(await self.store.claim_holder(identity), self.owner, now,
                                 stop_new - loop.time())
            if step.take:
                until = now + self.timing.lease
                if await self.store.take_claim(identity, self.owner, now, until):
                    if step.note:
                        log.warning("%s %s", qid, step.note)
                    break
                continue  # another relay took it in between: look again
            if step.reply is not None:
                raise Busy(step.reply)
            await asyncio.sleep(step.wait or claims.POLL)
        hold = Held(self.timing, until)
        renewer = loop.create_task(self._renew(identity, hold, qid))
        try:
            if signing is not KEEP:
                await self.recheck(identity, signing, qid)  # type: ignore[arg-type]
            yield hold
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            try:
                await self.store.release_claim(identity, self.owner, time.time())
            except StoreError as e:
                log.warning("%s claim not released (it expires by itself): %s", qid, e)

    async def recheck(self, identity: str, signing: tuple[str, Scheme] | None,
                      qid: str = "-") -> None:
        """Under the claim: Busy unless what the Deliverer decided before taking it still holds
        (the retry decides again). Another relay may have logged the message meanwhile, signed
        otherwise than `signing` (None: it was to go untouched), or delivered it untouched."""
        logged = await self.store.signing_of(identity)
        if (logged is not None and logged != signing) or (
                signing is not None and await self.store.delivery_states(identity)):
            log.info("%s signed or delivered by another relay meanwhile: 451, the retry "
                     "follows it", qid)
            raise Busy(claims.BUSY)

    async def _renew(self, identity: str, hold: Held, qid: str) -> None:
        failing = False
        while not hold.lost:
            await asyncio.sleep(self.timing.renew)
            now = time.time()
            try:
                if await self.store.take_claim(identity, self.owner, now,
                                               now + self.timing.lease):
                    hold.until, failing = now + self.timing.lease, False
                else:
                    hold.lost = True
                    log.error("%s claim taken over by another relay: no further copy from "
                              "this one", qid)
            except StoreError as e:
                if not failing:
                    log.error("%s claim not renewed: %s", qid, e)
                failing = True
