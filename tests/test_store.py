"""The relay-side store methods: copy states, ordinary-mail outcomes, notices, file modes. The
shared behaviour runs on both backends (`backend`: an SQLite file, a database of a private
PostgreSQL cluster); file modes and SQLite's own files are SQLite's tests, reconnecting and
passwords PostgreSQL's."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import PASSWORD_ROLE, Backend, PgServer

from relay import store as store_mod
from relay.scheme import EVEN, UNITS, V2, V3, Scheme
from relay.store import ACCEPTED, PENDING, PERMFAIL, TEMPFAIL, Store, StoreError


def at_once(fn: Callable[[Any], object], n: int,
            setup: Callable[[], Any] = lambda: None) -> list[BaseException]:
    """n threads each run setup(), wait for one another, then fn(what setup gave), all at
    the same moment; what they raised."""
    go = threading.Barrier(n)
    errors: list[BaseException] = []

    def run() -> None:
        arg = setup()
        go.wait()
        try:
            fn(arg)
        except BaseException as e:  # noqa: BLE001 (returned to the test)
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def record(s: Store, identity: str) -> None:
    s.record_message(identity=identity, key_id="k1", scheme=Scheme(V3, 0.15, 48, UNITS, 1),
                     sender="a@example.com", message_id="<m@x>", subject="s",
                     date=None, size=10, documents=[("1", "plain", b"\0" * 16, b"\1")],
                     doc_shingles=[[1, 2, 3]])


def test_schema_is_current_and_reopens(tmp_path: Path, backend: Backend) -> None:
    p = tmp_path / "r.db"
    backend.store(p).close()
    s = backend.store(p)
    assert s.db.version() == len(store_mod.MIGRATIONS)
    s.close()


def states(s: Store, identity: str) -> dict[str, str]:
    """Each recipient's state, read straight from the copies table."""
    rows = s.db.execute("SELECT recipient, state FROM copies WHERE identity = ?", [identity])
    return dict(rows.fetchall())


def test_files_are_private(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "r.db"
    s = Store(p)
    record(s, "i1")
    s.set_copy_states("i1", [("a@example.com", ACCEPTED, "250 ok")])
    for f in [p, *p.parent.glob("r.db-*")]:
        assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f
    assert (p.parent / "r.db-wal").exists()
    s.close()


def test_copies_pending_then_final(tmp_path: Path, backend: Backend) -> None:
    s = backend.store(tmp_path / "r.db")
    record(s, "i1")
    s.add_copies("i1", ["a@example.com", "b@example.com", "c@example.com"])
    assert states(s, "i1") == {"a@example.com": PENDING, "b@example.com": PENDING,
                               "c@example.com": PENDING}
    s.set_copy_states("i1", [("a@example.com", ACCEPTED, "250 ok"),
                             ("b@example.com", PERMFAIL, "550 no")])
    s.set_copy_states("i1", [("c@example.com", TEMPFAIL, "451 later")])
    s.add_copies("i1", ["a@example.com", "c@example.com"])  # a retry: states kept
    d = s.copy_details("i1")
    assert d == {"a@example.com": (ACCEPTED, "250 ok"), "b@example.com": (PERMFAIL, "550 no"),
                 "c@example.com": (TEMPFAIL, "451 later")}
    assert s.recipients("i1") == ["a@example.com", "b@example.com", "c@example.com"]
    attempts = dict(s.db.execute("SELECT recipient, attempts FROM copies").fetchall())
    assert attempts == {"a@example.com": 1, "b@example.com": 1, "c@example.com": 1}


def test_deliveries_and_notices(tmp_path: Path, backend: Backend) -> None:
    s = backend.store(tmp_path / "r.db")
    assert s.delivery_states("x") == {}
    s.set_delivery_states("x", [("a@example.com", ACCEPTED, "250"),
                                ("b@example.com", TEMPFAIL, "451")])
    s.set_delivery_states("x", [("b@example.com", ACCEPTED, "250")])
    assert s.delivery_states("x") == {"a@example.com": (ACCEPTED, "250"),
                                      "b@example.com": (ACCEPTED, "250")}
    assert s.prune_deliveries(0) == 0
    assert s.prune_deliveries(2**40) == 2
    assert s.notice_state("x") is None
    s.set_notice_state("x", ACCEPTED, "250 ok")
    assert s.notice_state("x") == ACCEPTED


def test_errors_are_store_errors(tmp_path: Path) -> None:
    p = tmp_path / "r.db"
    s = Store(p)
    other = sqlite3.connect(p, timeout=0)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    s.db.conn.execute("PRAGMA busy_timeout = 10")
    with pytest.raises(StoreError, match="cannot record"):
        s.set_delivery_states("x", [("a@example.com", ACCEPTED, "250")])
    other.rollback()
    other.close()
    s.set_delivery_states("x", [("a@example.com", ACCEPTED, "250")])


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    p = tmp_path / "old.db"
    conn = sqlite3.connect(p)
    conn.executescript(store_mod.MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    os.chmod(p, 0o600)
    s = Store(p)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(store_mod.MIGRATIONS)
    s.set_notice_state("x", PERMFAIL, "550")


def _old_database(path: Path, version: int, columns: str, values: str) -> Store:
    """A database left by an older relay (schema `version`) holding one message, opened (and
    so migrated) by this one."""
    conn = sqlite3.connect(path)
    conn.executescript("".join(store_mod.MIGRATIONS[:version]))
    conn.execute(f"INSERT INTO messages ({columns}, sender, size, carriers, created_at) "
                 f"VALUES ({values}, 'a@example.com', 10, 3, 0)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    os.chmod(path, 0o600)
    return Store(path)


@pytest.mark.parametrize("version, columns, values, scheme", [
    # migration 3: logged before blocks -> block 0, independent bits
    (2, "identity, key_id, word_rate", "'old', 'k1', 0.16", Scheme(V2, 0.16, 0, EVEN, 0)),
    # migration 4: blocks cut evenly (before scheme.UNITS) -> cut 0, scheme.EVEN
    (3, "identity, key_id, word_rate, block", "'old', 'k1', 0.1667, 48",
     Scheme(V2, 0.1667, 48, EVEN, 0)),
    # migration 5: carrier rules before long lines and the MIME check -> rules 0
    (4, "identity, key_id, word_rate, block, block_cut", "'old', 'k1', 0.1667, 48, 1",
     Scheme(V2, 0.1667, 48, UNITS, 0)),
    # migration 7: every message logged before code v3 -> code version 2
    (6, "identity, key_id, word_rate, block, block_cut, carrier_rules",
     "'old', 'k1', 0.1667, 48, 1, 1", Scheme(V2, 0.1667, 48, UNITS, 1)),
])
def test_messages_logged_by_an_older_relay_keep_their_code(
        tmp_path: Path, version: int, columns: str, values: str, scheme: Scheme) -> None:
    """A message an older relay logged reads back with the code it was signed with, so its
    retries and decodes use that code; new messages get the current one."""
    s = _old_database(tmp_path / "old.db", version, columns, values)
    assert s.signing_of("old") == ("k1", scheme)
    m = s.message("old")
    assert Scheme(m["code_version"], m["word_rate"], m["block"], m["block_cut"],
                  m["carrier_rules"]) == scheme
    record(s, "new")
    assert s.signing_of("new") == ("k1", Scheme(V3, 0.15, 48, UNITS, 1))
    assert s.signing_of("missing") is None


def test_database_from_a_newer_relay_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "new.db"
    Store(p).close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {len(store_mod.MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this relay"):
        Store(p)


def test_companions_are_0600_whatever_the_umask_which_is_left_alone(tmp_path: Path) -> None:
    """-wal and -shm take the database file's 0600 even under umask 0 (SQLite copies the
    file's mode), so opening a store never touches the process-wide umask: eight threads
    opening stores at once leave it as it was (a saved-and-restored umask raced between
    threads and stayed 0077, and Postfix, started later by the same process, could not read
    its own queue)."""
    old = os.umask(0)
    try:
        s = Store(tmp_path / "r.db")
        record(s, "id1")
        for f in [tmp_path / "r.db", tmp_path / "r.db-wal", tmp_path / "r.db-shm"]:
            assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
        s.close()
        os.umask(0o022)
        files = iter(range(8))
        assert at_once(lambda _: Store(tmp_path / f"t{next(files)}.db").close(), 8) == []
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)


def test_loose_modes_of_an_existing_database_are_tightened(tmp_path: Path, caplog) -> None:
    import logging

    p = tmp_path / "r.db"
    s = Store(p)
    record(s, "id1")  # the WAL file exists while the connection is open
    companions = [Path(f"{p}-wal"), Path(f"{p}-shm")]
    assert all(f.exists() for f in companions)
    s.close()
    for f in [p, *companions, Path(f"{p}-journal")]:
        f.touch()
        f.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="relay")
    Store(p, create=False).close()
    for f in [p, Path(f"{p}-journal")]:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    for f in companions:
        assert not f.exists() or stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    warned = [r.getMessage() for r in caplog.records]
    assert f"{p}: database file was mode 644, now 0600" in warned
    assert f"{p}-journal: database file was mode 644, now 0600" in warned
    caplog.clear()
    Store(p).close()  # already private: no warning
    assert not caplog.records


# --- both backends: the decode side, and two relays sharing one log ---------------------------

def test_message_logged_once_and_read_back(tmp_path: Path, backend: Backend) -> None:
    """Layouts and 63-bit shingle hashes read back as written; a second record of the same
    identity (a retry) changes nothing."""
    s = backend.store(tmp_path / "r.db")
    big = [2**63 - 1, -(2**63) + 1, 12345]
    docs = [("1", "plain", b"\x01\x02" * 8, b"\x00\x01", b"\x02"), ("2", "html", b"\x03" * 8,
                                                                    b"\x01", None)]
    for _ in range(2):
        s.record_message(identity="i1", key_id="k1", scheme=Scheme(V3, 0.15, 48, UNITS, 1),
                         sender="a@example.com", message_id="<m@x>", subject="s", date=None,
                         size=10, documents=docs, doc_shingles=[big, [7, 8]])
    got = s.documents_of("i1")
    assert [(d.part, d.kind, d.words, d.classes, d.arrived) for d in got] == [
        ("1", "plain", b"\x01\x02" * 8, b"\x00\x01", b"\x02"),
        ("2", "html", b"\x03" * 8, b"\x01", None)]
    assert s.document(got[1].id) == got[1]
    assert s.find_documents(big + [7]) == [(got[0].id, 3), (got[1].id, 1)]
    assert s.find_documents([99]) == []
    m = s.message("i1")
    assert (m["key_id"], m["carriers"], m["word_rate"], m["subject"]) == ("k1", 2, 0.15, "s")
    assert s.db.execute("SELECT count(*) FROM shingles").fetchone()[0] == 5
    s.close()


def test_two_relays_record_the_same_message_at_once(tmp_path: Path, backend: Backend) -> None:
    """Two connections (two relays on one database) log one identity at the same moment: one
    message, its documents once, both return without error."""
    backend.store(tmp_path / "r.db").close()

    def log(s: Store) -> None:
        try:
            s.record_message(identity="same", key_id="k1", scheme=Scheme(V3, 0.15, 48, UNITS, 1),
                             sender="a@example.com", message_id=None, subject=None, date=None,
                             size=10, documents=[("1", "plain", b"\0" * 16, b"\1")],
                             doc_shingles=[range(2000)])
        finally:
            s.close()

    # each relay its own connection, opened in its thread before they start together
    assert at_once(log, 2, lambda: backend.store(tmp_path / "r.db")) == []
    s = backend.store(tmp_path / "r.db")
    assert s.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    assert len(s.documents_of("same")) == 1
    assert s.db.execute("SELECT count(*) FROM shingles").fetchone()[0] == 2000
    s.close()


# --- PostgreSQL: lost connections, passwords ---------------------------------------------------

@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[tuple[PgServer, str]]:
    yield pg_server, pg_server.url(pg_server.new_database())


def test_lost_connection_fails_that_call_and_the_next_reconnects(
        pg: tuple[PgServer, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from relay import pgdb

    server, url = pg
    monkeypatch.setattr(pgdb, "IDLE_CHECK", 1e9)  # no ping: the call meets the loss
    s = Store(url=url)
    record(s, "i1")
    pid = s.db.execute("SELECT pg_backend_pid()").fetchone()[0]
    with server.admin() as admin:  # type: ignore[attr-defined]
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(StoreError, match="cannot record copy") as e:
        s.set_copy_states("i1", [("a@example.com", ACCEPTED, "250 ok")])
    assert "\n" not in str(e.value)
    s.set_copy_states("i1", [("a@example.com", ACCEPTED, "250 ok")])  # connected again
    assert s.copy_details("i1") == {"a@example.com": (ACCEPTED, "250 ok")}
    assert s.db.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
    s.close()


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    from conftest import free_port

    url = f"postgresql://relay:secret-in-url@127.0.0.1:{free_port()}/relay"
    with pytest.raises(StoreError) as e:
        Store(url=url)
    line = str(e.value)
    assert line.startswith(f"postgresql://relay:***@127.0.0.1:{url.split(':')[3]}")
    assert "cannot open database" in line and "\n" not in line
    assert "secret-in-url" not in line


def test_password_from_a_password_file_and_never_shown(
        pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A role that must give its password (scram-sha-256): the URL names no password, libpq
    reads it from PGPASSFILE. A wrong password written into the URL is refused, and neither
    password shows in the error line or the log."""
    import logging

    from relay.checks import check_database
    from relay.config import Policy, StoreConfig

    secret = "pw-Zq8-never-shown"
    with pg_server.admin() as admin:  # type: ignore[attr-defined]
        admin.execute(f"DROP ROLE IF EXISTS {PASSWORD_ROLE}")
        admin.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{secret}'")
    db = pg_server.new_database(owner=PASSWORD_ROLE)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:{db}:{PASSWORD_ROLE}:{secret}\n")
    passfile.chmod(0o600)
    caplog.set_level(logging.DEBUG)
    url = pg_server.url(db, PASSWORD_ROLE)
    with pytest.raises(StoreError, match="password"):  # no file, no password: refused
        Store(url=url)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    s = Store(url=url)
    record(s, "i1")
    assert s.signing_of("i1") is not None
    s.close()
    findings = check_database(StoreConfig(url=url), Policy())
    assert [f.level for f in findings] == ["ok"] and "1 message(s)" in findings[0].detail
    wrong = url.replace(f"{PASSWORD_ROLE}@", f"{PASSWORD_ROLE}:wrong-{secret}@")
    with pytest.raises(StoreError) as e:
        Store(url=wrong)
    assert f"{PASSWORD_ROLE}:***@" in str(e.value)
    assert secret not in str(e.value)
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_schema_from_a_newer_relay_is_refused_on_postgresql(pg: tuple[PgServer, str]) -> None:
    _, url = pg
    s = Store(url=url)
    s.db.execute("UPDATE relay_schema SET version = ?", [len(store_mod.MIGRATIONS) + 1])
    s.close()
    with pytest.raises(StoreError, match="newer than this relay"):
        Store(url=url)


def test_two_relays_starting_at_once_migrate_once(pg: tuple[PgServer, str]) -> None:
    """Both open an empty database at the same moment: one creates the tables, the other
    waits on the advisory lock and finds them there."""
    _, url = pg
    assert at_once(lambda _: Store(url=url).close(), 4) == []
    s = Store(url=url)
    assert s.db.version() == len(store_mod.MIGRATIONS)
    assert s.db.execute("SELECT count(*) FROM relay_schema").fetchone()[0] == 1
    s.close()


def test_idle_connection_lost_meanwhile_costs_no_failure(pg: tuple[PgServer, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The database restarted while the relay was idle: the connection is pinged before use
    and replaced, so the first call after it succeeds (no 451 for the next all-staff mail)."""
    from relay import pgdb

    server, url = pg
    s = Store(url=url)
    record(s, "i1")
    pid = s.db.execute("SELECT pg_backend_pid()").fetchone()[0]
    with server.admin() as admin:  # type: ignore[attr-defined]
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    monkeypatch.setattr(pgdb, "IDLE_CHECK", 0.0)  # as if idle for longer than the check
    s.set_copy_states("i1", [("a@example.com", ACCEPTED, "250 ok")])
    assert s.copy_details("i1") == {"a@example.com": (ACCEPTED, "250 ok")}
    s.close()
