"""Test helper: a private, real Postfix with the relay as its after-queue content filter,
configured from the README's recipe, and a recording sink as the final destination.

The Postfix instance lives entirely under one folder (config, queue, data, maillog), listens
on loopback ports chosen by the OS, does no DNS, and sends everything it delivers to the sink
(`relayhost`). master.cf is Debian's stock /etc/postfix/master.cf (chroot off, the public
smtpd moved to a loopback port) with the README's master.cf lines appended; main.cf gets the
README's main.cf lines. The two ports in the recipe (10025, 10026) are replaced by free ones.
So a fault in the recipe is a fault here too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STOCK_MASTER_CF = Path("/etc/postfix/master.cf")


def have_postfix() -> bool:
    return os.geteuid() == 0 and shutil.which("postfix") is not None and STOCK_MASTER_CF.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the recipe, as the README writes it ---------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    main_cf: str
    master_cf: str


def readme_recipe(readme: Path = ROOT / "README.md") -> Recipe:
    """The main.cf and master.cf blocks of the README's "Running it next to Postfix"."""
    text = readme.read_text()
    sec = text.split("## Running it next to Postfix", 1)[1]

    def block(label: str) -> str:
        m = re.search(re.escape(f"`{label}`") + r":?\s*\n+```[a-z]*\n(.*?)```", sec, re.S)
        if m is None:
            raise AssertionError(f"README: no code block after `{label}`")
        return m.group(1)

    return Recipe(block("/etc/postfix/main.cf"), block("/etc/postfix/master.cf"))


def stock_master_cf(smtp_port: int) -> str:
    """Debian's master.cf, chroot off (a private instance has no chroot tree), the public
    smtpd on a loopback port."""
    out = []
    for line in STOCK_MASTER_CF.read_text().splitlines():
        f = line.split()
        if line[:1] not in ("#", " ", "\t", "") and len(f) >= 8:
            if f[0] == "smtp" and f[1] == "inet":
                f[0] = f"127.0.0.1:{smtp_port}"
            elif f[0] in ("submission", "smtps", "628") or f[1] == "inet":
                continue
            f[4] = "n"
            line = "  ".join(f)
        out.append(line)
    return "\n".join(out) + "\n"


# --- the final destination ------------------------------------------------------------------

@dataclass
class Delivered:
    mail_from: str
    rcpts: list[str]
    data: bytes

    @property
    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1]

    def header(self, name: str) -> str | None:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        m = re.search(rf"^{name}:[ \t]*(.*?)$", head, re.I | re.M)
        return m.group(1).strip() if m else None


@dataclass
class RecordingSink:
    """An SMTP server in its own thread that records every message Postfix delivers.
    `refuse[address] = "550 ..."` answers that RCPT instead of 250."""

    messages: list[Delivered] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    port: int = 0

    def start(self) -> RecordingSink:
        from aiosmtpd.smtp import SMTP

        sink = self
        ready = threading.Event()

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,  # noqa: N802
                                  address: str, options: list[str]) -> str:
                reply = sink.refuse.get(address.lower())
                if reply:
                    return reply
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

            async def handle_DATA(self, server: Any, session: Any,  # noqa: N802
                                  envelope: Any) -> str:
                sink.messages.append(Delivered(str(envelope.mail_from), list(envelope.rcpt_tos),
                                               envelope.original_content))
                return "250 2.0.0 delivered"

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            srv = loop.run_until_complete(loop.create_server(
                lambda: SMTP(Handler(), enable_SMTPUTF8=True, decode_data=False,
                             hostname="final.test", data_size_limit=None),
                "127.0.0.1", 0))
            self.port = srv.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            srv.close()
            loop.run_until_complete(srv.wait_closed())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def to(self, rcpt: str) -> list[Delivered]:
        return [m for m in list(self.messages) if rcpt in m.rcpts]

    def with_message_id(self, mid: str) -> list[Delivered]:
        return [m for m in list(self.messages) if m.header("Message-ID") == mid]

    def copies_per_rcpt(self, mid: str) -> Counter[str]:
        return Counter(r for m in self.with_message_id(mid) for r in m.rcpts)


# --- the relay, as a process ------------------------------------------------------------------

def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class RelayProcess:
    """`python -m relay serve` on a fixed port (Postfix's content_filter names it), stderr
    appended to relay.log beside its config."""

    def __init__(self, workdir: Path, port: int, upstream_port: int, *,
                 concurrency: int = 4, metrics_port: int | None = None) -> None:
        self.workdir, self.port = workdir, port
        self.config = workdir / "config.toml"
        self.log = workdir / "relay.log"
        self.write_config(upstream_port, concurrency, metrics_port)
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, upstream_port: int, concurrency: int = 4,
                     metrics_port: int | None = None) -> None:
        metrics = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
        self.config.write_text(
            f'[listen]\nhost = "127.0.0.1"\nport = {self.port}\nhostname = "relay.test"\n'
            f'[upstream]\nhost = "127.0.0.1"\nport = {upstream_port}\n'
            f"concurrency = {concurrency}\ntimeout = 10\n"
            '[policy]\nlists = ["all-staff@example.com", "announce@example.com"]\n'
            '[store]\npath = "var/relay.db"\n[signature]\nkey_file = "var/relay.key"\n'
            + metrics)

    def start(self, timeout: float = 30) -> RelayProcess:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--config", str(self.config)],
                cwd=self.workdir, env=child_env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while b"listening on" not in self.log.read_bytes()[offset:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("relay did not start:\n" + self.log_text()[-3000:])
            time.sleep(0.02)
        return self

    def terminate(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`relay ARGS --config` this relay's config, as the admin runs it beside it."""
        return subprocess.run([sys.executable, "-m", "relay", *args, "--config",
                               str(self.config)], capture_output=True, text=True, timeout=60,
                              cwd=self.workdir, env=child_env())

    def accepted(self) -> int:
        """Copies the relay's database holds as accepted (read-only, beside the writer)."""
        db = self.workdir / "var" / "relay.db"
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
                return c.execute("SELECT count(*) FROM copies WHERE state = 'accepted'"
                                 ).fetchone()[0]
        except sqlite3.Error:
            return 0


# --- Postfix ----------------------------------------------------------------------------------

class Postfix:
    """A private Postfix under `base`. `smtp_port`: its public smtpd; `filter_port`: where
    the recipe sends mail to the relay; `reinject_port`: the recipe's 10026 listener."""

    def __init__(self, sink_port: int, recipe: Recipe, *,
                 virtual: dict[str, list[str]] | None = None,
                 extra_main: dict[str, str] | None = None) -> None:
        # not under pytest's tmp_path: that is 0700 root, and Postfix's daemons run as the
        # postfix user, which must reach the queue and data folders
        base = Path(tempfile.mkdtemp(prefix="relay-postfix-"))
        base.chmod(0o755)
        self.base = base
        self.conf, self.queue, self.data = base / "conf", base / "queue", base / "data"
        self.maillog = base / "maillog"
        self.smtp_port, self.filter_port, self.reinject_port = (free_port(), free_port(),
                                                                free_port())
        for d in (self.conf, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, "postfix")
        (self.conf / "virtual").write_text("".join(
            f"{k} {', '.join(v)}\n" for k, v in (virtual or {}).items()))
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "mx.example.com",
            "mydomain": "example.com",
            "myorigin": "example.com",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "example.com, example.org",
            "virtual_alias_maps": f"texthash:{self.conf / 'virtual'}",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "smtp_dns_support_level": "disabled",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(base),
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "bounce_queue_lifetime": "1d",
            "smtpd_banner": "$myhostname ESMTP",
            **(extra_main or {}),
        }
        recipe_main = self._ports(recipe.main_cf)
        (self.conf / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in main.items()) + "\n# README recipe\n"
            + recipe_main)
        (self.conf / "master.cf").write_text(
            stock_master_cf(self.smtp_port) + "\n# README recipe\n"
            + self._ports(recipe.master_cf))

    def _ports(self, text: str) -> str:
        return (text.replace(":10025", f":{self.filter_port}")
                .replace(":10026", f":{self.reinject_port}"))

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.returncode}\n{p.stdout}{p.stderr}\n"
                               + self.log_text()[-3000:])
        return p

    def start(self) -> Postfix:
        self._run("postfix", "-c", str(self.conf), "start")
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), 1) as s:
                    if s.recv(100).startswith(b"220"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("postfix did not start\n" + self.log_text())
            time.sleep(0.05)

    def stop(self, keep: bool = False) -> None:
        self._run("postfix", "-c", str(self.conf), "stop", check=False)
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def set(self, **params: str) -> None:
        """postconf -e and reload (the test's own change, beside the recipe)."""
        self._run("postconf", "-c", str(self.conf), "-e",
                  *(f"{k}={v}" for k, v in params.items()))
        self._run("postfix", "-c", str(self.conf), "reload")
        time.sleep(0.5)

    def check(self) -> str:
        """What `postfix check` and `postconf` say about the configuration (stderr)."""
        a = self._run("postfix", "-c", str(self.conf), "check", check=False)
        b = self._run("postconf", "-c", str(self.conf), "-n", check=False)
        c = self._run("postconf", "-c", str(self.conf), "-M", check=False)
        return a.stderr + b.stderr + c.stderr

    def flush(self) -> None:
        self._run("postqueue", "-c", str(self.conf), "-f", check=False)

    def queue_ids(self) -> list[str]:
        p = self._run("postqueue", "-c", str(self.conf), "-j", check=False)
        return [json.loads(line)["queue_id"] for line in p.stdout.splitlines() if line.strip()]

    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def warnings(self) -> list[str]:
        return [ln for ln in self.log_text().splitlines() if "warning:" in ln]


def send(port: int, sender: str, rcpts: list[str], data: bytes) -> None:
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.example.com")
        c.sendmail(sender, rcpts, data)


def wait_for(cond: Any, timeout: float, what: str, *, flush: Postfix | None = None,
             every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    next_flush = time.monotonic() + 2
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if flush is not None and time.monotonic() > next_flush:
            flush.flush()
            next_flush = time.monotonic() + 2
        time.sleep(every)
