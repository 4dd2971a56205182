"""The embedded backend: one SQLite file (WAL, synchronous=FULL), its modes and its connection.

The file and its -wal/-shm companions are created mode 0600. An existing file (or -wal, -shm,
-journal) that the group or others may read is made 0600 on open, with one warning line (an
admin who copied the database with `cp` would expect that rather than a refusal); when it cannot
be (another owner), the database is refused. The schema version is PRAGMA user_version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .storeschema import SQLITE, StoreError

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


class SqliteDb:
    """One SQLite connection in autocommit mode; `transaction()` is BEGIN IMMEDIATE ... COMMIT."""

    dialect = SQLITE
    Error = sqlite3.Error

    def __init__(self, path: Path, create: bool = True, readonly: bool = False) -> None:
        self.path = path
        self.name = str(path)
        if not path.exists() and (readonly or not create):
            raise StoreError(f"{path}: database not found")
        try:
            if readonly:  # safe beside the running relay: never migrates or creates anything
                self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0,
                                            isolation_level=None)
                return
            if create:
                _secure_create(path)
            _tighten(path)
            # SQLite gives -wal/-shm/-journal the database file's mode (0600), whatever the
            # umask; no os.umask() here: it is process-wide, and two threads opening stores at
            # once could leave it at 0077 for the whole process
            conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self.conn = conn
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot open database: {e}") from None
        except OSError as e:
            raise StoreError(f"{path}: cannot open database: {e.strerror}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        return self.conn.executemany(sql, rows).rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            yield

    def version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def set_version(self, version: int) -> None:
        self.conn.execute(f"PRAGMA user_version = {int(version)}")

    def lock_schema(self) -> None:
        """Inside a transaction: none other migrates at once (BEGIN IMMEDIATE already holds
        the write lock)."""

    def scrub(self, before: bool) -> None:
        """Around a purge: deleted rows are overwritten on disk (secure_delete), and afterwards
        the write-ahead log that still holds the old pages is folded in and emptied (best
        effort: a reader in the middle of a transaction keeps it until the next purge)."""
        if before:
            self.conn.execute("PRAGMA secure_delete = ON")
        else:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def describe(self, e: BaseException) -> str:
        return str(e)

    def reset_if_broken(self) -> None:
        """A file does not go away between calls: nothing to reconnect."""

    def close(self) -> None:
        self.conn.close()
