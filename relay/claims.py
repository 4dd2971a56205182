"""Claims across relays, pure: which relay may deliver a message identity now (relay.lease
carries it out; tests/test_claims.py holds the decisions as tables).

Several relays may share one log (two processes on one SQLite file, or several hosts on one
PostgreSQL database). Within one process the Deliverer serialises the attempts of one message
identity with a lock; across processes a *claim* does: a row (identity, owner, expires) in the
table `claims`, taken by one statement (`TAKE`, portable SQL: it runs unchanged on SQLite and
PostgreSQL), so that two relays can never both hold it. The claim is a lease: its owner renews
it while a long fan-out runs and deletes it at the end; a relay killed with -9 leaves a claim
that expires, or, on its own host, is taken over at once: every relay holds a lock file while
it lives (relay.lease.Liveness; the kernel releases it when the process dies, kill -9 included),
so a relay restarted after a kill, or another one on that host, sees the owner is gone.

* `decide`: what a relay does on finding the identity free, its own, expired, held by a process
  known to be gone, or claimed by another live owner (take it, or wait and look again, or
  answer 451 4.4.5 when its time is up).
* `timing`: the lease length, the renewal interval and how long before the lease ends a copy
  may still start, all from `[upstream] timeout` (see `timing`).
* `halt`: why the holder starts no further copy (its lease may run out before the copy ends,
  or another relay took the claim over).

Times are seconds since the epoch: the claim is compared across hosts, so their clocks must
agree to within `MARGIN` (NTP does far better).
"""

from __future__ import annotations

from dataclasses import dataclass

# the owner's claim states
FREE, MINE, EXPIRED, GONE, CLAIMED = "free", "mine", "expired", "gone", "claimed"

BUSY = "451 4.4.5 an earlier delivery of this message is still in progress"
LOST = "451 4.4.5 another relay took this message over; the rest follows on retry"
RUNNING_OUT = ("451 4.3.0 the claim on this message could not be renewed; the rest follows on "
               "retry")

MARGIN = 10.0  # seconds: clock skew between relays plus the time to commit a copy's record
POLL = 0.5  # seconds between two looks at a claim held by another relay

# The SQL, portable (SQLite >= 3.24 and PostgreSQL >= 9.5: INSERT ... ON CONFLICT), with `?`
# placeholders; the table is migration 8 in relay.store. TAKE inserts the claim, or takes over
# a row that is expired or already the owner's; a live claim of another owner is left alone
# (rowcount 0): one statement, so two relays never both get it. RELEASE deletes the owner's
# claim and any claim expired before a time given. SEIZE takes over the live claim of an owner
# known to be gone, only if that owner still holds it (compare and swap).
TAKE = ("INSERT INTO claims (identity, owner, expires) VALUES (?, ?, ?) "
        "ON CONFLICT(identity) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
        "WHERE claims.expires < ? OR claims.owner = excluded.owner")
HOLDER = "SELECT owner, expires FROM claims WHERE identity = ?"
RELEASE = "DELETE FROM claims WHERE (identity = ? AND owner = ?) OR expires < ?"
SEIZE = "UPDATE claims SET owner = ?, expires = ? WHERE identity = ? AND owner = ?"


@dataclass(frozen=True)
class Timing:
    """How long a claim lasts (`lease`), how often its holder renews it (`renew`), and how
    long a copy may take at the most (`copy`: a copy starts only while the lease has that much
    left)."""

    lease: float
    renew: float
    copy: float


def timing(upstream_timeout: float) -> Timing:
    """The lease from `[upstream] timeout` (default 60 s: a lease of 210 s, renewed every 70 s).

    A copy in flight ends within the upstream timeout, so the holder starts a copy only while
    its lease has `copy` = timeout + MARGIN left: should it stop being able to renew (the
    database unreachable, the process frozen), its last copies have ended and been recorded
    before another relay can take the claim over. The lease is three times that, renewed every
    third: a renewal may come a whole `copy` late before copies pause. The fan-out budget needs
    no say: the lease is renewed for as long as the fan-out runs. And the lease stays under
    Postfix's retry interval (minimal_backoff_time, 300 s) for the default timeout: after a
    kill -9 the next retry finds the claim expired."""
    copy = upstream_timeout + MARGIN
    return Timing(lease=3 * copy, renew=copy, copy=copy)


def state(holder: tuple[str, float] | None, me: str, now: float, gone: bool = False) -> str:
    """The claim as `me` finds it: FREE (no row), MINE, EXPIRED (another owner's, ended before
    `now`), GONE (another owner's, live, but that process is known to be gone: `gone`) or
    CLAIMED (another owner's, live). FREE, MINE and EXPIRED are TAKE's WHERE clause."""
    if holder is None:
        return FREE
    owner, expires = holder
    if owner == me:
        return MINE
    if expires < now:
        return EXPIRED
    return GONE if gone else CLAIMED


@dataclass(frozen=True)
class Step:
    """What to do about a claim: take it (`take`; by SEIZE from the owner `seize` when that one
    is gone), or look again after `wait` seconds, or answer the client `reply`; `note`: a log
    line (a claim taken over)."""

    take: bool
    wait: float | None = None
    reply: str | None = None
    note: str | None = None
    seize: str | None = None


def decide(holder: tuple[str, float] | None, me: str, now: float, left: float,
           gone: bool = False) -> Step:
    """What `me` does about the claim on a message it is about to deliver, with `left` seconds
    of its time budget to go: a free, own or expired claim is taken (TAKE decides if two take
    it at once), so is the claim of a process known to be gone (SEIZE, only from that owner);
    another relay's live claim is waited for, looking again every POLL seconds, as an attempt
    waits for an earlier one in the same process, and answered 451 4.4.5 (the client retries
    later) once the budget is used up. Nothing is sent meanwhile."""
    s = state(holder, me, now, gone)
    if s in (FREE, MINE):
        return Step(True)
    assert holder is not None
    if s == EXPIRED:
        return Step(True, note=f"claim of {holder[0]} expired {now - holder[1]:.0f} s ago "
                                f"(that relay stopped?): taking the message over")
    if s == GONE:
        return Step(True, note=f"claim of {holder[0]}: that process is gone (killed?), taking "
                                f"the message over", seize=holder[0])
    if left <= 0:
        return Step(False, reply=BUSY)
    return Step(False, wait=min(POLL, left, max(holder[1] - now, 0.0) + 0.01))


def halt(now: float, held_until: float, t: Timing, lost: bool) -> str | None:
    """Why the holder of a claim starts no further copy (the reply those copies get), or None:
    another relay took the claim over (the holder's lease had run out), or the lease may end
    before a copy started now would (the last renewals failed)."""
    if lost:
        return LOST
    if now + t.copy >= held_until:
        return RUNNING_OUT
    return None
