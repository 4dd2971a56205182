"""`relay messages` and `relay purge` as an admin runs them (real processes) against the database
of a running relay (in-process, real sink on loopback), the daily retention purge ([store]
keep_days), and the one-line errors of the admin commands (`relay check`: tests/test_checks.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from admincli import STAFF, cli, one_line, write_config
from conftest import PROSE, Sink, StartRelay, make_message, smtp_send
from pgserver import Backend

from relay.config import Config
from relay.operator import parse_date


@pytest.mark.parametrize("text,ok", [
    ("2026-01-31", True), ("2026-01-31T08:00", True), ("2026-01-31T08:00:00Z", True),
    ("2026-01-31 08:00+01:00", True), ("31/01/2026", False), ("yesterday", False),
    ("2026-13-01", False), ("", False),
])
def test_parse_date(text: str, ok: bool) -> None:
    assert (parse_date(text) is not None) == ok


def test_parse_date_is_utc_unless_a_zone_is_given() -> None:
    assert parse_date("2026-01-01") == parse_date("2026-01-01T00:00:00+00:00")
    assert parse_date("2026-01-01T01:00+01:00") == parse_date("2026-01-01")


async def test_messages_and_purge_on_the_running_relays_database(
        cfg: Config, start_relay: StartRelay, sink: Sink, tmp_path: Path,
        backend: Backend) -> None:
    cfg = backend.config(cfg)
    relay = await start_relay(cfg)
    sink.rcpt_replies[STAFF[3]] = "550 5.1.1 no such user"
    r1 = await smtp_send(relay.port, "boss@example.com", STAFF,
                         make_message(subject="Budget"))
    sink.rcpt_replies.clear()
    r2 = await smtp_send(relay.port, "boss@example.com", STAFF[:2],
                         make_message(subject="Parking"))
    assert r1.startswith("250") and r2.startswith("250")
    conf = write_config(cfg, tmp_path / "admin.toml", relay.port)

    rc, out, err = await cli("messages", "--config", str(conf), "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["subject"] for r in rows] == ["Parking", "Budget"]  # newest first
    budget = rows[1]
    assert budget["sender"] == "boss@example.com" and budget["message_id"].startswith("<")
    assert (budget["recipients"], budget["delivered"], budget["pending"], budget["failed"]) == (
        6, 5, 0, 1)
    assert rows[0]["delivered"] == 2 and len(rows[0]["identity"]) == 16

    rc, out, err = await cli("messages", "--config", str(conf))
    assert rc == 0 and "Budget" in out, out
    assert "6 recipient(s): 5 delivered, 0 pending, 1 failed" in out, out
    rc, out, _ = await cli("messages", "--config", str(conf), "--since", "2999-01-01", "--json")
    assert rc == 0 and json.loads(out) == []

    # nothing is older than yesterday: purge removes nothing
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    rc, out, err = await cli("purge", "--config", str(conf), "--before", yesterday)
    assert rc == 0 and out.startswith("purged 0 fingerprinted message(s)"), (out, err)

    # everything is older than tomorrow: both go, and purge names them
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    leak = " ".join(PROSE[1].split()[:40])
    (tmp_path / "leak.txt").write_text(leak)
    rc, out, _ = await cli("decode", "--config", str(conf), "--json",
                           str(tmp_path / "leak.txt"))
    assert json.loads(out)["verdict"] != "no_match"
    rc, out, err = await cli("purge", "--config", str(conf), "--before", tomorrow)
    assert rc == 0, err
    assert out.startswith("purged 2 fingerprinted message(s) and 8 copy record(s)"), out
    assert "can no longer be decoded" in out and "Budget" in out and "Parking" in out
    rc, out, _ = await cli("messages", "--config", str(conf), "--json")
    assert json.loads(out) == []
    rc, out, _ = await cli("decode", "--config", str(conf), "--json",
                           str(tmp_path / "leak.txt"))
    assert json.loads(out)["verdict"] == "no_match"
    # personal data is gone from the file, not just unlinked from the tables (SQLite; on
    # PostgreSQL the database holds no log file of ours)
    for p in (cfg.store.path, Path(f"{cfg.store.path}-wal")) if backend.url is None else ():
        if p.exists():
            blob = p.read_bytes()
            assert b"Budget" not in blob and STAFF[0].encode() not in blob, p

    # the relay keeps working on the purged database
    r3 = await smtp_send(relay.port, "boss@example.com", STAFF, make_message(subject="After"))
    assert r3.startswith("250")


async def test_bad_date_missing_database_bad_config_are_one_line(tmp_path: Path) -> None:
    rc, _, err = await cli("messages", "--since", "31/12/2025")
    one_line(rc, err, 2, "--since", "31/12/2025")
    rc, _, err = await cli("purge", "--before", "last week")
    one_line(rc, err, 2, "--before")
    rc, _, err = await cli("purge")
    one_line(rc, err, 2, "--before")
    good = tmp_path / "c.toml"
    good.write_text(f'[store]\npath = "{tmp_path}/none.db"\n')
    rc, _, err = await cli("messages", "--config", str(good))
    one_line(rc, err, 1, "none.db", "not found")
    rc, _, err = await cli("purge", "--config", str(good), "--before", "2026-01-01")
    one_line(rc, err, 1, "none.db", "not found")
    assert not (tmp_path / "none.db").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nkeep_days = 'forever'\n")
    for cmd in (["messages"], ["purge", "--before", "2026-01-01"], ["check"]):
        rc, _, err = await cli(*cmd, "--config", str(bad))
        one_line(rc, err, 2, "bad.toml", "store.keep_days")


async def test_keep_days_purges_old_entries_when_serve_starts(
        cfg: Config, start_relay: StartRelay, sink: Sink, tmp_path: Path,
        backend: Backend) -> None:
    cfg = backend.config(cfg)
    r = await start_relay(cfg)
    for subject in ("Old", "New"):
        assert (await smtp_send(r.port, "boss@example.com", STAFF,
                                make_message(subject=subject))).startswith("250")
    await r.stop(grace=1)
    s = backend.store(cfg.store.path)
    with s.db.transaction():
        s.db.execute("UPDATE messages SET created_at = created_at - 40 * 86400 "
                     "WHERE subject = 'Old'")
    r = await start_relay(cfg.with_keys(store=dict(keep_days=30)))
    assert r.port  # serving at once; the purge runs beside it
    for _ in range(100):
        left = [s for (s,) in s.db.execute("SELECT subject FROM messages").fetchall()]
        if left == ["New"]:
            break
        await asyncio.sleep(0.05)
    assert left == ["New"]
    assert s.db.execute("SELECT count(*) FROM copies").fetchone()[0] == len(STAFF)
    s.close()
