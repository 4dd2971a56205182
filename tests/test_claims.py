"""Claims across relays as tables: the state a relay finds a claim in, what it does about it
(take it, wait, answer 451 4.4.5), when its copies stop, and the lease from the timeout.
tests/test_lease.py runs the same rows against the SQL on a real database."""

from __future__ import annotations

import pytest
from claimrows import ME, NOW, OTHER, STATES

from relay import claims
from relay.claims import BUSY, EXPIRED, FREE, GONE, LOST, MINE, POLL, RUNNING_OUT, Step


@pytest.mark.parametrize(("holder", "want"), STATES)
def test_state(holder: tuple[str, float] | None, want: str) -> None:
    assert claims.state(holder, ME, NOW) == want


@pytest.mark.parametrize(("holder", "want"), [
    # the holder's process known to be gone (its lock file on this host is free)
    (None, FREE),
    ((ME, NOW + 100), MINE),
    ((OTHER, NOW - 1), EXPIRED),  # expired anyway: TAKE, as for any expired claim
    ((OTHER, NOW), GONE),
    ((OTHER, NOW + 200), GONE),  # live, but nobody renews it: SEIZE from that owner
])
def test_state_of_a_claim_whose_owner_is_gone(holder: tuple[str, float] | None,
                                              want: str) -> None:
    assert claims.state(holder, ME, NOW, gone=True) == want


DECISIONS = [
    # (holder, seconds of budget left) -> Step
    (None, 100.0, Step(True)),
    (None, 0.0, Step(True)),  # free: taken even with no time left (as a free lock is)
    ((ME, NOW + 50), 100.0, Step(True)),
    ((OTHER, NOW - 30), 100.0, Step(True, note=f"claim of {OTHER} expired 30 s ago (that "
                                               "relay stopped?): taking the message over")),
    ((OTHER, NOW - 30), 0.0, Step(True, note=f"claim of {OTHER} expired 30 s ago (that "
                                             "relay stopped?): taking the message over")),
    # another relay's live claim: look again in POLL seconds, or sooner when less is left
    ((OTHER, NOW + 200), 100.0, Step(False, wait=POLL)),
    ((OTHER, NOW + 200), 0.2, Step(False, wait=0.2)),
    ((OTHER, NOW + 0.1), 100.0, Step(False, wait=0.1 + 0.01)),  # it ends before the poll
    ((OTHER, NOW), 100.0, Step(False, wait=0.01)),
    # ... and 451 4.4.5 once the budget is used up: nothing was sent
    ((OTHER, NOW + 200), 0.0, Step(False, reply=BUSY)),
    ((OTHER, NOW + 200), -5.0, Step(False, reply=BUSY)),
]
GONE_NOTE = f"claim of {OTHER}: that process is gone (killed?), taking the message over"
DECISIONS_GONE = [
    # (holder, seconds of budget left) -> Step, when the holder's process is known to be gone
    ((OTHER, NOW + 200), 100.0, Step(True, note=GONE_NOTE, seize=OTHER)),
    ((OTHER, NOW + 200), 0.0, Step(True, note=GONE_NOTE, seize=OTHER)),
    ((OTHER, NOW - 30), 100.0, DECISIONS[3][2]),  # expired: taken by TAKE, no SEIZE
    (None, 100.0, Step(True)),
    ((ME, NOW + 50), 100.0, Step(True)),
]


def same_step(got: Step, want: Step) -> bool:
    return ((got.take, got.reply, got.note, got.seize) == (want.take, want.reply, want.note,
                                                          want.seize)
            and (got.wait == pytest.approx(want.wait) if want.wait is not None
                 else got.wait is None))


@pytest.mark.parametrize(("holder", "left", "want"), DECISIONS)
def test_decide(holder: tuple[str, float] | None, left: float, want: Step) -> None:
    assert same_step(claims.decide(holder, ME, NOW, left), want)


@pytest.mark.parametrize(("holder", "left", "want"), DECISIONS_GONE)
def test_decide_when_the_owner_is_gone(holder: tuple[str, float] | None, left: float,
                                       want: Step) -> None:
    assert same_step(claims.decide(holder, ME, NOW, left, gone=True), want)


def test_the_busy_reply_is_the_one_an_attempt_in_the_same_process_gets() -> None:
    assert BUSY == "451 4.4.5 an earlier delivery of this message is still in progress"


T = claims.Timing(lease=210.0, renew=70.0, copy=70.0)

HALTS = [
    # (now, lease confirmed until, lost) -> why no further copy starts, or None
    (NOW, NOW + 210, False, None),  # just taken or renewed
    (NOW, NOW + 140, False, None),  # a renewal due now
    (NOW, NOW + 70.001, False, None),  # a renewal a whole `copy` late: still going
    (NOW, NOW + 70, False, RUNNING_OUT),  # a copy started now could outlast the lease
    (NOW, NOW + 10, False, RUNNING_OUT),
    (NOW, NOW - 10, False, RUNNING_OUT),
    (NOW, NOW + 210, True, LOST),  # another relay took the claim over
]


@pytest.mark.parametrize(("now", "until", "lost", "want"), HALTS)
def test_halt(now: float, until: float, lost: bool, want: str | None) -> None:
    assert claims.halt(now, until, T, lost) == want


@pytest.mark.parametrize(("timeout", "lease", "renew", "copy"), [
    (60.0, 210.0, 70.0, 70.0),  # the default: a kill -9 claim is gone before Postfix retries
    (5.0, 45.0, 15.0, 15.0),
    (1.0, 33.0, 11.0, 11.0),
])
def test_timing_from_the_upstream_timeout(timeout: float, lease: float, renew: float,
                                          copy: float) -> None:
    t = claims.timing(timeout)
    assert (t.lease, t.renew, t.copy) == (lease, renew, copy)
    # a renewal may be a whole `copy` late before copies pause, and a copy started just before
    # they pause ends before the lease does
    assert t.lease - t.renew - t.copy >= t.copy
