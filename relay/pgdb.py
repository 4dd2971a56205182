"""The shared backend: one PostgreSQL connection through psycopg 3 (libpq), for several relays
that keep one log.

* The URL is libpq's (`postgresql://user@host:5432/db?sslmode=verify-full`); libpq reads the
  rest from its usual places: PGPASSWORD, PGPASSFILE or ~/.pgpass for the password, PGSSLMODE,
  PGSERVICE... A password written into the URL works but is never shown: every name and error
  line this module makes carries the URL with its password replaced by `***` (`redact`).
* Autocommit; a write is one `transaction()`. Connect timeout 5 s and a TCP user timeout of 15 s
  unless the URL says otherwise, so a vanished server makes a call fail instead of hanging.
* A lost connection fails that call (psycopg.Error, a StoreError for the caller) and the next
  call connects again (`reset_if_broken`, then `conn`): no reconnect loop, no retry of a write
  whose fate is unknown; the relay's 451 makes the sender's MTA retry. A connection idle for
  10 s is pinged before use, so a database restarted while the relay was idle costs no 451.
* The schema version is the one row of table `relay_schema`; migrations take an advisory lock,
  so two relays starting at once do not both migrate.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import conninfo

from .storeschema import POSTGRESQL, StoreError, redact

DEFAULTS = {"connect_timeout": "5", "tcp_user_timeout": "15000", "application_name": "relay"}
SCHEMA_LOCK = 0x72656C6179  # pg_advisory_xact_lock key while migrating ("relay")
IDLE_CHECK = 10.0  # seconds idle after which the connection is pinged before use
MANY_ROWS = 1000  # rows per multi-row INSERT (executemany)
_VALUES = re.compile(r"\bVALUES\s*(\([^()]*\))", re.IGNORECASE)


class PgDb:
    """One PostgreSQL connection, connected again on the first call after it was lost."""

    dialect = POSTGRESQL
    Error = psycopg.Error

    def __init__(self, url: str, readonly: bool = False) -> None:
        self.name = redact(url)
        try:
            params: dict[str, Any] = conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            raise StoreError(f"{self.name}: not a PostgreSQL URL") from None
        self._secret = params.get("password")
        for k, v in DEFAULTS.items():
            params.setdefault(k, v)
        if readonly:  # `relay messages`, `relay check`: beside the running relays, never writes
            params["options"] = f"{params.get('options', '')} -c default_transaction_read_only=on"
        self._params = params
        self._conn: psycopg.Connection | None = None
        self._used = 0.0  # time.monotonic() of the last use
        self._in_tx = False
        try:
            self.conn  # noqa: B018 (connect now: a wrong URL or password fails at start)
        except psycopg.Error as e:
            raise StoreError(f"{self.name}: cannot open database: {self.describe(e)}") from None

    @property
    def conn(self) -> psycopg.Connection:
        """The connection; a new one if it was lost. Idle for IDLE_CHECK seconds, it is pinged
        first, so the first mail after a database restart does not pay for finding out. Never
        replaced inside a transaction (the rest would run outside it): that call fails."""
        c = self._conn
        if self._in_tx:
            if c is None or c.closed:
                raise psycopg.OperationalError("connection lost in a transaction")
            return c
        if c is not None and not c.closed and time.monotonic() - self._used > IDLE_CHECK:
            try:
                c.execute("SELECT 1")
            except psycopg.Error:
                c.close()
        if c is None or c.closed:
            self._conn = c = psycopg.connect(**self._params, autocommit=True)
        self._used = time.monotonic()
        return c

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.conn.execute(self.dialect.sql(sql), list(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """One multi-row INSERT per 1,000 rows where that means the same (an insert without
        DO UPDATE, whose rows cannot touch one row twice): one statement instead of one per
        row, five times faster for a 10,000-recipient list. Else psycopg's executemany."""
        rows = list(rows)
        m = _VALUES.search(sql)
        with self.conn.cursor() as cur:
            if m is None or "DO UPDATE" in sql.upper() or len(rows) < 2:
                cur.executemany(self.dialect.sql(sql), rows)
                return cur.rowcount
            group, total = m.group(1), 0
            for i in range(0, len(rows), MANY_ROWS):
                chunk = rows[i:i + MANY_ROWS]
                stmt = f"{sql[:m.start(1)]}{', '.join([group] * len(chunk))}{sql[m.end(1):]}"
                cur.execute(self.dialect.sql(stmt), [v for row in chunk for v in row])
                total += cur.rowcount
            return total

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Bulk load (COPY FROM STDIN): `relay migrate`."""
        with self.conn.cursor() as cur, cur.copy(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            self._in_tx = True
            try:
                yield
            finally:
                self._in_tx = False

    def version(self) -> int:
        # pg_class read as a table (a fresh snapshot), not to_regclass (a cached catalog
        # lookup that can miss a table another relay's migration just committed)
        if not self.execute("SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE c.relname = 'relay_schema' "
                            "AND n.nspname = current_schema()").fetchone():
            return 0
        row = self.execute("SELECT max(version) FROM relay_schema").fetchone()
        return int(row[0] or 0) if row else 0

    def set_version(self, version: int) -> None:
        self.execute("CREATE TABLE IF NOT EXISTS relay_schema (version INTEGER NOT NULL)")
        self.execute("DELETE FROM relay_schema")
        self.execute("INSERT INTO relay_schema (version) VALUES (?)", [version])

    def lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", [SCHEMA_LOCK])

    def scrub(self, before: bool) -> None:
        """PostgreSQL has no secure_delete: a purged row's bytes stay in the table's files until
        VACUUM reuses the space (README, PostgreSQL)."""

    def describe(self, e: BaseException) -> str:
        """One line, never the password."""
        text = " ".join(str(e).split()) or e.__class__.__name__
        return text.replace(self._secret, "***") if self._secret else text

    def reset_if_broken(self) -> None:
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
