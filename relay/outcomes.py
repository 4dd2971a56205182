"""Delivery's decisions, pure: values in, values out (the Deliverer in relay.delivery awaits and
carries them out; tests/test_outcomes.py holds them as tables).

* A recipient's outcome (`Outcome`: accepted, temporary or permanent failure, one reply line)
  and the outcomes of one upstream transaction (`of_transaction`).
* What remains to send on a retry: every recipient not already accepted or permanently refused
  in the store (`recorded`, `remaining`, `states`), and whether a fan-out stops starting copies
  (`halt`).
* The reply to the client for a set of states and whether a delivery status notification is
  due (`conclude`, from `reply_for`, `accepted`, `withheld`, `notice_owed`): 451 while anything
  is temporary, the upstream's 5xx when every recipient is refused, else 250 and a notice of
  the refusals; `notice_not_sent` when the notice cannot go yet.
* The reply window of a DATA (`windows`).

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

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# a copy's (or an ordinary recipient's) state, as the store keeps it; PENDING: not answered yet
PENDING, ACCEPTED, TEMPFAIL, PERMFAIL = "pending", "accepted", "tempfail", "permfail"
FINAL = (ACCEPTED, PERMFAIL)
REPLY_LIMIT = 290.0  # seconds from the end of DATA to the reply, at the latest

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Outcome:
    state: str  # ACCEPTED / TEMPFAIL / PERMFAIL
    reply: str  # "250 ..." or the refusal, one line

    @property
    def final(self) -> bool:
        return self.state in FINAL


# --- SMTP reply text ----------------------------------------------------------------------

def one_line(text: str, limit: int = 500) -> str:
    """A reply squeezed onto one printable line (multi-line replies joined by spaces)."""
    s = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def status_of(reply: str) -> str:
    """The RFC 3463 status of a reply: its enhanced code when it has one of the same class as
    the basic code, else X.0.0."""
    parts = reply.split(None, 2)
    basic = parts[0] if parts else ""
    cls = basic[:1] if basic[:1] in ("2", "4", "5") else "5"
    if len(parts) > 1 and _ENHANCED.match(parts[1]) and parts[1][0] == cls:
        return parts[1]
    return f"{cls}.0.0"


def line(text: str) -> str:
    return one_line(text, 400)


def outcome(code: int, message: str) -> Outcome:
    if 200 <= code < 300:
        state = ACCEPTED
    elif 500 <= code < 600:
        state = PERMFAIL
    else:
        state = TEMPFAIL
    return Outcome(state, line(f"{code} {message}"))


def wire_sender(sender: str) -> str:
    return "" if sender in ("<>", "") else sender


# --- one upstream transaction -------------------------------------------------------------

class Reply(Protocol):
    """An upstream reply (relay.smtpclient.Reply)."""

    @property
    def code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def ok(self) -> bool: ...


def of_transaction(rcpts: Sequence[str], mail: Reply, rcpt_replies: Sequence[Reply],
                   data: Reply | None) -> dict[str, Outcome]:
    """Each recipient's outcome from the upstream's replies: MAIL refused: that for all;
    RCPT refused: that; DATA refused: that for the recipients RCPT took (DATA not reached:
    a temporary failure)."""
    if not mail.ok:
        return {r: outcome(mail.code, mail.text) for r in rcpts}
    out: dict[str, Outcome] = {}
    for i, r in enumerate(rcpts):
        rr = rcpt_replies[i] if i < len(rcpt_replies) else None
        if rr is None:
            out[r] = Outcome(TEMPFAIL, "451 4.4.0 no reply for recipient")
        elif not rr.ok:
            out[r] = outcome(rr.code, rr.text)
        elif data is None:
            out[r] = outcome(451, "4.4.0 no DATA reply")
        elif data.ok:
            out[r] = Outcome(ACCEPTED, "250 accepted")
        else:
            out[r] = outcome(data.code, data.text)
    return out


# --- what remains to send -----------------------------------------------------------------

def recorded(rows: Mapping[str, tuple[str, str | None]]) -> dict[str, Outcome]:
    """The store's {recipient: (state, reply)} as outcomes, by lower-cased recipient."""
    return {r.lower(): Outcome(st, rep or "") for r, (st, rep) in rows.items()}


def remaining(rcpts: Sequence[str], known: Mapping[str, Outcome]) -> list[str]:
    """The recipients still to send to: every one not already accepted or permanently refused
    (a temporary failure or a copy never answered goes again)."""
    return [r for r in rcpts if not (r.lower() in known and known[r.lower()].final)]


def states(rcpts: Sequence[str], results: Mapping[str, Outcome],
           known: Mapping[str, Outcome]) -> dict[str, Outcome]:
    """Each recipient's state after an attempt: this attempt's outcome, else the recorded one,
    else not attempted (temporary)."""
    return {r: results.get(r) or known.get(r.lower())
            or Outcome(TEMPFAIL, "451 4.4.0 not attempted") for r in rcpts}


def rows(outcomes: Iterable[tuple[str, Outcome]]) -> list[tuple[str, str, str | None]]:
    """(recipient, state, reply) rows for the store."""
    return [(r, o.state, o.reply) for r, o in outcomes]


def must_record(record_all: bool, prior: bool, outcomes: Mapping[str, Outcome]) -> bool:
    """Whether ordinary mail's per-recipient outcomes are written: when asked to (all-staff
    mail delivered untouched), when an earlier attempt was recorded, or when not every
    recipient was accepted (a retry must go only to the others)."""
    return record_all or prior or any(o.state != ACCEPTED for o in outcomes.values())


def halt(stopping: bool, now: float, stop_new: float, trouble: str | None) -> str | None:
    """Why a fan-out starts no further copy (the reply those copies get), or None: the relay
    is shutting down, the time budget is used up, or the store failed (`trouble`)."""
    if stopping:
        return "451 4.3.2 relay shutting down; the rest follows on retry"
    if now >= stop_new:
        return "451 4.4.5 fan-out time budget used up; the rest follows on retry"
    return trouble


# --- the reply ----------------------------------------------------------------------------

def windows(t0: float, fanout_budget: float, upstream_timeout: float) -> tuple[float, float]:
    """(stop starting copies at, reply at the latest at) for a DATA that ended at t0."""
    reply_by = t0 + min(REPLY_LIMIT, fanout_budget + upstream_timeout + 10)
    stop_new = min(t0 + fanout_budget, reply_by - 5)
    return stop_new, reply_by


def late_reply(stopping: bool) -> str:
    """The reply when the reply window closes before the delivery is done."""
    return ("451 4.3.2 relay shutting down, try again later" if stopping else
            "451 4.4.5 delivery still in progress, try again later")


def reply_for(rcpts: Sequence[str], states: Mapping[str, Outcome]) -> str | None:
    """The reply when the states alone decide it: 451 while any recipient is temporary (the
    client retries and resumes), the upstream's 5xx when every one is refused permanently;
    None when every one is final and some accepted (250, once refusals are reported)."""
    temp = [r for r in rcpts if not states[r].final]
    if temp:
        first = states[temp[0]].reply
        code = first[:3] if first[:3] in ("450", "451", "452") else "451"
        enhanced = status_of(first) if first[:1] == "4" else "4.4.0"
        detail = first.split(None, 2)[2:] if enhanced in first else first.split(None, 1)[1:]
        return line(f"{code} {enhanced} {len(temp)} of {len(rcpts)} recipient(s) not "
                    f"delivered yet, try again later ({''.join(detail) or first})")
    perm = refused(rcpts, states)
    if perm and len(perm) == len(rcpts):
        first = states[perm[0]].reply
        code = int(first[:3]) if first[:3].isdigit() else 554
        if not 550 <= code <= 554:
            code = 554
        text = first[3:].strip() or "5.0.0 refused by the upstream"
        if len(rcpts) > 1:
            text = f"{text} (and every other recipient refused too)"
        return line(f"{code} {text}")
    return None


def refused(rcpts: Sequence[str], states: Mapping[str, Outcome]) -> list[str]:
    """The recipients refused permanently."""
    return [r for r in rcpts if states[r].state == PERMFAIL]


def accepted(qid: str, refused: int) -> str:
    """The 250 once every recipient is final and some accepted (`refused` of them reported
    in the delivery status notification)."""
    if refused:
        return f"250 2.0.0 {qid} accepted; {refused} recipient(s) refused, " \
               "see the delivery status notification"
    return f"250 2.0.0 {qid} accepted"


# --- the delivery status notification -----------------------------------------------------

def withheld(sender: str, lists: Iterable[str]) -> str | None:
    """Why no notification may go to `sender`, or None. A list address (`[policy] lists` or
    `members`) never gets one: it would reach every member ("MAIL FROM:<all-staff@...>" with one
    refused recipient would otherwise notify the whole staff)."""
    if sender.lower() in {a.lower() for a in lists}:
        return "the envelope sender is a list address"
    return None


def notice_owed(sender: str, refused: Sequence[str], why_withheld: str | None) -> bool:
    """Whether the sender is owed a notification of the permanent refusals: some recipient was
    refused, the notice is not withheld, and the sender is not the null sender. (One that is
    owed goes once: the Deliverer sends it only when the store has no notice recorded.)"""
    return bool(refused) and not why_withheld and bool(wire_sender(sender))


@dataclass(frozen=True)
class Conclusion:
    """What an attempt's states decide: the reply, and whether a notice is owed."""

    reply: str  # the reply to the client (unless a notice that is due cannot go: notice_not_sent)
    refused: list[str]  # the recipients refused permanently, when the reply is a 250
    withheld: str | None  # why no notice may go to the sender (dsn to a list address), or None
    notice_due: bool  # the sender is owed a notice of `refused` (sent unless one is recorded)


def conclude(qid: str, sender: str, rcpts: Sequence[str], states: Mapping[str, Outcome],
             lists: Iterable[str]) -> Conclusion:
    """The reply to the client for every recipient's state, and the notice it owes: 451 while
    anything is temporary, 5xx when every recipient is refused, else 250, with a notice of the
    refusals unless the sender is the null sender or a list address (`lists`)."""
    reply = reply_for(rcpts, states)
    if reply is not None:
        return Conclusion(reply, [], None, False)
    perm = refused(rcpts, states)
    why = withheld(sender, lists) if perm else None
    return Conclusion(accepted(qid, len(perm)), perm, why, notice_owed(sender, perm, why))


def notice_not_sent(out: Outcome) -> str | None:
    """The reply when the upstream did not take the notification for now (the client retries
    and the notice goes then), else None (taken, or refused for good: never retried)."""
    if out.state == TEMPFAIL:
        return line("451 4.4.0 could not send the delivery status notification, "
                    f"try again later ({out.reply})")
    return None
