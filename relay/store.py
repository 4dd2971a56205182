"""The SQLite log: fingerprinted messages, their text layouts (as keyed hashes), and every copy.

No message plaintext is stored: words are kept as keyed 63-bit hashes (enough to align an
excerpt, useless without the key), plus the carrier class of each gap. Codes are not stored;
they are regenerated from the key, the message identity and the recipient.

The file and its -wal/-shm companions are created mode 0600. An existing file (or -wal, -shm,
-journal) that the group or others may read is made 0600 on open, with one warning line (an
admin who copied the database with `cp` would expect that rather than a refusal); when it cannot
be (another owner), the database is refused. Schema changes go through MIGRATIONS, tracked in
PRAGMA user_version.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import CANNOT_RUN, RelayError

# the copy states, declared with delivery's decisions (re-exported: callers read them here)
from .outcomes import ACCEPTED as ACCEPTED
from .outcomes import PENDING
from .outcomes import PERMFAIL as PERMFAIL
from .outcomes import TEMPFAIL as TEMPFAIL
from .scheme import Scheme


class StoreError(RelayError):
    """The database cannot be used (unreadable, locked, full); str() is one line."""

    exit_status = CANNOT_RUN


MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE messages (
        identity TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        word_rate REAL NOT NULL,
        sender TEXT NOT NULL,
        message_id TEXT,
        subject TEXT,
        date TEXT,
        size INTEGER NOT NULL,
        carriers INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        identity TEXT NOT NULL REFERENCES messages(identity),
        part TEXT NOT NULL,
        kind TEXT NOT NULL,
        words BLOB NOT NULL,
        classes BLOB NOT NULL,
        UNIQUE(identity, part)
    );
    CREATE TABLE shingles (
        hash INTEGER NOT NULL,
        doc_id INTEGER NOT NULL REFERENCES documents(id),
        PRIMARY KEY (hash, doc_id)
    ) WITHOUT ROWID;
    CREATE TABLE copies (
        identity TEXT NOT NULL REFERENCES messages(identity),
        recipient TEXT NOT NULL,
        state TEXT NOT NULL,
        reply TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (identity, recipient)
    );
    """,
    # 2: relay side: per-recipient outcome of ordinary (not fingerprinted) mail, so a retry
    # after a partial delivery skips the recipients that already have it; and the delivery
    # status notifications already sent, so a retry does not send a second one.
    """
    CREATE TABLE deliveries (
        identity TEXT NOT NULL,
        recipient TEXT NOT NULL,
        state TEXT NOT NULL,
        reply TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (identity, recipient)
    );
    CREATE INDEX deliveries_updated ON deliveries(updated_at);
    CREATE TABLE notices (
        identity TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        reply TEXT,
        updated_at REAL NOT NULL
    );
    """,
    # 3: word carriers signed in blocks (wordblocks.Blocks); 0 for messages logged before, whose
    # word carriers are independent bits
    """
    ALTER TABLE messages ADD COLUMN block INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: how the blocks are cut (scheme.Cut.EVEN, scheme.Cut.UNITS); messages logged before: even
    """
    ALTER TABLE messages ADD COLUMN block_cut INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: the carrier rules a message was signed with (carriers.RULES); 0 for messages logged
    # before (lines over 900 characters never carried, MIME read by relay.mime alone)
    """
    ALTER TABLE messages ADD COLUMN carrier_rules INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: how each gap looked when the message arrived (carriers.SINGLE / DOUBLED / OTHER), so
    # a decode can tell whose copy of an earlier message a later one was made from (a forward
    # to all staff); NULL for messages logged before
    """
    ALTER TABLE documents ADD COLUMN arrived BLOB;
    """,
    # 7: the code version (scheme.V2, scheme.V3) of the message's keyed values; messages logged
    # before were all V2 (one stream per recipient over every carrier)
    """
    ALTER TABLE messages ADD COLUMN code_version INTEGER NOT NULL DEFAULT 2;
    """,
    # 8: claims across relays sharing this log (relay.claims): who delivers a message identity
    # now, until when (seconds since the epoch)
    """
    CREATE TABLE claims (identity TEXT PRIMARY KEY, owner TEXT NOT NULL,
                         expires DOUBLE PRECISION NOT NULL);
    """,
]


@dataclass(frozen=True)
class DocumentRow:
    id: int
    identity: str
    part: str
    kind: str
    words: bytes
    classes: bytes
    arrived: bytes | None = None  # per gap, as the message arrived (None: logged before)


log = logging.getLogger("relay")


def _tighten(path: Path) -> None:
    """Make the database and its -wal/-shm/-journal files mode 0600 when the group or others
    have any access; one warning line per file changed. StoreError when that fails."""
    for f in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))):
        try:
            mode = stat.S_IMODE(os.stat(f).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(f, 0o600)
            except OSError as e:
                raise StoreError(f"{f}: database file is mode {mode:o} and cannot be made "
                                 f"0600: {e.strerror}") from None
            log.warning("%s: database file was mode %o, now 0600", f, mode)


def _secure_create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass


class Store:
    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        try:
            if create:
                _secure_create(path)
            elif not path.exists():
                raise StoreError(f"{path}: database not found")
            _tighten(path)
            old = os.umask(0o077)  # -wal/-shm/-journal: never readable by others
            try:
                conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                os.umask(old)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.db = sqlite_utils.Database(conn)
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot open database: {e}") from None
        except OSError as e:
            raise StoreError(f"{path}: cannot open database: {e.strerror}") from None

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: database schema {version} is newer than this relay")
        for i in range(version, len(MIGRATIONS)):
            with self.db.conn:
                self.db.conn.execute("BEGIN IMMEDIATE")
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.db.conn.execute(stmt)
                self.db.conn.execute(f"PRAGMA user_version = {i + 1}")

    def close(self) -> None:
        self.db.conn.close()

    # --- relay side ---------------------------------------------------------------------

    def record_message(self, *, identity: str, key_id: str, scheme: Scheme, sender: str,
                       message_id: str | None, subject: str | None, date: str | None,
                       size: int, documents: Sequence[tuple[Any, ...]],
                       doc_shingles: Sequence[Iterable[int]]) -> None:
        """Log a fingerprinted message once (a retry finds it already there). `documents`:
        (part, kind, words, classes[, arrived]) per text part."""
        try:
            with self.db.conn:
                self.db.conn.execute("BEGIN IMMEDIATE")
                if self.db.execute("SELECT 1 FROM messages WHERE identity = ?",
                                   [identity]).fetchone():
                    return
                carriers = sum(sum(1 for c in d[3] if c) for d in documents)
                self.db["messages"].insert({
                    "identity": identity, "key_id": key_id, "word_rate": scheme.word_rate,
                    "block": scheme.block, "block_cut": int(scheme.cut),
                    "carrier_rules": scheme.rules, "code_version": scheme.version,
                    "sender": sender,
                    "message_id": message_id, "subject": subject, "date": date, "size": size,
                    "carriers": carriers, "created_at": time.time(),
                })
                for doc, sh in zip(documents, doc_shingles, strict=True):
                    part, kind, words, classes, *rest = doc
                    cur = self.db.conn.execute(
                        "INSERT INTO documents (identity, part, kind, words, classes, arrived) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [identity, part, kind, words, classes, rest[0] if rest else None])
                    doc_id = cur.lastrowid
                    self.db.conn.executemany(
                        "INSERT OR IGNORE INTO shingles (hash, doc_id) VALUES (?, ?)",
                        [(h, doc_id) for h in set(sh)])
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot record message: {e}") from None

    def set_copy_states(self, identity: str,
                        outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """Durably record copies' (recipient, state, reply) before returning: one transaction,
        one fsync (committed together: group commit for a busy fan-out)."""
        now = time.time()
        try:
            with self.db.conn:
                self.db.conn.execute("BEGIN IMMEDIATE")
                self.db.conn.executemany(
                    "INSERT INTO copies (identity, recipient, state, reply, attempts, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(identity, recipient) DO UPDATE SET "
                    "state = excluded.state, reply = excluded.reply, "
                    "attempts = copies.attempts + excluded.attempts, "
                    "updated_at = excluded.updated_at",
                    [(identity, r, st, rep, int(st != PENDING), now) for r, st, rep in outcomes])
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot record copy: {e}") from None

    def signing_of(self, identity: str) -> tuple[str, Scheme] | None:
        """(key_id, scheme.Scheme) a logged message was signed with; None if not logged yet. A
        retry must make its copies with these, even after a key rotation, a profile change or
        an upgrade, and a decode reads them the same way."""
        try:
            row = self.db.execute("SELECT key_id, code_version, word_rate, block, block_cut, "
                                  "carrier_rules FROM messages WHERE identity = ?",
                                  [identity]).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read messages: {e}") from None
        return None if row is None else (row[0], Scheme(*row[1:]))

    def add_copies(self, identity: str, recipients: Iterable[str]) -> None:
        """Note every recipient a copy is about to be made for (state pending) in one
        transaction; rows already there keep their state."""
        now = time.time()
        try:
            with self.db.conn:
                self.db.conn.execute("BEGIN IMMEDIATE")
                self.db.conn.executemany(
                    "INSERT OR IGNORE INTO copies (identity, recipient, state, reply, attempts, "
                    "updated_at) VALUES (?, ?, ?, NULL, 0, ?)",
                    [(identity, r, PENDING, now) for r in recipients])
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot record copies: {e}") from None

    def copy_details(self, identity: str) -> dict[str, tuple[str, str | None]]:
        """recipient -> (state, last upstream reply) for every copy of a message."""
        try:
            rows = self.db.execute("SELECT recipient, state, reply FROM copies "
                                   "WHERE identity = ?", [identity]).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read copies: {e}") from None
        return {r: (st, rep) for r, st, rep in rows}

    def delivery_states(self, identity: str) -> dict[str, tuple[str, str | None]]:
        """recipient -> (state, reply) of an ordinary message delivered in part before."""
        try:
            rows = self.db.execute("SELECT recipient, state, reply FROM deliveries "
                                   "WHERE identity = ?", [identity]).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read deliveries: {e}") from None
        return {r: (st, rep) for r, st, rep in rows}

    def set_delivery_states(self, identity: str,
                            outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """Durably record (recipient, state, reply) of an ordinary message, one transaction."""
        now = time.time()
        try:
            with self.db.conn:
                self.db.conn.execute("BEGIN IMMEDIATE")
                self.db.conn.executemany(
                    "INSERT INTO deliveries (identity, recipient, state, reply, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(identity, recipient) DO UPDATE SET "
                    "state = excluded.state, reply = excluded.reply, "
                    "updated_at = excluded.updated_at",
                    [(identity, r, st, rep, now) for r, st, rep in outcomes])
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot record delivery: {e}") from None

    def prune_deliveries(self, older_than: float) -> int:
        """Forget ordinary-mail outcomes not touched since `older_than` (epoch seconds)."""
        try:
            with self.db.conn:
                cur = self.db.conn.execute("DELETE FROM deliveries WHERE updated_at < ?",
                                           [older_than])
                return cur.rowcount
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot prune deliveries: {e}") from None

    def notice_state(self, identity: str) -> str | None:
        """State of the delivery status notification for a message: None (not sent yet),
        'accepted' or 'permfail' (the sender's address refused it)."""
        try:
            row = self.db.execute("SELECT state FROM notices WHERE identity = ?",
                                  [identity]).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read notices: {e}") from None
        return None if row is None else row[0]

    def set_notice_state(self, identity: str, state: str, reply: str | None = None) -> None:
        try:
            with self.db.conn:
                self.db.conn.execute(
                    "INSERT INTO notices (identity, state, reply, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(identity) DO UPDATE SET state = excluded.state, "
                    "reply = excluded.reply, updated_at = excluded.updated_at",
                    [identity, state, reply, time.time()])
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot record notice: {e}") from None

    # --- decode side --------------------------------------------------------------------

    def find_documents(self, hashes: Sequence[int], limit: int = 20) -> list[tuple[int, int]]:
        """(doc_id, shared shingles) for documents sharing shingles with an excerpt."""
        if not hashes:
            return []
        uniq = list(set(hashes))
        counts: dict[int, int] = {}
        for i in range(0, len(uniq), 500):
            chunk = uniq[i:i + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT doc_id, count(*) FROM shingles WHERE hash IN ({marks}) GROUP BY doc_id"
            for doc_id, c in self.db.execute(q, chunk).fetchall():
                counts[doc_id] = counts.get(doc_id, 0) + c
        return sorted(counts.items(), key=lambda kv: -kv[1])[:limit]

    def document(self, doc_id: int) -> DocumentRow:
        row = self.db.execute("SELECT id, identity, part, kind, words, classes, arrived "
                              "FROM documents WHERE id = ?", [doc_id]).fetchone()
        return DocumentRow(*row)

    def documents_of(self, identity: str) -> list[DocumentRow]:
        rows = self.db.execute("SELECT id, identity, part, kind, words, classes, arrived "
                               "FROM documents WHERE identity = ? ORDER BY id",
                               [identity]).fetchall()
        return [DocumentRow(*r) for r in rows]

    def message(self, identity: str) -> dict:
        return next(self.db["messages"].rows_where("identity = ?", [identity]))

    def recipients(self, identity: str) -> list[str]:
        """Every recipient a copy was made for (whatever its delivery state)."""
        return [r[0] for r in self.db.execute(
            "SELECT recipient FROM copies WHERE identity = ? ORDER BY recipient", [identity])]
