"""Claims across relays on a real database: the claim SQL against the table of
tests/claimrows.py, two connections racing for one claim, and two relays (two
relay.server.Relay instances, each with its own upstream sink, one SQLite file and one key
file) sharing a list's delivery: a retry crossing over, the same message on both at once, the
claim of a killed relay, renewal while a fan-out runs, a claim taken over. And two `relay
serve` processes on one SQLite file, one killed with SIGKILL mid fan-out (the process helpers
are tests/test_crash.py's, as bench/crash_loop.py uses them)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from claimrows import ME, NOW, OTHER, STATES
from conftest import Sink, StartRelay, make_message, smtp_send, start_sink
from pgserver import Backend
from test_crash import (
    SENDER,
    RelayProcess,
    SinkProcess,
    all_staff_message,
    committed_copies,
    expected_copies,
    recipients,
    send_once,
    send_until_250,
)

from relay import claims, keys, lease
from relay.claims import EXPIRED, FREE, MINE
from relay.config import Config
from relay.decoding import decode
from relay.fingerprint import prepare
from relay.hashes import message_identity
from relay.scheme import SCHEME
from relay.store import ACCEPTED, Store, open_store
from relay.tokens import excerpt_words

BOSS = "boss@example.com"
LIST = "all-staff@example.com"


# --- the SQL on a real database -------------------------------------------------------------

@pytest.mark.parametrize(("holder", "found"), STATES)
def test_take_follows_the_table(tmp_path: Path, holder: tuple[str, float] | None,
                                found: str, backend: Backend) -> None:
    store = backend.store(tmp_path / "r.db")
    if holder is not None:
        store.db.execute("INSERT INTO claims VALUES ('id1', ?, ?)", holder)
    assert lease.holder(store, "id1") == holder
    taken = lease.take(store, "id1", ME, NOW, NOW + 210)
    assert taken == (found in (FREE, MINE, EXPIRED))
    assert lease.holder(store, "id1") == ((ME, NOW + 210) if taken else holder)
    store.close()


def test_release_removes_its_own_claim_and_expired_ones_only(tmp_path: Path,
                                                            backend: Backend) -> None:
    store = backend.store(tmp_path / "r.db")
    for identity, owner, expires in [("mine", ME, NOW + 100), ("live", OTHER, NOW + 100),
                                     ("dead", OTHER, NOW - 1), ("other", ME, NOW + 100)]:
        assert lease.take(store, identity, owner, NOW - 50, expires)
    lease.release(store, "mine", ME, NOW)
    lease.release(store, "live", ME, NOW)  # not ME's: stays
    assert dict(store.db.execute("SELECT identity, owner FROM claims").fetchall()) == {
        "live": OTHER, "other": ME}
    store.close()


def test_seize_takes_a_claim_only_from_the_owner_named(tmp_path: Path,
                                                      backend: Backend) -> None:
    store = backend.store(tmp_path / "r.db")
    assert lease.take(store, "id1", OTHER, NOW, NOW + 200)
    assert not lease.seize(store, "id1", "mx3/1/somebody-else", ME, NOW + 210)
    assert lease.holder(store, "id1") == (OTHER, NOW + 200)
    assert lease.seize(store, "id1", OTHER, ME, NOW + 210)
    assert lease.holder(store, "id1") == (ME, NOW + 210)
    assert not lease.seize(store, "id2", OTHER, ME, NOW + 210)  # no claim: nothing to seize
    store.close()


def test_liveness_sees_a_killed_process_on_this_host_as_gone(tmp_path: Path) -> None:
    """A relay's lock file, held by a real process: alive while it runs, gone once it is
    killed with SIGKILL (the kernel releases the lock). Owners on another host, without a lock
    file here, or this process itself are never judged gone."""
    folder = tmp_path / "owners"
    me = lease.owner_id()
    live = lease.Liveness(folder, me)
    live.hold()
    host = me.split("/")[0]
    other = f"{host}/4242/0123456789abcdef"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n",
         str(folder / "0123456789abcdef.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert not live.gone(other)
        holder.kill()
        holder.wait()
        assert live.gone(other)
    finally:
        holder.kill()
        holder.wait()
    assert not live.gone(me)
    assert not live.gone("mx9/4242/0123456789abcdef")  # another host: its claims expire
    assert not live.gone(f"{host}/1/fedcba9876543210")  # no lock file here
    second = lease.Liveness(folder, lease.owner_id())  # another relay of this host, alive
    second.hold()
    assert not live.gone(second.owner) and not second.gone(me)
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"


def test_two_connections_never_both_take_a_claim(tmp_path: Path, backend: Backend) -> None:
    """Two connections (as two relay processes) take the same 300 claims at the same moments:
    each claim is taken exactly once."""
    backend.store(tmp_path / "r.db").close()
    won: list[list[str]] = [[], []]
    gate = threading.Barrier(2)

    def run(i: int) -> None:
        store = backend.store(tmp_path / "r.db")  # a connection of its own, in its thread
        for n in range(300):
            gate.wait()
            if lease.take(store, f"id{n}", f"owner{i}", NOW, NOW + 60):
                won[i].append(f"id{n}")
        store.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won[0] + won[1]) == sorted(f"id{n}" for n in range(300))
    assert won[0] and won[1]  # both connections won some: they really raced


# --- two relays, one log --------------------------------------------------------------------

@pytest.fixture
async def sinks() -> AsyncIterator[tuple[Sink, Sink]]:
    a, b = await start_sink(), await start_sink()
    yield a, b
    await a.close()
    await b.close()


async def two_relays(cfg: Config, start_relay: StartRelay, sinks: tuple[Sink, Sink],
                     upstream: dict[str, Any], **sections: dict[str, Any]) -> tuple[Any, Any]:
    """Two relays on one database and key file, each sending to its own upstream (as two
    Postfix hosts, each with its own relay)."""
    return tuple([await start_relay(cfg.with_keys(upstream={**upstream, "port": s.port},
                                                  **sections)) for s in sinks])


def sql(cfg: Config, stmt: str, params: list[Any] | None = None) -> list[Any]:
    """One statement on the relays' log (either backend), committed; the rows it returns."""
    store = open_store(cfg.store.path, cfg.store.url, create=False)
    try:
        cur = store.db.execute(stmt, params or [])
        return cur.fetchall() if stmt.startswith("SELECT") else []
    finally:
        store.close()


def copies(*sinks: Sink) -> Counter[str]:
    got = Counter(r for s in sinks for m in s.messages for r in m.rcpt_tos)
    assert all(len(m.rcpt_tos) == 1 for s in sinks for m in s.messages)
    return got


def claims_left(cfg: Config) -> list[tuple[str, str, float]]:
    return [tuple(r) for r in sql(cfg, "SELECT * FROM claims")]


async def test_a_list_of_2000_split_across_two_relays_gets_one_copy_each(
        base_cfg: Config, start_relay: StartRelay, sinks: tuple[Sink, Sink],
        tmp_path: Path, backend: Backend) -> None:
    """Relay A delivers 2,000 members but its upstream temp-fails every third; the retry goes
    to relay B, which sends exactly the missing copies, byte for byte the copies A would have
    made; a third attempt, on A, sends nothing. A leak of a copy from either host decodes to
    its recipient."""
    members = [f"member{i:04d}@example.com" for i in range(2000)]
    f = tmp_path / "staff.txt"
    f.write_text("\n".join(members) + "\n")
    base_cfg = backend.config(base_cfg)
    a, b = await two_relays(base_cfg, start_relay, sinks, dict(concurrency=8),
                            policy=dict(members={LIST: f}))
    sa, sb = sinks
    refused = members[::3]
    for r in refused:
        sa.rcpt_replies[r] = "451 4.2.1 mailbox busy, try later"
    data = make_message()
    reply = await smtp_send(a.port, BOSS, [LIST], data)
    assert reply.startswith("451"), reply
    assert copies(sa) == Counter(set(members) - set(refused))
    assert (await smtp_send(b.port, BOSS, [LIST], data)).startswith("250")
    assert copies(sb) == Counter(refused)  # only the missing copies, from B
    assert (await smtp_send(a.port, BOSS, [LIST], data)).startswith("250")
    assert copies(sa, sb) == Counter(members)  # every member exactly one copy
    assert len(sa.messages) + len(sb.messages) == 2000
    assert claims_left(base_cfg) == []

    # the copies are those of one signing, whichever relay made them
    store = open_store(base_cfg.store.path, base_cfg.store.url, create=False)
    identity = message_identity(data, BOSS)
    key_id, scheme = store.signing_of(identity)
    ring = keys.load(base_cfg.signature.key_file)
    p = prepare(data, BOSS, key_id, ring.get(key_id), scheme)
    made = {m.rcpt_tos[0]: m.data for s in sinks for m in s.messages}
    assert all(made[r] == p.copy_for(r) for r in members)
    assert len(set(made.values())) == 2000
    assert set(store.copy_details(identity).values()) == {(ACCEPTED, "250 accepted")}

    for leaker, sink in ((members[1], sa), (refused[5], sb)):
        (leaked,) = [m.data for m in sink.messages if m.rcpt_tos == [leaker]]
        text = leaked.split(b"\r\n\r\n", 1)[1].decode()
        rep = decode([excerpt_words(text)], store, ring, base_cfg.decode.threshold)
        assert rep.verdict == "identified", rep.as_json()
        assert rep.candidates[0].recipient == leaker
    store.close()


async def test_the_same_message_on_two_relays_at_once_is_sent_once(
        base_cfg: Config, start_relay: StartRelay, sinks: tuple[Sink, Sink],
        backend: Backend) -> None:
    """Both relays get the message at the same moment: one sends every copy, the other waits
    for its claim and then finds nothing left to send."""
    base_cfg = backend.config(base_cfg)
    a, b = await two_relays(base_cfg, start_relay, sinks, dict(concurrency=2))
    for s in sinks:
        s.data_delay = 0.03
    rcpts = [f"p{i}@example.com" for i in range(30)]
    data = make_message()
    replies = await asyncio.gather(smtp_send(a.port, BOSS, rcpts, data),
                                   smtp_send(b.port, BOSS, rcpts, data))
    assert all(r.startswith("250") for r in replies), replies
    assert copies(*sinks) == Counter(rcpts)
    assert sorted([len(sinks[0].messages), len(sinks[1].messages)]) == [0, 30]
    assert claims_left(base_cfg) == []


async def test_a_relay_out_of_time_answers_451_and_sends_nothing(
        base_cfg: Config, start_relay: StartRelay, sinks: tuple[Sink, Sink]) -> None:
    """Relay A fans out slowly and temp-fails three copies; relay B, with a short budget, gets
    the same message meanwhile: 451 4.4.5 and nothing sent. B's retry after A is done sends
    the three copies A could not."""
    a = await start_relay(base_cfg.with_keys(upstream=dict(port=sinks[0].port, concurrency=2)))
    b = await start_relay(base_cfg.with_keys(upstream=dict(port=sinks[1].port, concurrency=2,
                                                           fanout_budget=0.5)))
    sinks[0].data_delay = 0.1
    rcpts = [f"p{i}@example.com" for i in range(40)]
    for r in rcpts[:3]:
        sinks[0].rcpt_replies[r] = "450 4.2.1 busy"
    data = make_message()
    first = asyncio.ensure_future(smtp_send(a.port, BOSS, rcpts, data))
    while not sinks[0].messages:
        await asyncio.sleep(0.01)
    reply = await smtp_send(b.port, BOSS, rcpts, data)
    assert reply.startswith("451 4.4.5 an earlier delivery"), reply
    assert sinks[1].messages == []
    assert not first.done()
    assert (await first).startswith("45")
    assert (await smtp_send(b.port, BOSS, rcpts, data)).startswith("250")
    assert copies(sinks[1]) == Counter(rcpts[:3])
    assert copies(*sinks) == Counter(rcpts)


async def test_the_claim_of_a_killed_relay_expires_and_is_taken_over(
        cfg: Config, relay: Any, sink: Sink, caplog: pytest.LogCaptureFixture) -> None:
    """A relay killed with -9 leaves its claim behind (the row, never renewed): once it has
    expired, the retry takes it over and completes, with one log line."""
    data = make_message()
    rcpts = [f"p{i}@example.com" for i in range(6)]
    sql(cfg, "INSERT INTO claims VALUES (?, 'mx9/4242/dead', ?)",
        [message_identity(data, BOSS), time.time() - 5])
    with caplog.at_level(logging.WARNING, "relay"):
        assert (await smtp_send(relay.port, BOSS, rcpts, data)).startswith("250")
    assert copies(sink) == Counter(rcpts)
    assert any("claim of mx9/4242/dead expired 5 s ago" in r.getMessage()
               and "taking the message over" in r.getMessage() for r in caplog.records)
    assert claims_left(cfg) == []


async def test_a_live_claim_of_another_relay_is_451_until_released(
        cfg: Config, start_relay: StartRelay, sink: Sink) -> None:
    relay = await start_relay(cfg.with_keys(upstream=dict(fanout_budget=0.5)))
    data = make_message()
    rcpts = [f"p{i}@example.com" for i in range(6)]
    identity = message_identity(data, BOSS)
    sql(cfg, "INSERT INTO claims VALUES (?, 'mx2/77/live', ?)", [identity, time.time() + 600])
    reply = await smtp_send(relay.port, BOSS, rcpts, data)
    assert reply.startswith("451 4.4.5"), reply
    assert sink.messages == []
    sql(cfg, "DELETE FROM claims WHERE identity = ?", [identity])  # that relay is done
    assert (await smtp_send(relay.port, BOSS, rcpts, data)).startswith("250")
    assert copies(sink) == Counter(rcpts)


async def test_the_claim_is_renewed_while_a_long_fanout_runs(
        cfg: Config, start_relay: StartRelay, sink: Sink) -> None:
    """A fan-out that outlasts the lease several times over keeps its claim: renewed every
    `renew` seconds, never expired while it runs, released at the end. Without the renewals
    the copies would stop once the lease ran low (claims.halt)."""
    relay = await start_relay(cfg.with_keys(upstream=dict(concurrency=1)))
    relay.deliverer.claimer.timing = claims.Timing(lease=1.2, renew=0.3, copy=0.3)
    sink.data_delay = 0.1
    rcpts = [f"p{i}@example.com" for i in range(30)]  # about 3 s of copies
    task = asyncio.ensure_future(smtp_send(relay.port, BOSS, rcpts, make_message()))
    seen: list[float] = []
    while not task.done():
        rows = claims_left(cfg)
        if rows:
            assert rows[0][2] > time.time()  # never expired while the fan-out runs
            seen.append(rows[0][2])
        await asyncio.sleep(0.1)
    assert (await task).startswith("250")
    assert copies(sink) == Counter(rcpts)
    assert len(set(seen)) >= 5 and seen == sorted(seen)  # renewed, always forward
    assert claims_left(cfg) == []


async def test_a_claim_taken_over_stops_the_copies(
        cfg: Config, start_relay: StartRelay, sink: Sink) -> None:
    """Another relay takes the claim over mid fan-out (as after this one's lease ran out): the
    next renewal finds it gone, no further copy starts, the reply is 451; once that relay is
    done, the retry completes with one copy each."""
    relay = await start_relay(cfg.with_keys(upstream=dict(concurrency=1)))
    relay.deliverer.claimer.timing = claims.Timing(lease=1.2, renew=0.3, copy=0.3)
    sink.data_delay = 0.1
    rcpts = [f"p{i}@example.com" for i in range(30)]
    data = make_message()
    task = asyncio.ensure_future(smtp_send(relay.port, BOSS, rcpts, data))
    while len(sink.messages) < 3:
        await asyncio.sleep(0.01)
    sql(cfg, "UPDATE claims SET owner = 'mx2/77/other', expires = ?", [time.time() + 60])
    reply = await task
    assert reply.startswith("451 4.4.5"), reply
    assert "another relay took this message over" in reply
    sent = len(sink.messages)
    assert 3 <= sent <= 3 + 5  # the copies until the next renewal (0.3 s at 0.1 s each)
    sql(cfg, "DELETE FROM claims")
    assert (await smtp_send(relay.port, BOSS, rcpts, data)).startswith("250")
    assert copies(sink) == Counter(rcpts)


async def test_a_message_another_relay_signed_meanwhile_is_finished_its_way(
        cfg: Config, start_relay: StartRelay, sink: Sink) -> None:
    """This relay (profile dense) reads the log (nothing there yet), analyses the message and
    waits for another relay's claim; that relay logs the message signed its way (standard) and
    sends two copies. Under the claim this relay finds the log changed: 451 4.4.5, nothing
    sent; its retry makes the other copies as the other relay signed them."""
    relay = await start_relay(cfg.with_keys(signature=dict(profile="dense")))
    data = make_message()
    rcpts = [f"p{i}@example.com" for i in range(6)]
    identity = message_identity(data, BOSS)
    sql(cfg, "INSERT INTO claims VALUES (?, 'mx2/77/other', ?)", [identity, time.time() + 600])
    task = asyncio.ensure_future(smtp_send(relay.port, BOSS, rcpts, data))
    await asyncio.sleep(2.0)  # read the log, analysed, waiting for the claim
    kid, key = keys.load(cfg.signature.key_file).current
    theirs = prepare(data, BOSS, kid, key, SCHEME.with_rate(1 / 6))
    store = Store(cfg.store.path, create=False)
    store.record_message(**theirs.log_entry(BOSS))
    store.set_copy_states(identity, [(r, ACCEPTED, "250 ok") for r in rcpts[:2]])
    store.db.execute("DELETE FROM claims")
    store.close()
    reply = await task
    assert reply.startswith("451 4.4.5"), reply
    assert sink.messages == []
    assert (await smtp_send(relay.port, BOSS, rcpts, data)).startswith("250")
    assert copies(sink) == Counter(rcpts[2:])
    assert all(m.data == theirs.copy_for(m.rcpt_tos[0]) for m in sink.messages)


# --- two `relay serve` processes, one killed ---------------------------------------------------

def serve_config(workdir: Path, upstream_port: int, fanout_budget: float) -> Path:
    """A relay's config in its own folder, the database and key file shared (../var)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.toml"
    path.write_text(
        '[listen]\nhost = "127.0.0.1"\nport = 0\nhostname = "relay.test"\n'
        f'[upstream]\nhost = "127.0.0.1"\nport = {upstream_port}\nconcurrency = 2\n'
        f"timeout = 5\nfanout_budget = {fanout_budget}\n"
        '[policy]\nlists = ["all-staff@example.com"]\n'
        '[store]\npath = "../var/relay.db"\n[signature]\nkey_file = "../var/relay.key"\n')
    return path


def test_two_serve_processes_a_kill_9_and_the_retry_on_the_other(tmp_path: Path) -> None:
    """Relay A (a `relay serve` process) is killed with SIGKILL mid fan-out: its claim stays in
    the shared database, unexpired. Relay B, a second process on the same file and host, sees
    from A's lock file that A is gone and takes the claim over at once, with one log line, and
    completes (over a few retries: B's budget is 1 s): every recipient has a copy, exactly its
    own bytes, none recorded twice; a copy sent again can only be one A's upstream took in the
    instant before A recorded it (at most one per connection, as for one relay)."""
    sink = SinkProcess(tmp_path / "sink.log", delay=0.05)
    relays: list[RelayProcess] = []
    try:
        a = RelayProcess(serve_config(tmp_path / "a", sink.port, 240))
        relays.append(a)
        b = RelayProcess(serve_config(tmp_path / "b", sink.port, 1))
        relays.append(b)
        data, rcpts = all_staff_message(), recipients(40)
        first: list[str] = []
        client = threading.Thread(target=lambda: first.append(
            send_once(a.port, SENDER, rcpts, data, timeout=60)), daemon=True)
        client.start()
        deadline = time.monotonic() + 30
        while sink.count() < 10 and time.monotonic() < deadline:
            time.sleep(0.002)
        a.kill()
        client.join(30)
        time.sleep(0.2)  # the sink settles
        db = tmp_path / "var" / "relay.db"
        accepted = committed_copies(db)
        held = {r for c in sink.copies() for r in c.rcpts}
        with sqlite3.connect(db) as conn:
            (owner, expires), = conn.execute("SELECT owner, expires FROM claims").fetchall()
        assert f"/{a.pid}/" in owner and time.time() < expires <= time.time() + 45
        replies = send_until_250(b.port, SENDER, rcpts, data, time.monotonic() + 60)
        assert replies[-1].startswith("250"), replies
        assert not any(r.startswith("451 4.4.5 an earlier") for r in replies), replies
        assert f"claim of {owner}: that process is gone" in b.log_text()
        assert first and first[0].startswith("---")  # the kill broke A's session
        got = Counter(r for c in sink.copies() for r in c.rcpts)
        assert set(got) == set(rcpts)
        expect = expected_copies(tmp_path, data, rcpts)
        assert all(c.data == expect[c.rcpts[0]] for c in sink.copies())
        doubled = {r for r, n in got.items() if n > 1}
        assert doubled <= held - accepted and len(doubled) <= 2, (doubled, held - accepted)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM claims").fetchone() == (0,)
        assert b.terminate() == 0
    finally:
        for r in relays:
            r.kill()
        sink.stop()
