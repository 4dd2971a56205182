"""systemd readiness: `relay serve` says READY=1 once it listens and STOPPING=1 on SIGTERM,
to the datagram socket named by $NOTIFY_SOCKET, as systemd's Type=notify expects."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

from relay import sdnotify

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield s
    s.close()


def test_notify_sends_one_datagram(notify_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=hello")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=hello"


def test_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"relay-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1")
        assert s.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize("value", [None, "", "relative/path", "/nonexistent/socket"])
def test_no_socket_is_quietly_nothing(value: str | None, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_serve_is_ready_when_listening_and_says_stopping(notify_socket: socket.socket,
                                                         tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "config.toml"
    conf.write_text(f'[listen]\nport = {port}\n[upstream]\nport = {free_port()}\n'
                    '[store]\npath = "var/relay.db"\n[signature]\nkey_file = "var/relay.key"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--config", str(conf)],
                         cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    try:
        ready = notify_socket.recv(4096).decode()
        assert re.match(rf"READY=1\nSTATUS=listening on 127\.0\.0\.1:{port}$", ready), ready
        with socket.create_connection(("127.0.0.1", port), 5) as c:  # really listening
            assert c.recv(100).startswith(b"220")
        p.send_signal(signal.SIGTERM)
        assert notify_socket.recv(4096) == b"STOPPING=1"
        assert p.wait(40) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
