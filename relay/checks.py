"""`relay check`: read the config as `serve` would and check everything serve will need: the
key file, the database, the members and TLS files, that the listen (and metrics) address is free,
and that the upstream answers EHLO. Each finding is one line; any problem makes the exit status 1.
A shell (files, sockets, SQLite read-only); the database is opened as relay.operator opens it for
`relay messages`.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
from dataclasses import dataclass
from pathlib import Path

from .config import Config, ConfigError, Listen, Policy, Signature, StoreConfig, Upstream
from .operator import iso, open_readonly
from .store import MIGRATIONS, StoreError

OK, WARN, PROBLEM = "ok", "warning", "PROBLEM"


@dataclass(frozen=True)
class Finding:
    level: str
    what: str
    detail: str


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _writable_dir(path: Path) -> Path | None:
    """The nearest existing ancestor of path, when serve could create path there."""
    d = path.parent
    while not d.exists():
        d = d.parent
    return d if os.access(d, os.W_OK | os.X_OK) else None


def check_key(signature: Signature) -> Finding:
    from . import keys

    path = signature.key_file
    if not path.exists():
        d = _writable_dir(path)
        if d is None:
            return Finding(PROBLEM, "key file", f"{path}: missing, and serve cannot create it "
                           "(folder not writable)")
        return Finding(OK, "key file", f"{path}: missing; serve creates it (mode 0600)")
    try:
        ring = keys.load(path)
    except keys.KeyFileError as e:
        return Finding(PROBLEM, "key file", str(e))
    return Finding(OK, "key file", f"{path}: {len(ring.keys)} key(s), current "
                   f"{ring.current[0]}, mode {_mode(path):04o}")


def check_database(store: StoreConfig, policy: Policy) -> list[Finding]:
    path = store.path
    if store.url:
        return _check_log(store, policy, [], None)
    if not path.exists():
        if _writable_dir(path) is None:
            return [Finding(PROBLEM, "database", f"{path}: missing, and serve cannot create "
                            "it (folder not writable)")]
        return [Finding(OK, "database", f"{path}: missing; serve creates it (mode 0600)")]
    out = []
    for p in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))):
        if p.exists() and _mode(p) & 0o077:
            out.append(Finding(PROBLEM, "database", f"{p}: mode {_mode(p):04o}; it must be "
                               f"0600 (chmod 600 {p})"))
    if not os.access(path, os.R_OK | os.W_OK):
        out.append(Finding(PROBLEM, "database", f"{path}: not readable and writable by this "
                           "user (run check as the relay's user)"))
    return _check_log(store, policy, out, f", mode {_mode(path):04o}")


def _check_log(store: StoreConfig, policy: Policy, out: list[Finding],
               mode: str | None) -> list[Finding]:
    """What the log holds (either backend), read-only."""
    try:
        conn = open_readonly(store.path, store.url)
    except StoreError as e:
        return [*out, Finding(PROBLEM, "database", str(e))]
    try:
        version = conn.version()
        n, oldest = conn.execute("SELECT count(*), min(created_at) FROM messages").fetchone()
        lists = sorted({a.lower() for a in policy.lists} - {a.lower() for a in policy.members})
        unexpanded = []
        if lists:
            marks = ",".join("?" * len(lists))
            unexpanded = conn.execute(
                "SELECT lower(c.recipient), count(*), max(m.created_at) FROM copies c "
                "JOIN messages m ON m.identity = c.identity "
                f"WHERE lower(c.recipient) IN ({marks}) GROUP BY lower(c.recipient)",
                lists).fetchall()
    except conn.Error as e:
        return [*out, Finding(PROBLEM, "database", f"{conn.name}: cannot read: "
                              f"{conn.describe(e)}")]
    finally:
        conn.close()
    schema = (f"schema {version}" if version == len(MIGRATIONS)
              else f"schema {version}, upgraded to {len(MIGRATIONS)} when serve starts")
    since = f", oldest logged {iso(oldest)}" if oldest is not None else ""
    keep = (f"keep_days {store.keep_days}" if store.keep_days else "keep_days 0 (kept forever)")
    out.append(Finding(OK, "database", f"{conn.name}: {schema}, {n} message(s){since}"
                       f"{mode or ''}, {keep}"))
    for addr, count, last in unexpanded:
        out.append(Finding(WARN, "policy", f"list address <{addr}> arrived unexpanded in {count} "
                           f"message(s), last {iso(last)}: every member got the same copy; "
                           "expand it before the relay (virtual_alias_maps) or give it a "
                           "[policy.members] file"))
    return out


def check_files(policy: Policy, listen: Listen, source: str) -> list[Finding]:
    from .passwords import load_auth_file
    from .policy import load_members

    out = []
    try:
        members = load_members(policy)
        for addr, m in members.items():
            out.append(Finding(OK, "policy", f"{addr}: {len(m)} member(s) from "
                               f"{policy.members[addr]}"))
    except ConfigError as e:
        out.append(Finding(PROBLEM, "policy", str(e)))
    for addr in policy.lists:
        if addr not in policy.members:
            out.append(Finding(OK, "policy", f"{addr}: a list the MTA must expand before the "
                               "relay (virtual_alias_maps)"))
    if listen.tls_cert is not None:
        from .server import tls_context

        try:
            tls_context(listen, source)
            out.append(Finding(OK, "tls", f"{listen.tls_cert}: loaded"))
        except ConfigError as e:
            out.append(Finding(PROBLEM, "tls", str(e)))
    if listen.auth_file is not None:
        try:
            users = load_auth_file(listen.auth_file)
            out.append(Finding(OK, "auth", f"{listen.auth_file}: {len(users)} user(s)"))
        except ConfigError as e:
            out.append(Finding(PROBLEM, "auth", str(e)))
    return out


def _greeting(host: str, port: int) -> str:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 3) as s:
        s.settimeout(3)
        return s.recv(512).decode("utf-8", "replace").strip()
    return ""


def _health(host: str, port: int) -> str:
    """The first line of a relay's /health answer on host:port, or ''."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), 3) as s:
        s.settimeout(3)
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = s.recv(512).decode("latin-1", "replace")
        if data.startswith("HTTP/") and data.rstrip().endswith(("ok", "stopping")):
            return data.splitlines()[0]
    return ""


def check_listen(what: str, host: str, port: int, hostname: str | None = None) -> Finding:
    if port == 0:
        return Finding(OK, what, f"{host}:0: a port chosen at start")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return Finding(PROBLEM, what, f"{host}:{port}: cannot resolve: {e.strerror}")
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            greet = _greeting(host, port) if hostname else _health(host, port)
            if greet.startswith(f"220 {hostname} ") or greet.startswith("HTTP/"):
                return Finding(OK, what, f"{host}:{port}: in use by a running relay "
                               f"({greet[:80]})")
            return Finding(PROBLEM, what, f"{host}:{port}: cannot listen: {e.strerror}"
                           + (f" (in use: {greet[:80]})" if greet else ""))
    return Finding(OK, what, f"{host}:{port}: free")


def check_upstream(upstream: Upstream, hostname: str, timeout: float = 5.0) -> Finding:
    where = f"{upstream.host}:{upstream.port}"
    try:
        with smtplib.SMTP(upstream.host, upstream.port, hostname, timeout=timeout) as c:
            code, msg = c.ehlo(hostname)
            greet = (c.ehlo_resp or b"").split(b"\n", 1)[0].decode("utf-8", "replace")
    except (OSError, smtplib.SMTPException) as e:
        return Finding(PROBLEM, "upstream", f"{where}: no SMTP service: "
                       f"{e.__class__.__name__} {e}".strip())
    if code != 250:
        return Finding(PROBLEM, "upstream", f"{where}: EHLO answered {code} "
                       f"{msg.decode('utf-8', 'replace')[:100]}")
    return Finding(OK, "upstream", f"{where}: answers EHLO ({greet[:60]})")


def check(cfg: Config, upstream: bool = True) -> list[Finding]:
    out = [Finding(OK, "config", cfg.source)]
    out.append(check_key(cfg.signature))
    out += check_database(cfg.store, cfg.policy)
    out += check_files(cfg.policy, cfg.listen, cfg.source)
    out.append(check_listen("listen", cfg.listen.host, cfg.listen.port, cfg.listen.hostname))
    if cfg.metrics.listen is not None:
        out.append(check_listen("metrics", *cfg.metrics.listen))
    if upstream:
        out.append(check_upstream(cfg.upstream, cfg.listen.hostname))
    return out


def render_findings(findings: list[Finding]) -> str:
    lines = [f"{f.level:<8} {f.what:<9} {f.detail}" for f in findings]
    problems = sum(f.level == PROBLEM for f in findings)
    warnings = sum(f.level == WARN for f in findings)
    lines.append(f"relay check: {problems} problem(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"

