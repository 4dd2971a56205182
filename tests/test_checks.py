"""`relay check` as an admin runs it (real processes) beside a running relay (in-process, real
sink on loopback), and the one-line summary it ends with."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
from pathlib import Path

import pytest
from admincli import STAFF, cli, write_config
from conftest import Sink, StartRelay, free_port, make_message, smtp_send
from pgserver import Backend

from relay.checks import OK, PROBLEM, WARN, Finding, render_findings
from relay.config import Config


@pytest.mark.parametrize("levels,summary", [
    ([], "relay check: 0 problem(s), 0 warning(s)"),
    ([OK, OK], "relay check: 0 problem(s), 0 warning(s)"),
    ([OK, WARN, PROBLEM, PROBLEM], "relay check: 2 problem(s), 1 warning(s)"),
])
def test_render_findings_one_line_each_and_a_summary(levels: list[str], summary: str) -> None:
    text = render_findings([Finding(lv, "database", f"detail {i}") for i, lv in enumerate(levels)])
    lines = text.splitlines()
    assert text.endswith("\n") and lines[-1] == summary and len(lines) == len(levels) + 1
    for i, (line, lv) in enumerate(zip(lines, levels, strict=False)):
        assert line == f"{lv:<8} database  detail {i}"


async def test_check_passes_beside_the_running_relay(cfg: Config, start_relay: StartRelay,
                                                     sink: Sink, tmp_path: Path,
                                                     backend: Backend) -> None:
    cfg = backend.config(cfg)
    relay = await start_relay(cfg)
    await smtp_send(relay.port, "boss@example.com", STAFF, make_message())
    conf = write_config(cfg, tmp_path / "admin.toml", relay.port)
    rc, out, err = await cli("check", "--config", str(conf))
    assert rc == 0, out + err
    assert "in use by a running relay" in out
    assert "answers EHLO" in out and "schema" in out and "1 message(s)" in out
    assert f"ok       database  {backend.url or cfg.store.path}: schema" in out, out
    assert out.strip().splitlines()[-1] == "relay check: 0 problem(s), 0 warning(s)"
    rc, out, _ = await cli("check", "--config", str(conf), "--json")
    assert rc == 0 and {f["what"] for f in json.loads(out)} >= {"key file", "database",
                                                                 "listen", "upstream"}


async def test_check_finds_each_problem(cfg: Config, start_relay: StartRelay, sink: Sink,
                                        tmp_path: Path) -> None:
    r = await start_relay(cfg)  # creates the key and database as serve does
    await r.stop(grace=1)
    port = free_port()
    conf = write_config(cfg, tmp_path / "c.toml", port)
    rc, out, err = await cli("check", "--config", str(conf))
    assert rc == 0, out + err

    cfg.signature.key_file.chmod(0o644)
    rc, out, _ = await cli("check", "--config", str(conf))
    assert rc == 1 and "PROBLEM  key file" in out and "mode 644" in out, out
    cfg.signature.key_file.chmod(0o600)

    cfg.store.path.chmod(0o640)
    rc, out, _ = await cli("check", "--config", str(conf))
    assert rc == 1 and "PROBLEM  database" in out and "0640" in out, out
    cfg.store.path.chmod(0o600)

    with socket.socket() as squatter:  # something else holds the listen port
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        rc, out, _ = await cli("check", "--config", str(conf))
        assert rc == 1 and "PROBLEM  listen" in out, out

    await sink.close()  # the upstream is gone
    rc, out, _ = await cli("check", "--config", str(conf))
    assert rc == 1 and "PROBLEM  upstream" in out, out
    rc, out, _ = await cli("check", "--config", str(conf), "--no-upstream")
    assert rc == 0 and "upstream" not in out, out

    with sqlite3.connect(cfg.store.path) as c:
        c.execute("PRAGMA user_version = 99")
    rc, out, _ = await cli("check", "--config", str(conf), "--no-upstream")
    assert rc == 1 and "newer than this relay" in out, out


async def test_unexpanded_list_is_logged_and_reported_by_check(
        cfg: Config, relay, sink: Sink, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="relay"):
        reply = await smtp_send(relay.port, "boss@example.com", ["all-staff@example.com"],
                                make_message())
    assert reply.startswith("250")
    warned = [r.getMessage() for r in caplog.records if "arrived unexpanded" in r.getMessage()]
    assert len(warned) == 1 and "<all-staff@example.com>" in warned[0]
    conf = write_config(cfg, tmp_path / "admin.toml", relay.port)
    rc, out, _ = await cli("check", "--config", str(conf))
    assert rc == 0, out
    assert "warning  policy    list address <all-staff@example.com> arrived unexpanded in 1" \
        in out
    assert out.strip().splitlines()[-1] == "relay check: 0 problem(s), 1 warning(s)"
