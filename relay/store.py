"""The log: fingerprinted messages, their text layouts (as keyed hashes), and every copy.

No message plaintext is stored: words are kept as keyed 63-bit hashes (enough to align an
excerpt, useless without the key), plus the carrier class of each gap. Codes are not stored;
they are regenerated from the key, the message identity and the recipient.

Two backends behind one API: an SQLite file (relay.sqlitedb, the embedded default: modes 0600)
or a PostgreSQL database that several relays share (relay.pgdb). `open_store` picks one; the
schema and its numbered migrations are relay.storeschema's, the same on both. Every database
error becomes a one-line StoreError (the relay answers 451 for all-staff mail); on PostgreSQL
the next call after a lost connection connects again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the copy states, declared with delivery's decisions (re-exported: callers read them here)
from .outcomes import ACCEPTED as ACCEPTED
from .outcomes import PENDING
from .outcomes import PERMFAIL as PERMFAIL
from .outcomes import TEMPFAIL as TEMPFAIL
from .scheme import Scheme
from .sqlitedb import SqliteDb
from .storeschema import MIGRATIONS as MIGRATIONS
from .storeschema import StoreError as StoreError
from .storeschema import statements


@dataclass(frozen=True)
class DocumentRow:
    id: int
    identity: str
    part: str
    kind: str
    words: bytes
    classes: bytes
    arrived: bytes | None = None  # per gap, as the message arrived (None: logged before)


def open_db(path: Path | None, url: str | None, *, create: bool = True,
            readonly: bool = False) -> Any:
    """The backend's connection: PostgreSQL when `url` is set, else the SQLite file `path`."""
    if url:
        from .pgdb import PgDb  # psycopg is loaded only by relays that use it

        return PgDb(url, readonly=readonly)
    if path is None:
        raise StoreError("no database: set [store] path or url")
    return SqliteDb(path, create=create, readonly=readonly)


def open_store(path: Path | None, url: str | None = None, create: bool = True) -> Store:
    """The Store on PostgreSQL when `url` is set ([store] url), else on the SQLite file `path`."""
    return Store(path, create, url=url)


class Store:
    def __init__(self, path: Path | None = None, create: bool = True, *,
                 url: str | None = None) -> None:
        self.path = path
        self.db = open_db(path, url, create=create)
        self.name = self.db.name  # the file, or the URL with its password redacted
        with self.guard("open database"):
            self._migrate()

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Any database error inside: StoreError '<db>: cannot <what>: <one line>'; a lost
        connection is dropped, so the next call connects again."""
        try:
            yield
        except self.db.Error as e:
            self.db.reset_if_broken()
            raise StoreError(f"{self.name}: cannot {what}: {self.db.describe(e)}") from None

    def _migrate(self) -> None:
        db = self.db
        version = db.version()
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.name}: database schema {version} is newer than this relay")
        for i in range(version, len(MIGRATIONS)):
            with db.transaction():
                db.lock_schema()
                if db.version() > i:  # another relay migrated meanwhile
                    continue
                for stmt in statements(MIGRATIONS[i]):
                    db.execute(db.dialect.ddl(stmt))
                db.set_version(i + 1)

    def close(self) -> None:
        self.db.close()

    # --- relay side ---------------------------------------------------------------------

    def record_message(self, *, identity: str, key_id: str, scheme: Scheme, sender: str,
                       message_id: str | None, subject: str | None, date: str | None,
                       size: int, documents: Sequence[tuple[Any, ...]],
                       doc_shingles: Sequence[Iterable[int]]) -> None:
        """Log a fingerprinted message once (a retry, or another relay sharing the database,
        finds it already there). `documents`: (part, kind, words, classes[, arrived]) per text
        part; written only by the transaction that inserted the message."""
        db = self.db
        carriers = sum(sum(1 for c in d[3] if c) for d in documents)
        with self.guard("record message"), db.transaction():
            inserted = db.execute(
                "INSERT INTO messages (identity, key_id, word_rate, block, block_cut, "
                "carrier_rules, code_version, sender, message_id, subject, date, size, "
                "carriers, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (identity) DO NOTHING RETURNING identity",
                [identity, key_id, scheme.word_rate, scheme.block, int(scheme.cut),
                 scheme.rules, scheme.version, sender, message_id, subject, date, size,
                 carriers, time.time()]).fetchall()
            if not inserted:
                return
            for doc, sh in zip(documents, doc_shingles, strict=True):
                part, kind, words, classes, *rest = doc
                doc_id = db.execute(
                    "INSERT INTO documents (identity, part, kind, words, classes, arrived) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    [identity, part, kind, words, classes, rest[0] if rest else None]
                ).fetchall()[0][0]
                db.executemany("INSERT INTO shingles (hash, doc_id) VALUES (?, ?) "
                               "ON CONFLICT DO NOTHING", [(h, doc_id) for h in set(sh)])

    def set_copy_states(self, identity: str,
                        outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """Durably record copies' (recipient, state, reply) before returning: one transaction,
        one fsync (committed together: group commit for a busy fan-out)."""
        now = time.time()
        with self.guard("record copy"), self.db.transaction():
            self.db.executemany(
                "INSERT INTO copies (identity, recipient, state, reply, attempts, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (identity, recipient) DO UPDATE SET "
                "state = excluded.state, reply = excluded.reply, "
                "attempts = copies.attempts + excluded.attempts, "
                "updated_at = excluded.updated_at",
                [(identity, r, st, rep, int(st != PENDING), now) for r, st, rep in outcomes])

    def signing_of(self, identity: str) -> tuple[str, Scheme] | None:
        """(key_id, scheme.Scheme) a logged message was signed with; None if not logged yet. A
        retry must make its copies with these, even after a key rotation, a profile change or
        an upgrade, and a decode reads them the same way."""
        with self.guard("read messages"):
            row = self.db.execute("SELECT key_id, code_version, word_rate, block, block_cut, "
                                  "carrier_rules FROM messages WHERE identity = ?",
                                  [identity]).fetchone()
        return None if row is None else (row[0], Scheme(*row[1:]))

    def add_copies(self, identity: str, recipients: Iterable[str]) -> None:
        """Note every recipient a copy is about to be made for (state pending) in one
        transaction; rows already there keep their state."""
        now = time.time()
        with self.guard("record copies"), self.db.transaction():
            self.db.executemany(
                "INSERT INTO copies (identity, recipient, state, reply, attempts, updated_at) "
                "VALUES (?, ?, ?, NULL, 0, ?) ON CONFLICT (identity, recipient) DO NOTHING",
                [(identity, r, PENDING, now) for r in recipients])

    def copy_details(self, identity: str) -> dict[str, tuple[str, str | None]]:
        """recipient -> (state, last upstream reply) for every copy of a message."""
        with self.guard("read copies"):
            rows = self.db.execute("SELECT recipient, state, reply FROM copies "
                                   "WHERE identity = ?", [identity]).fetchall()
        return {r: (st, rep) for r, st, rep in rows}

    def delivery_states(self, identity: str) -> dict[str, tuple[str, str | None]]:
        """recipient -> (state, reply) of an ordinary message delivered in part before."""
        with self.guard("read deliveries"):
            rows = self.db.execute("SELECT recipient, state, reply FROM deliveries "
                                   "WHERE identity = ?", [identity]).fetchall()
        return {r: (st, rep) for r, st, rep in rows}

    def set_delivery_states(self, identity: str,
                            outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """Durably record (recipient, state, reply) of an ordinary message, one transaction."""
        now = time.time()
        with self.guard("record delivery"), self.db.transaction():
            self.db.executemany(
                "INSERT INTO deliveries (identity, recipient, state, reply, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (identity, recipient) DO UPDATE SET "
                "state = excluded.state, reply = excluded.reply, "
                "updated_at = excluded.updated_at",
                [(identity, r, st, rep, now) for r, st, rep in outcomes])

    def prune_deliveries(self, older_than: float) -> int:
        """Forget ordinary-mail outcomes not touched since `older_than` (epoch seconds)."""
        with self.guard("prune deliveries"), self.db.transaction():
            return self.db.execute("DELETE FROM deliveries WHERE updated_at < ?",
                                   [older_than]).rowcount

    def notice_state(self, identity: str) -> str | None:
        """State of the delivery status notification for a message: None (not sent yet),
        'accepted' or 'permfail' (the sender's address refused it)."""
        with self.guard("read notices"):
            row = self.db.execute("SELECT state FROM notices WHERE identity = ?",
                                  [identity]).fetchone()
        return None if row is None else row[0]

    def set_notice_state(self, identity: str, state: str, reply: str | None = None) -> None:
        with self.guard("record notice"), self.db.transaction():
            self.db.execute(
                "INSERT INTO notices (identity, state, reply, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (identity) DO UPDATE SET state = excluded.state, "
                "reply = excluded.reply, updated_at = excluded.updated_at",
                [identity, state, reply, time.time()])

    # --- decode side --------------------------------------------------------------------

    def find_documents(self, hashes: Sequence[int], limit: int = 20) -> list[tuple[int, int]]:
        """(doc_id, shared shingles) for documents sharing shingles with an excerpt."""
        if not hashes:
            return []
        uniq = list(set(hashes))
        counts: dict[int, int] = {}
        with self.guard("read shingles"):
            for i in range(0, len(uniq), 500):
                chunk = uniq[i:i + 500]
                marks = ",".join("?" * len(chunk))
                q = (f"SELECT doc_id, count(*) FROM shingles WHERE hash IN ({marks}) "
                     "GROUP BY doc_id")
                for doc_id, c in self.db.execute(q, chunk).fetchall():
                    counts[doc_id] = counts.get(doc_id, 0) + c
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    def document(self, doc_id: int) -> DocumentRow:
        with self.guard("read documents"):
            row = self.db.execute("SELECT id, identity, part, kind, words, classes, arrived "
                                  "FROM documents WHERE id = ?", [doc_id]).fetchone()
        return _document(row)

    def documents_of(self, identity: str) -> list[DocumentRow]:
        with self.guard("read documents"):
            rows = self.db.execute("SELECT id, identity, part, kind, words, classes, arrived "
                                   "FROM documents WHERE identity = ? ORDER BY id",
                                   [identity]).fetchall()
        return [_document(r) for r in rows]

    def message(self, identity: str) -> dict:
        with self.guard("read messages"):
            cur = self.db.execute("SELECT * FROM messages WHERE identity = ?", [identity])
            row = cur.fetchone()
            if row is None:
                raise KeyError(identity)
            return dict(zip([d[0] for d in cur.description], row, strict=True))

    def recipients(self, identity: str) -> list[str]:
        """Every recipient a copy was made for (whatever its delivery state), in code point
        order on both backends (a PostgreSQL collation would sort otherwise)."""
        with self.guard("read copies"):
            rows = self.db.execute("SELECT recipient FROM copies WHERE identity = ?",
                                   [identity]).fetchall()
        return sorted(r[0] for r in rows)


def _document(row: Sequence[Any]) -> DocumentRow:
    """bytes on both backends (PostgreSQL may hand back memoryview for BYTEA)."""
    i, identity, part, kind, words, classes, arrived = row
    return DocumentRow(i, identity, part, kind, bytes(words), bytes(classes),
                       None if arrived is None else bytes(arrived))
