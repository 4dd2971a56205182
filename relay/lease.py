"""Claims across relays, the shell (relay.claims decides): the claim SQL run on a Store, this
process's lock file that tells relays on its host whether it still lives (`Liveness`), and the
Deliverer's hold on a message identity (`Claimer.held`: take the claim or wait for it, renew it
while the delivery runs, release it at the end)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
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
    with store.guard("read claims"):
        row = store.db.execute(claims.HOLDER, [identity]).fetchone()
    return None if row is None else (row[0], float(row[1]))


def take(store: Store, identity: str, owner: str, now: float, until: float) -> bool:
    """Take or renew `owner`'s claim on `identity` until `until` (claims.TAKE): True when it was
    free, expired before `now` or `owner`'s own; False while another owner's is live."""
    with store.guard("claim message"), store.db.transaction():
        return store.db.execute(claims.TAKE, [identity, owner, until, now]).rowcount == 1


def seize(store: Store, identity: str, gone: str, owner: str, until: float) -> bool:
    """Take over the claim of `gone` (a process known to be gone) for `owner` until `until`
    (claims.SEIZE): True when `gone` still held it."""
    with store.guard("claim message"), store.db.transaction():
        return store.db.execute(claims.SEIZE, [owner, until, identity, gone]).rowcount == 1


def release(store: Store, identity: str, owner: str, now: float) -> None:
    """Delete `owner`'s claim on `identity`, and every claim expired before `now`."""
    with store.guard("release claim"), store.db.transaction():
        store.db.execute(claims.RELEASE, [identity, owner, now])


# --- the Deliverer's hold on a message identity ------------------------------------------------

KEEP = object()  # Claimer.held: no decision made before the claim to check under it


class Busy(Exception):
    """Another relay holds the claim and the time budget is used up (claims.BUSY)."""


def owner_id() -> str:
    """This process's name in the claims table: host, pid and a random part (a restarted relay
    is a new owner, even with the same pid)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(8)}"


class Liveness:
    """Whether a claim's owner on this host still lives: each relay holds an exclusive flock(2)
    on `folder`/<its random part>.lock for as long as it runs, and the kernel releases it when
    the process ends, however (kill -9 too). A lock file that can be locked is a dead owner's.
    Owners on other hosts, or without a lock file here (another folder), are never judged gone:
    their claims expire."""

    STALE = 86400.0  # unlocked lock files older than this are removed when a relay starts

    def __init__(self, folder: Path, owner: str) -> None:
        self.folder, self.owner = folder, owner
        self.host = owner.split("/", 1)[0]
        self.fd: int | None = None

    def hold(self) -> None:
        """Create and lock this process's lock file (once); sweep stale ones."""
        if self.fd is not None:
            return
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for f in self.folder.glob("*.lock"):
                if time.time() - f.stat().st_mtime > self.STALE and self._unlocked(f):
                    f.unlink(missing_ok=True)
            fd = os.open(self._file(self.owner), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.fd = fd
        except OSError as e:
            self.fd = -1  # not again; relays on this host wait for this one's claims to expire
            log.warning("%s: no lock file for claims (%s): a claim of this relay outlives "
                        "it until it expires", self.folder, e.strerror or e)

    def gone(self, owner: str) -> bool:
        """True when `owner` ran on this host and its lock file is no longer held."""
        if owner.split("/", 1)[0] != self.host or owner == self.owner:
            return False
        return self._unlocked(self._file(owner))

    def _file(self, owner: str) -> Path:
        return self.folder / f"{owner.rsplit('/', 1)[-1]}.lock"

    @staticmethod
    def _unlocked(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False  # no file: unknown, not gone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing releases a lock taken here


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

    def __init__(self, store: AsyncStore, timing: claims.Timing, folder: Path) -> None:
        self.store, self.timing = store, timing
        self.owner = owner_id()
        self.liveness = Liveness(folder, self.owner)

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
        self.liveness.hold()
        while True:
            now = time.time()
            holder = await self.store.claim_holder(identity)
            gone = holder is not None and self.liveness.gone(holder[0])
            step = claims.decide(holder, self.owner, now, stop_new - loop.time(), gone)
            if step.take:
                until = now + self.timing.lease
                if await (self.store.seize_claim(identity, step.seize, self.owner, until)
                          if step.seize else
                          self.store.take_claim(identity, self.owner, now, until)):
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
