"""Old logs decode the same: tests/vectors/release-0.1.db, written by release 0.1 (the real
relay over loopback for its current code, the log of older codes for the others; see
tests/vectors/make_release_db.py), and suspect excerpts cut from specific copies. Every later
version must give each excerpt the verdict, the named recipient and the number of bits that
release 0.1 gave (fewer bits only where a deliberate decoder change says so, FEWER_BITS_SINCE),
in-process and through `relay decode --json`. The committed files are never
opened in place: each test works on a copy (mode 0600, as the relay requires)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pgserver import PgServer

from relay import keys
from relay.decoding import decode
from relay.store import MIGRATIONS, Store
from relay.tokens import excerpt_words

ROOT = Path(__file__).resolve().parent.parent
VEC = ROOT / "tests" / "vectors"
NAME = "release-0.1"
EXPECTED = json.loads((VEC / NAME / "expected.json").read_text())
EXCERPTS = sorted(EXPECTED["excerpts"])


@pytest.fixture(scope="module")
def log_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(database, key file, config) copied into a temporary folder, mode 0600."""
    tmp = tmp_path_factory.mktemp("release")
    db, key = tmp / "relay.db", tmp / "relay.key"
    shutil.copyfile(VEC / f"{NAME}.db", db)
    shutil.copyfile(VEC / f"{NAME}.key", key)
    db.chmod(0o600)
    key.chmod(0o600)
    cfg = tmp / "config.toml"
    cfg.write_text(f'[store]\npath = "{db}"\n[signature]\nkey_file = "{key}"\n'
                   f'[decode]\nthreshold = {EXPECTED["threshold"]}\n')
    return db, key, cfg


# Deliberate decoder changes since the release that wrote the log, and the excerpts whose
# number of bits read they change (never the verdict or the recipient named).
FEWER_BITS_SINCE = {
    # 0.2: an excerpt that fits text/plain and text/html word for word is read only at gaps
    # that are carriers of the same class in both, so an HTML paste no longer reads the gaps
    # only the HTML has (the plain text's line ends)
    "rendering rule": lambda name: "-html-" in name,
}


def check(name: str, rep: dict) -> None:
    want = EXPECTED["excerpts"][name]
    top = rep["candidates"][0]["recipient"] if rep["candidates"] else None
    got = {"verdict": rep["verdict"],
           "recipient": top if rep["verdict"] == "identified" else None,
           "best_candidate": top,
           "bits_observed": rep["excerpts"][0]["bits_observed"],
           "message_id": rep["message"]["message_id"] if rep["message"] else None}
    if any(touches(name) for touches in FEWER_BITS_SINCE.values()):
        assert 0.85 * want["bits_observed"] <= got["bits_observed"] < want["bits_observed"]
        got["bits_observed"] = want["bits_observed"]
    assert got == {k: want[k] for k in got}, name
    if want["verdict"] == "identified":
        assert want["recipient"] == want["copy_of"]  # the vector itself names the leaker


def test_the_log_holds_every_code() -> None:
    # independent bits, blocks cut EVEN, blocks cut UNITS: one message each at least
    import sqlite3

    conn = sqlite3.connect(f"file:{VEC / NAME}.db?mode=ro&immutable=1", uri=True)
    try:
        rows = conn.execute("SELECT block, block_cut, COUNT(*) FROM messages "
                            "GROUP BY block, block_cut").fetchall()
    finally:
        conn.close()
    assert {(b > 0, c if b else None) for b, c, _ in rows} == {(False, None), (True, 0),
                                                              (True, 1)}
    assert "TEST-ONLY" in (VEC / f"{NAME}.key").read_text()


def test_upgrade_keeps_every_logged_message_on_code_v2(log_copy: tuple[Path, Path, Path]) -> None:
    """Opening the released log runs migration 7 (and the later ones): every message it holds
    reads back as code v2 (with its own blocks, cut and rules), so retries re-sign it and
    decodes read it as before; only new mail gets code v3."""
    from relay.scheme import EVEN, UNITS, V2

    db, _, _ = log_copy
    store = Store(db, create=False)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 7
        ids = [r[0] for r in store.db.execute("SELECT identity FROM messages")]
        schemes = {store.signing_of(i)[1] for i in ids}  # type: ignore[index]
    finally:
        store.close()
    assert len(ids) >= 4 and {s.version for s in schemes} == {V2}
    assert {(s.block > 0, s.cut) for s in schemes} >= {(False, EVEN), (True, EVEN),
                                                       (True, UNITS)}


@pytest.mark.parametrize("name", EXCERPTS)
def test_decode_in_process(log_copy: tuple[Path, Path, Path], name: str) -> None:
    db, key, _ = log_copy
    store = Store(db, create=False)
    try:
        text = (VEC / NAME / name).read_text()
        rep = decode([excerpt_words(text)], store, keys.load(key),
                     EXPECTED["threshold"]).as_json()
    finally:
        store.close()
    check(name, rep)


@pytest.mark.parametrize("name", EXCERPTS)
def test_decode_cli(log_copy: tuple[Path, Path, Path], name: str) -> None:
    db, _, cfg = log_copy
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--db", str(db),
                        "--config", str(cfg), str(VEC / NAME / name)],
                       capture_output=True, text=True, env=env, cwd=cfg.parent, timeout=60)
    assert r.returncode == 0, r.stderr
    check(name, json.loads(r.stdout))


def test_committed_log_is_untouched() -> None:
    # the tests above read copies; the committed database is byte-for-byte what 0.1 wrote
    digest = hashlib.sha256((VEC / f"{NAME}.db").read_bytes()).hexdigest()
    assert digest == EXPECTED["db_sha256"]


def test_migrated_to_postgresql_decodes_the_same(log_copy: tuple[Path, Path, Path],
                                                  pg_server: PgServer, tmp_path: Path) -> None:
    """`relay migrate --to URL` copies the released log into PostgreSQL; every excerpt then
    decodes there as it does on the SQLite file (same verdict, recipient and bits), and a
    second migrate into the now non-empty database is refused in one line."""
    db, key, cfg = log_copy
    url = pg_server.url(pg_server.new_database())
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    run = [sys.executable, "-m", "relay", "migrate", "--config", str(cfg), "--to", url]
    r = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"copied {db} into {url}: ") and "verified" in r.stdout
    store = Store(url=url)
    try:
        for name in EXCERPTS:
            text = (VEC / NAME / name).read_text()
            check(name, decode([excerpt_words(text)], store, keys.load(key),
                               EXPECTED["threshold"]).as_json())
    finally:
        store.close()
    pg_cfg = tmp_path / "pg.toml"
    pg_cfg.write_text(cfg.read_text().replace(f'path = "{db}"', f'url = "{url}"'))  # not both
    r = subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--config",
                        str(pg_cfg), str(VEC / NAME / EXCERPTS[0])],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    check(EXCERPTS[0], json.loads(r.stdout))
    again = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "already holds" in again.stderr, again.stderr
