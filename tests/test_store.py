"""The relay-side store methods: copy states, ordinary-mail outcomes, notices, file modes."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from relay import store as store_mod
from relay.store import ACCEPTED, PENDING, PERMFAIL, TEMPFAIL, Store, StoreError


def record(s: Store, identity: str) -> None:
    s.record_message(identity=identity, key_id="k1", word_rate=0.15, block=48,
                     cut=1, sender="a@example.com", message_id="<m@x>", subject="s", date=None,
                     size=10, documents=[("1", "plain", b"\0" * 16, b"\1")],
                     doc_shingles=[[1, 2, 3]])


def test_schema_is_current_and_reopens(tmp_path: Path) -> None:
    p = tmp_path / "r.db"
    Store(p).close()
    s = Store(p)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(store_mod.MIGRATIONS)
    s.close()


def test_files_are_private(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "r.db"
    s = Store(p)
    record(s, "i1")
    s.set_copy_state("i1", "a@example.com", ACCEPTED, "250 ok")
    for f in [p, *p.parent.glob("r.db-*")]:
        assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f
    assert (p.parent / "r.db-wal").exists()
    s.close()


def test_copies_pending_then_final(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
    record(s, "i1")
    s.add_copies("i1", ["a@example.com", "b@example.com", "c@example.com"])
    assert s.copy_states("i1") == {"a@example.com": PENDING, "b@example.com": PENDING,
                                   "c@example.com": PENDING}
    s.set_copy_states("i1", [("a@example.com", ACCEPTED, "250 ok"),
                             ("b@example.com", PERMFAIL, "550 no")])
    s.set_copy_state("i1", "c@example.com", TEMPFAIL, "451 later")
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


def test_messages_logged_before_blocks_keep_independent_bits(tmp_path: Path) -> None:
    """Migration 3: a message logged by a relay without blocks reads back as block 0, so its
    retries and decodes use the code it was signed with."""
    p = tmp_path / "v2.db"
    conn = sqlite3.connect(p)
    conn.executescript(store_mod.MIGRATIONS[0] + store_mod.MIGRATIONS[1])
    conn.execute("INSERT INTO messages (identity, key_id, word_rate, sender, size, carriers, "
                 "created_at) VALUES ('old', 'k1', 0.16, 'a@example.com', 10, 3, 0)")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    os.chmod(p, 0o600)
    s = Store(p)
    assert s.signing_of("old") == ("k1", 0.16, 0, 0)
    record(s, "new")
    assert s.signing_of("new") == ("k1", 0.15, 48, 1)
    assert s.message("old")["block"] == 0


def test_messages_logged_with_even_blocks_keep_their_cut(tmp_path: Path) -> None:
    """Migration 4: a message signed in blocks cut evenly (before codes.UNITS) reads back with
    cut 0 (codes.EVEN), so its retries and decodes cut its blocks the same way."""
    p = tmp_path / "v3.db"
    conn = sqlite3.connect(p)
    conn.executescript("".join(store_mod.MIGRATIONS[:3]))
    conn.execute("INSERT INTO messages (identity, key_id, word_rate, block, sender, size, "
                 "carriers, created_at) "
                 "VALUES ('even', 'k1', 0.1667, 48, 'a@example.com', 10, 3, 0)")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    os.chmod(p, 0o600)
    s = Store(p)
    assert s.signing_of("even") == ("k1", 0.1667, 48, 0)
    assert s.message("even")["block_cut"] == 0
    record(s, "new")
    assert s.signing_of("new") == ("k1", 0.15, 48, 1)


def test_database_from_a_newer_relay_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "new.db"
    Store(p).close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {len(store_mod.MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this relay"):
        Store(p)
