"""The relay-side store methods: copy states, ordinary-mail outcomes, notices, file modes."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from relay import store as store_mod
from relay.scheme import EVEN, UNITS, V2, V3, Scheme
from relay.store import ACCEPTED, PENDING, PERMFAIL, TEMPFAIL, Store, StoreError


def record(s: Store, identity: str) -> None:
    s.record_message(identity=identity, key_id="k1", scheme=Scheme(V3, 0.15, 48, UNITS, 1),
                     sender="a@example.com", message_id="<m@x>", subject="s",
                     date=None, size=10, documents=[("1", "plain", b"\0" * 16, b"\1")],
                     doc_shingles=[[1, 2, 3]])


def test_schema_is_current_and_reopens(tmp_path: Path) -> None:
    p = tmp_path / "r.db"
    Store(p).close()
    s = Store(p)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(store_mod.MIGRATIONS)
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


def test_copies_pending_then_final(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
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


def test_deliveries_and_notices(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
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
