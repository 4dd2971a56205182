"""`relay migrate --to URL`: the SQLite log copied into PostgreSQL, every table and row, ids
kept; a new message logged afterwards gets a fresh document id; wrong invocations are one line.
(Decoding a released log after migrating it: tests/test_release_db.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pgserver import PgServer

from relay import cli, storemigrate
from relay.scheme import UNITS, V3, Scheme
from relay.store import ACCEPTED, Store, StoreError

SCHEME3 = Scheme(V3, 0.15, 48, UNITS, 1)


def log(s: Store, identity: str, shingles: list[int]) -> None:
    s.record_message(identity=identity, key_id="k1", scheme=SCHEME3, sender="a@example.com",
                     message_id=f"<{identity}@x>", subject=identity, date=None, size=10,
                     documents=[("1", "plain", b"\1" * 16, b"\1\0", b"\2"),
                                ("2", "html", b"\2" * 16, b"\0\1", None)],
                     doc_shingles=[shingles, [2**63 - 1]])
    s.set_copy_states(identity, [(f"r{i}@example.com", ACCEPTED, "250 ok") for i in range(3)])


def test_every_row_is_copied_ids_kept_and_new_ids_follow(tmp_path: Path,
                                                          pg_server: PgServer) -> None:
    src = Store(tmp_path / "relay.db")
    log(src, "m1", [1, 2, 3])
    log(src, "m2", [-5, 3])
    src.set_delivery_states("o1", [("x@example.com", ACCEPTED, "250")])
    src.set_notice_state("m1", ACCEPTED, "250")
    docs = src.documents_of("m2")
    src.close()
    url = pg_server.url(pg_server.new_database())
    got = storemigrate.migrate(tmp_path / "relay.db", url)
    assert got.rows == {"messages": 2, "documents": 4, "shingles": 7, "copies": 6,
                        "deliveries": 1, "notices": 1}
    pg = Store(url=url)
    assert pg.documents_of("m2") == docs  # same ids: the shingles still point at them
    assert pg.find_documents([3]) == [(docs[0].id - 2, 1), (docs[0].id, 1)]
    assert pg.signing_of("m1") == ("k1", SCHEME3)
    assert pg.notice_state("m1") == ACCEPTED
    log(pg, "m3", [9])  # the identity sequence was moved past the copied ids
    assert pg.documents_of("m3")[0].id == docs[1].id + 1
    pg.close()


def test_refusals_are_one_line(tmp_path: Path, pg_server: PgServer,
                               capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "relay.toml"
    conf.write_text(f'[store]\npath = "{tmp_path / "relay.db"}"\n')
    assert cli.main(["migrate", "--config", str(conf), "--to", "/tmp/x.db"]) == 2
    assert "expected a postgresql://" in capsys.readouterr().err
    assert cli.main(["migrate", "--config", str(conf), "--to", "postgresql://x@h/d"]) == 1
    assert capsys.readouterr().err.strip().endswith("relay.db: database not found")
    url = pg_server.url(pg_server.new_database())
    Store(tmp_path / "relay.db").close()
    conf.write_text(f'[store]\nurl = "{url}"\n')  # the log is already PostgreSQL
    assert cli.main(["migrate", "--config", str(conf), "--to", url]) == 2
    assert "already sets [store] url" in capsys.readouterr().err
    with pytest.raises(StoreError, match="cannot open database"):
        storemigrate.migrate(tmp_path / "relay.db", url.rsplit("/", 1)[0] + "/no_such_db")


def test_a_table_unknown_to_this_version_is_never_left_behind(tmp_path: Path,
                                                              pg_server: PgServer) -> None:
    """A log written by a newer relay (a table this version does not know) is refused before
    anything is copied; a claim of a running relay (transient) is not copied."""
    src = Store(tmp_path / "relay.db")
    log(src, "m1", [1])
    src.db.execute("INSERT INTO claims VALUES ('m1', 'mx1/1/x', 1e12)")
    src.close()
    url = pg_server.url(pg_server.new_database())
    assert storemigrate.migrate(tmp_path / "relay.db", url).rows["messages"] == 1
    dst = Store(url=url)
    assert dst.db.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
    dst.close()
    src = Store(tmp_path / "relay.db")
    src.db.execute("CREATE TABLE verdicts (id INTEGER PRIMARY KEY)")
    src.close()
    with pytest.raises(StoreError, match="verdicts unknown to this relay"):
        storemigrate.migrate(tmp_path / "relay.db", pg_server.url(pg_server.new_database()))
