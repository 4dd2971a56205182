"""`relay migrate --to postgresql://...`: copy the configured SQLite log into a PostgreSQL
database, so that several relays can share it.

The SQLite file is opened as `serve` opens it (so an older schema is upgraded first), the
target is given the same schema, and every table is copied in one PostgreSQL transaction
(COPY): documents keep their ids, so the shingles still point at them, and the identity
sequence is moved past the highest id. A target that already holds messages is refused (it is
another relay's log: merging two logs is not what a migration should do silently). Row counts
are compared before the transaction commits; any difference rolls everything back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from .store import Store, StoreError

# every table of the log, parents before children (foreign keys), with its columns in order
TABLES = ("messages", "documents", "shingles", "copies", "deliveries", "notices")
# not copied: the leases of relays running now (relay.claims); migrate with the relays stopped
TRANSIENT = ("claims",)
BATCH = 10_000


@dataclass(frozen=True)
class Migrated:
    source: str
    target: str  # the URL, password redacted
    rows: dict[str, int]


def migrate(path: Path, url: str) -> Migrated:
    """Copy the SQLite log at `path` into the PostgreSQL database at `url`."""
    if not path.exists():
        raise StoreError(f"{path}: database not found")
    src = Store(path, create=False)
    try:
        dst = Store(url=url)
        try:
            return _copy(src, dst)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: Store, dst: Store) -> Migrated:
    unknown = set(sqlite_utils.Database(src.db.conn).table_names()) - {*TABLES, *TRANSIENT}
    if unknown:  # a table this version does not know would be left behind: copy nothing
        raise StoreError(f"{src.name}: table(s) {', '.join(sorted(unknown))} unknown to this "
                         "relay; migrate with the relay version that wrote them")
    pg = dst.db
    with dst.guard("migrate"):
        held = pg.execute("SELECT count(*) FROM messages").fetchone()[0]
        if held:
            raise StoreError(f"{dst.name}: already holds {held} message(s); migrate only into "
                             "an empty relay database")
        rows: dict[str, int] = {}
        with pg.transaction():
            for table in TABLES:
                cur = src.db.execute(f"SELECT * FROM {table}")
                columns = [d[0] for d in cur.description]
                while batch := cur.fetchmany(BATCH):
                    pg.copy_rows(table, columns, batch)
                n = src.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                got = pg.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                if got != n:
                    raise StoreError(f"{dst.name}: {table}: {got} row(s) copied of {n}; "
                                     "nothing was kept")
                rows[table] = n
            pg.execute("SELECT setval(pg_get_serial_sequence('documents', 'id'), "
                       "coalesce((SELECT max(id) FROM documents), 0) + 1, false)")
    return Migrated(str(src.path), dst.name, rows)


def render(m: Migrated) -> str:
    counts = ", ".join(f"{n} {t}" for t, n in m.rows.items())
    return (f"copied {m.source} into {m.target}: {counts}; row counts verified. Point every "
            f"relay's [store] url at it and remove [store] path.\n")
