"""Delivery's decisions as tables: the outcomes of one upstream transaction, what remains to
send on a retry, when a fan-out stops starting copies, the reply for a set of states and when a
delivery status notification is due. Rows written from the behaviour of the code before it was
moved out of relay/delivery.py (each row was checked against that code)."""

from __future__ import annotations

import pytest

from relay import outcomes
from relay.outcomes import ACCEPTED, PENDING, PERMFAIL, TEMPFAIL, Outcome
from relay.smtpclient import Reply

A, B, C, D = "a@example.com", "b@example.com", "c@example.com", "d@example.com"
OK = Outcome(ACCEPTED, "250 accepted")


def R(code: int, text: str = "ok") -> Reply:  # noqa: N802
    return Reply(code, text)


# --- one upstream transaction ---------------------------------------------------------------

TRANSACTIONS = [
    # (recipients, MAIL, RCPT replies, DATA reply or None) -> {recipient: (state, reply)}
    ([A, B], R(250), [R(250), R(250)], R(250),
     {A: (ACCEPTED, "250 accepted"), B: (ACCEPTED, "250 accepted")}),
    ([A, B], R(550, "5.7.1 sender refused"), [], None,
     {A: (PERMFAIL, "550 5.7.1 sender refused"), B: (PERMFAIL, "550 5.7.1 sender refused")}),
    ([A], R(451, "4.3.0 try later"), [], None, {A: (TEMPFAIL, "451 4.3.0 try later")}),
    ([A, B], R(250), [R(250), R(550, "5.1.1 <b>: user unknown")], R(250),
     {A: (ACCEPTED, "250 accepted"), B: (PERMFAIL, "550 5.1.1 <b>: user unknown")}),
    ([A, B], R(250), [R(450, "4.2.1 busy"), R(250)], R(250),
     {A: (TEMPFAIL, "450 4.2.1 busy"), B: (ACCEPTED, "250 accepted")}),
    # the connection went before every RCPT was answered
    ([A, B], R(250), [R(250)], None,
     {A: (TEMPFAIL, "451 4.4.0 no DATA reply"), B: (TEMPFAIL, "451 4.4.0 no reply for recipient")}),
    ([A], R(250), [R(250)], R(554, "5.6.0 content refused"),
     {A: (PERMFAIL, "554 5.6.0 content refused")}),
    ([A, B], R(250), [R(550, "5.1.1 no"), R(250)], R(452, "4.3.1 full"),
     {A: (PERMFAIL, "550 5.1.1 no"), B: (TEMPFAIL, "452 4.3.1 full")}),
    # neither 2xx nor 5xx is temporary; a multi-line reply becomes one line
    ([A], R(250), [R(250)], R(354, "go on"), {A: (TEMPFAIL, "354 go on")}),
    ([A], R(250), [R(550, "5.1.1 line one\nline\ttwo")], R(250),
     {A: (PERMFAIL, "550 5.1.1 line one line two")}),
    ([A], R(250), [R(550, "x" * 500)], R(250), {A: (PERMFAIL, "550 " + "x" * 393 + "...")}),
]


@pytest.mark.parametrize(("rcpts", "mail", "rcpt_replies", "data", "want"), TRANSACTIONS)
def test_outcomes_of_one_transaction(rcpts: list[str], mail: Reply, rcpt_replies: list[Reply],
                                     data: Reply | None, want: dict[str, tuple[str, str]]) -> None:
    got = outcomes.of_transaction(rcpts, mail, rcpt_replies, data)
    assert {r: (o.state, o.reply) for r, o in got.items()} == want


@pytest.mark.parametrize(("state", "final"), [
    (ACCEPTED, True), (PERMFAIL, True), (TEMPFAIL, False), (PENDING, False)])
def test_final_states(state: str, final: bool) -> None:
    assert Outcome(state, "").final is final


@pytest.mark.parametrize(("sender", "wire"), [
    ("<>", ""), ("", ""), ("boss@example.com", "boss@example.com")])
def test_wire_sender(sender: str, wire: str) -> None:
    assert outcomes.wire_sender(sender) == wire


# --- what remains to send -------------------------------------------------------------------

REMAINING = [
    # (recipients, the store's {recipient: (state, reply)}) -> still to send
    ([A, B, C], {}, [A, B, C]),
    ([A, B, C, D], {A: (ACCEPTED, "250 ok"), B: (PERMFAIL, "550 no"), C: (TEMPFAIL, "451 later"),
                    D: (PENDING, None)}, [C, D]),
    # recipients compare without case; the recipient keeps the client's spelling
    (["A@Example.com", B], {A: (ACCEPTED, "250 ok")}, [B]),
    ([A, "B@EXAMPLE.COM"], {"b@Example.com": (PERMFAIL, None)}, [A]),
    ([A], {A: (ACCEPTED, None), B: (TEMPFAIL, None)}, []),
]


@pytest.mark.parametrize(("rcpts", "rows", "want"), REMAINING)
def test_what_remains_to_send(rcpts: list[str], rows: dict[str, tuple[str, str | None]],
                              want: list[str]) -> None:
    assert outcomes.remaining(rcpts, outcomes.recorded(rows)) == want


def test_recorded_states_as_outcomes() -> None:
    assert outcomes.recorded({"A@x": (ACCEPTED, "250 ok"), "b@x": (PENDING, None)}) == {
        "a@x": Outcome(ACCEPTED, "250 ok"), "b@x": Outcome(PENDING, "")}


STATES = [
    # (recipients, this attempt's outcomes, recorded) -> each recipient's state
    ([A, B], {A: OK}, {B: Outcome(PERMFAIL, "550 no")}, {A: OK, B: Outcome(PERMFAIL, "550 no")}),
    ([A], {A: Outcome(TEMPFAIL, "451 x")}, {A: OK}, {A: Outcome(TEMPFAIL, "451 x")}),
    (["A@X"], {}, {"a@x": OK}, {"A@X": OK}),
    ([A, B], {A: OK}, {}, {A: OK, B: Outcome(TEMPFAIL, "451 4.4.0 not attempted")}),
]


@pytest.mark.parametrize(("rcpts", "results", "known", "want"), STATES)
def test_states_after_an_attempt(rcpts: list[str], results: dict[str, Outcome],
                                 known: dict[str, Outcome], want: dict[str, Outcome]) -> None:
    assert outcomes.states(rcpts, results, known) == want


@pytest.mark.parametrize(("record_all", "prior", "got", "want"), [
    (False, False, {A: OK, B: OK}, False),  # all taken at once: nothing to remember
    (False, False, {A: OK, B: Outcome(TEMPFAIL, "451")}, True),
    (False, False, {A: Outcome(PERMFAIL, "550")}, True),
    (False, True, {A: OK}, True),  # an earlier attempt was recorded: record the rest too
    (True, False, {A: OK}, True),  # all-staff mail delivered untouched: a retry stays so
])
def test_ordinary_mail_outcomes_are_recorded_when(record_all: bool, prior: bool,
                                                  got: dict[str, Outcome], want: bool) -> None:
    assert outcomes.must_record(record_all, prior, got) is want


def test_rows_for_the_store() -> None:
    got = {A: OK, B: Outcome(PERMFAIL, "550 no")}
    assert outcomes.rows(got.items()) == [(A, ACCEPTED, "250 accepted"), (B, PERMFAIL, "550 no")]


SHUTDOWN = "451 4.3.2 relay shutting down; the rest follows on retry"
BUDGET = "451 4.4.5 fan-out time budget used up; the rest follows on retry"
TROUBLE = "451 4.3.0 local database trouble; the rest follows on retry"


@pytest.mark.parametrize(("stopping", "now", "stop_new", "trouble", "want"), [
    (False, 10.0, 20.0, None, None),
    (True, 10.0, 20.0, None, SHUTDOWN),
    (True, 30.0, 20.0, TROUBLE, SHUTDOWN),
    (False, 20.0, 20.0, None, BUDGET),
    (False, 25.0, 20.0, TROUBLE, BUDGET),
    (False, 10.0, 20.0, TROUBLE, TROUBLE),
])
def test_when_a_fanout_starts_no_further_copy(stopping: bool, now: float, stop_new: float,
                                              trouble: str | None, want: str | None) -> None:
    assert outcomes.halt(stopping, now, stop_new, trouble) == want


# --- the reply ------------------------------------------------------------------------------

@pytest.mark.parametrize(("t0", "budget", "timeout", "want"), [
    (0.0, 240.0, 30.0, (240.0, 280.0)),  # the defaults
    (0.0, 280.0, 60.0, (280.0, 290.0)),  # REPLY_LIMIT caps the reply
    (0.0, 300.0, 30.0, (285.0, 290.0)),  # ... and copies stop 5 s before it
    (100.0, 0.5, 5.0, (100.5, 115.5)),
])
def test_reply_windows(t0: float, budget: float, timeout: float,
                       want: tuple[float, float]) -> None:
    assert outcomes.windows(t0, budget, timeout) == want


@pytest.mark.parametrize(("stopping", "want"), [
    (True, "451 4.3.2 relay shutting down, try again later"),
    (False, "451 4.4.5 delivery still in progress, try again later"),
])
def test_reply_when_the_window_closes_first(stopping: bool, want: str) -> None:
    assert outcomes.late_reply(stopping) == want


LISTS = ("all-staff@example.com", "board@example.com")
BOSS = "boss@example.com"
NOTICE = "250 2.0.0 Q1 accepted; 1 recipient(s) refused, see the delivery status notification"

CONCLUSIONS = [
    # (recipients' states, envelope sender) -> (reply, refused, why withheld, notice due)
    ({A: OK, B: OK}, BOSS, ("250 2.0.0 Q1 accepted", [], None, False)),
    ({A: OK, B: Outcome(TEMPFAIL, "451 4.4.2 upstream connection trouble: X"),
      C: Outcome(PERMFAIL, "550 no")}, BOSS,
     ("451 4.4.2 1 of 3 recipient(s) not delivered yet, try again later "
      "(upstream connection trouble: X)", [], None, False)),
    ({A: Outcome(TEMPFAIL, "450 mailbox busy")}, BOSS,
     ("450 4.0.0 1 of 1 recipient(s) not delivered yet, try again later (mailbox busy)",
      [], None, False)),
    ({A: Outcome(TEMPFAIL, "421 4.4.2 closing"), B: Outcome(TEMPFAIL, "452 4.2.2 full")}, BOSS,
     ("451 4.4.2 2 of 2 recipient(s) not delivered yet, try again later (closing)",
      [], None, False)),
    ({A: Outcome(PENDING, "")}, BOSS,
     ("451 4.4.0 1 of 1 recipient(s) not delivered yet, try again later ()", [], None, False)),
    ({A: Outcome(TEMPFAIL, "451 4.4.0 not attempted")}, BOSS,
     ("451 4.4.0 1 of 1 recipient(s) not delivered yet, try again later (not attempted)",
      [], None, False)),
    ({A: Outcome(TEMPFAIL, "354 go on")}, BOSS,
     ("451 4.4.0 1 of 1 recipient(s) not delivered yet, try again later (go on)",
      [], None, False)),
    # every recipient refused: the upstream's 5xx, no notice
    ({A: Outcome(PERMFAIL, "550 5.1.1 <a>: user unknown")}, BOSS,
     ("550 5.1.1 <a>: user unknown", [], None, False)),
    ({A: Outcome(PERMFAIL, "553 5.1.3 bad address"), B: Outcome(PERMFAIL, "550 no")}, BOSS,
     ("553 5.1.3 bad address (and every other recipient refused too)", [], None, False)),
    ({A: Outcome(PERMFAIL, "521 5.3.2 no mail here")}, BOSS,
     ("554 5.3.2 no mail here", [], None, False)),
    ({A: Outcome(PERMFAIL, "")}, BOSS, ("554 5.0.0 refused by the upstream", [], None, False)),
    # some accepted, some refused: 250 and a notice to the sender
    ({A: OK, B: Outcome(PERMFAIL, "550 no")}, BOSS, (NOTICE, [B], None, True)),
    ({A: Outcome(PERMFAIL, "550 no"), B: OK, C: Outcome(PERMFAIL, "552 full")}, BOSS,
     ("250 2.0.0 Q1 accepted; 2 recipient(s) refused, see the delivery status notification",
      [A, C], None, True)),
    # ... but never to the null sender, and never to a list address
    ({A: OK, B: Outcome(PERMFAIL, "550 no")}, "<>", (NOTICE, [B], None, False)),
    ({A: OK, B: Outcome(PERMFAIL, "550 no")}, "All-Staff@Example.com",
     (NOTICE, [B], "the envelope sender is a list address", False)),
]


@pytest.mark.parametrize(("states", "sender", "want"), CONCLUSIONS)
def test_reply_and_notice_for_a_set_of_states(states: dict[str, Outcome], sender: str,
                                              want: tuple[str, list[str], str | None, bool]
                                              ) -> None:
    c = outcomes.conclude("Q1", sender, list(states), states, LISTS)
    assert (c.reply, c.refused, c.withheld, c.notice_due) == want


@pytest.mark.parametrize(("out", "want"), [
    (Outcome(TEMPFAIL, "451 4.4.1 upstream unreachable"),
     "451 4.4.0 could not send the delivery status notification, try again later "
     "(451 4.4.1 upstream unreachable)"),
    (Outcome(ACCEPTED, "250 accepted"), None),
    (Outcome(PERMFAIL, "550 no"), None),  # refused for good: never retried
])
def test_reply_when_the_notice_cannot_go(out: Outcome, want: str | None) -> None:
    assert outcomes.notice_not_sent(out) == want


@pytest.mark.parametrize(("sender", "lists", "want"), [
    ("boss@example.com", LISTS, None),
    ("All-Staff@Example.com", LISTS, "the envelope sender is a list address"),
    ("board@example.com", LISTS, "the envelope sender is a list address"),
    ("board@example.com", (), None),
])
def test_no_notice_to_a_list_address(sender: str, lists: tuple[str, ...],
                                     want: str | None) -> None:
    assert outcomes.withheld(sender, lists) == want


# --- SMTP reply text ------------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "status"), [
    ("550 5.1.1 user unknown", "5.1.1"),
    ("550 user unknown", "5.0.0"),
    ("552 4.2.2 mismatched class", "5.0.0"),
    ("", "5.0.0"),
    ("451 4.4.2 trouble", "4.4.2"),
    ("250 2.0.0 ok", "2.0.0"),
])
def test_status_of(reply: str, status: str) -> None:
    assert outcomes.status_of(reply) == status


@pytest.mark.parametrize(("code", "state"), [
    (250, ACCEPTED), (299, ACCEPTED), (421, TEMPFAIL), (451, TEMPFAIL), (354, TEMPFAIL),
    (550, PERMFAIL), (599, PERMFAIL), (600, TEMPFAIL)])
def test_outcome_of_a_reply_code(code: int, state: str) -> None:
    assert outcomes.outcome(code, "text") == Outcome(state, f"{code} text")
