"""What an admin runs against the relay's log: `relay messages`, `relay purge`, and the daily
retention purge of the running relay (`relay check` is relay.checks).

* `messages` reads the log through a read-only connection (SQLite or PostgreSQL: safe beside
  the running relays, never migrates or creates anything).
* `purge` deletes every fingerprinted message logged before a date, with its text layout,
  shingles, copies and notice, and ordinary-mail outcomes older than that; on SQLite the rows
  are overwritten on disk (`secure_delete`), since the log names who received what. A leak from a
  purged message can no longer be decoded: purge lists them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import StoreConfig
from .store import MIGRATIONS, Store, StoreError, open_db, open_store

log = logging.getLogger("relay")

DAY = 86400.0

def parse_date(value: str) -> float | None:
    """'YYYY-MM-DD' or an ISO 8601 date-time ('2026-01-31T08:00', '...Z', '...+01:00'); a
    date or time without a zone is UTC. Epoch seconds, or None when it is not a date."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def open_readonly(path: Path | None, url: str | None = None) -> Any:
    """The log, read-only (safe beside the running relays): the SQLite file `path`, or the
    PostgreSQL database at `url`. StoreError when it is missing, unreachable, not a relay
    database, or of a newer schema."""
    db = open_db(path, url, readonly=True)
    try:
        version = db.version()
    except db.Error as e:
        db.close()
        raise StoreError(f"{db.name}: cannot open database: {db.describe(e)}") from None
    if version > len(MIGRATIONS):
        db.close()
        raise StoreError(f"{db.name}: database schema {version} is newer than this relay")
    if version == 0:
        db.close()
        raise StoreError(f"{db.name}: not a relay database (no schema)")
    return db


# --- relay messages -------------------------------------------------------------------------

@dataclass(frozen=True)
class MessageRow:
    identity: str  # first 16 hex digits, as in the relay's log lines
    logged: str  # when the relay logged it (UTC)
    date: str | None  # the message's Date header
    sender: str
    subject: str | None
    message_id: str | None
    recipients: int
    delivered: int
    pending: int
    failed: int


def list_messages(path: Path | None, since: float | None = None,
                  url: str | None = None) -> list[MessageRow]:
    """The logged fingerprinted messages, newest first, with their copies' states."""
    conn = open_readonly(path, url)
    try:
        rows = conn.execute(
            "SELECT substr(m.identity, 1, 16), m.created_at, m.date, m.sender, m.subject, "
            " m.message_id, count(c.recipient),"
            " coalesce(sum(CASE WHEN c.state = 'accepted' THEN 1 ELSE 0 END), 0), "
            " coalesce(sum(CASE WHEN c.state IN ('pending', 'tempfail') THEN 1 ELSE 0 END), 0), "
            " coalesce(sum(CASE WHEN c.state = 'permfail' THEN 1 ELSE 0 END), 0) "
            "FROM messages m LEFT JOIN copies c ON c.identity = m.identity "
            "WHERE m.created_at >= ? GROUP BY m.identity ORDER BY m.created_at DESC",
            [since if since is not None else float("-inf")]).fetchall()
    except conn.Error as e:
        raise StoreError(f"{conn.name}: cannot read messages: {conn.describe(e)}") from None
    finally:
        conn.close()
    return [MessageRow(r[0], iso(r[1]), r[2], r[3], r[4], r[5], *r[6:]) for r in rows]


def render_messages(rows: list[MessageRow]) -> str:
    if not rows:
        return "no fingerprinted message logged\n"
    out = []
    for r in rows:
        sender = "<>" if r.sender in ("<>", "") else f"<{r.sender}>"
        out.append(f"{r.logged}  {sender}  {r.subject or '(no subject)'}\n"
                   f"    Message-ID {r.message_id or '(none)'}  Date {r.date or '(none)'}  "
                   f"identity {r.identity}\n"
                   f"    {r.recipients} recipient(s): {r.delivered} delivered, {r.pending} pending,"
                   f" {r.failed} failed\n")
    return "".join(out)


def messages_json(rows: list[MessageRow]) -> list[dict]:
    return [asdict(r) for r in rows]


# --- relay purge / keep_days ----------------------------------------------------------------

@dataclass(frozen=True)
class Purged:
    messages: list[tuple[str, str | None, str | None]]  # (logged, subject, Message-ID)
    copies: int
    deliveries: int


def purge(store: Store, before: float) -> Purged:
    """Delete what was logged before `before` (epoch seconds), in one transaction."""
    db = store.db
    with store.guard("purge"):
        db.scrub(before=True)
        with db.transaction():
            old = db.execute("SELECT identity, created_at, subject, message_id FROM messages "
                             "WHERE created_at < ? ORDER BY created_at", [before]).fetchall()
            db.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (identity TEXT PRIMARY KEY)")
            db.execute("DELETE FROM purge_ids")
            db.executemany("INSERT INTO purge_ids VALUES (?)", [(r[0],) for r in old])
            copies = 0
            if old:
                db.execute("DELETE FROM shingles WHERE doc_id IN (SELECT id FROM documents "
                           "WHERE identity IN (SELECT identity FROM purge_ids))")
                db.execute("DELETE FROM documents WHERE identity IN "
                           "(SELECT identity FROM purge_ids)")
                copies = db.execute("DELETE FROM copies WHERE identity IN "
                                    "(SELECT identity FROM purge_ids)").rowcount
                db.execute("DELETE FROM notices WHERE identity IN "
                           "(SELECT identity FROM purge_ids)")
                db.execute("DELETE FROM messages WHERE identity IN "
                           "(SELECT identity FROM purge_ids)")
            deliveries = db.execute("DELETE FROM deliveries WHERE updated_at < ?",
                                    [before]).rowcount
            db.execute("DELETE FROM purge_ids")
        if old or deliveries:
            db.scrub(before=False)
    return Purged([(iso(r[1]), r[2], r[3]) for r in old], copies, deliveries)


def render_purged(p: Purged, before: float) -> str:
    head = (f"purged {len(p.messages)} fingerprinted message(s) and {p.copies} copy record(s) "
            f"logged before {iso(before)}, and {p.deliveries} ordinary-mail record(s)")
    if not p.messages:
        return head + "\n"
    lines = [head + "; leaks of these messages can no longer be decoded:"]
    lines += [f"  {when}  {subj or '(no subject)'}  {mid or '(no Message-ID)'}"
              for when, subj, mid in p.messages]
    return "\n".join(lines) + "\n"


async def retention_loop(store: object, keep_days: int, every: float = DAY) -> None:
    """The running relay's daily purge (`[store] keep_days`); `store` is asyncstore.AsyncStore.
    Runs first right after start (in the background: never delays serving)."""
    while True:
        before = time.time() - keep_days * DAY
        try:
            p: Purged = await store.run(lambda s, b=before: purge(s, b))  # type: ignore[attr-defined]
            if p.messages or p.deliveries:
                log.info("retention: purged %d message(s), %d copy record(s), %d ordinary-mail "
                         "record(s) logged before %s (keep_days %d)", len(p.messages), p.copies,
                         p.deliveries, iso(before), keep_days)
        except StoreError as e:
            log.error("retention: %s", e)
        await asyncio.sleep(every)


def purge_cli(cfg: StoreConfig, before: float) -> Purged:
    """`relay purge`: entries logged before `before` deleted from the [store] log."""
    store = open_store(cfg.path, cfg.url, create=False)  # StoreError: the CLI prints its one line
    try:
        return purge(store, before)
    finally:
        store.close()
