#!/usr/bin/env python3
"""Hostile sessions and images: what one attacker does to `relay serve` and `relay decode`,
and what another client sees meanwhile.

    flock /tmp/bench.lock python3 bench/hostile_sessions.py          # every attack, one table
    flock /tmp/bench.lock python3 bench/hostile_sessions.py auth idle  # some of them

Each attack starts its own `relay serve` subprocess on a loopback port from the OS (open files
limited to 1,024, systemd's default), with an aiosmtpd sink as its upstream in a thread of this
process. Attackers connect from 127.0.0.2-127.0.0.4; the other client is 127.0.0.1 and
measures, while the attack runs, the time from connect to the greeting and the time of one
ordinary message (connect, EHLO, MAIL, RCPT, DATA, 250, QUIT), or NOOP round trips on an open
session where the relay requires AUTH. Peak RSS is the relay's VmHWM (a fresh relay per
attack), or for decode the peak of the decode process and, separately, of its tesseract child.

`ATTACKS` is a list of functions returning rows (attack, outcome, seconds, peak RSS MiB, other
client's latency) so that another bench can merge them into one table.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import bombs  # noqa: E402  (tests/bombs.py: the hostile images)

MP = multiprocessing.get_context("fork")

ATTACKER, ATTACKER2, OUTSIDER, CLIENT = "127.0.0.2", "127.0.0.4", "127.0.0.3", "127.0.0.1"
OPEN_FILES = 1024  # systemd's default soft limit for a service


@dataclass
class Row:
    attack: str
    outcome: str
    seconds: float
    peak_rss_mib: float
    other_client: str

    def cells(self) -> list[str]:
        return [self.attack, self.outcome, f"{self.seconds:.1f}", f"{self.peak_rss_mib:.0f}",
                self.other_client]


# --- the relay under attack -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Accept:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 2.0.0 queued"


def _sink_main(port: int) -> None:
    Controller(_Accept(), hostname="127.0.0.1", port=port, ready_timeout=10).start()
    threading.Event().wait()


class Sink:
    """The relay's upstream: an aiosmtpd sink in its own process (so that the attackers in
    this process never slow it down)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = MP.Process(target=_sink_main, args=(self.port,), daemon=True)
        self.proc.start()
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join()


def make_cert(folder: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    c, k = folder / "cert.pem", folder / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


class Relay:
    """`relay serve` as a subprocess; stderr (its log) goes to a file."""

    def __init__(self, folder: Path, sink: Sink, listen: str = "", extra: str = "") -> None:
        self.port = free_port()
        self.folder = folder
        self.log = folder / "relay.log"
        cfg = folder / "config.toml"
        cfg.write_text(f"[listen]\nport = {self.port}\n{listen}\n[upstream]\nport = {sink.port}\n"
                       f'[store]\npath = "relay.db"\n[signature]\nkey_file = "relay.key"\n'
                       f"{extra}")

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(cfg)], cwd=folder,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=self.log.open("wb"),
            preexec_fn=limit)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("relay did not start")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def attack_log(self, since: int) -> tuple[int, int]:
        """(lines, bytes) the relay logged after offset `since`, leaving out the one line per
        ordinary message of the other client."""
        text = self.log.read_bytes()[since:].decode("utf-8", "replace")
        lines = [s for s in text.splitlines() if " from=<" not in s]
        return len(lines), sum(len(s.encode()) + 1 for s in lines)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- SMTP clients -----------------------------------------------------------------------------

class Conn:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def open(cls, port: int, source: str, timeout: float = 30) -> Conn:
        r, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout)
        return cls(r, w)

    async def reply(self, timeout: float = 30) -> str:
        lines = []
        while True:
            line = await asyncio.wait_for(self.r.readline(), timeout)
            if not line:
                raise ConnectionError("closed " + " | ".join(lines))
            lines.append(line.decode("utf-8", "replace").rstrip())
            if line[3:4] != b"-":
                return "\n".join(lines)

    async def cmd(self, line: str, timeout: float = 30) -> str:
        self.w.write(line.encode() + b"\r\n")
        await self.w.drain()
        return await self.reply(timeout)

    async def starttls(self) -> None:
        await self.reply()
        await self.cmd("EHLO attacker.bench")
        await self.cmd("STARTTLS")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        await self.w.start_tls(ctx)
        await self.cmd("EHLO attacker.bench")

    def close(self) -> None:
        self.w.close()


def plain(user: str, password: str) -> str:
    import base64

    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


MESSAGE = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: ordinary\r\n"
           b"Message-ID: <%d@bench>\r\n\r\nAn ordinary message during the attack.\r\n")


class Other:
    """The other client: repeatedly, greeting time and one ordinary message, until stopped."""

    def __init__(self, port: int, every: float = 0.25) -> None:
        self.port, self.every = port, every
        self.greet: list[float] = []
        self.mail: list[float] = []
        self.failures: list[str] = []
        self.n = 0

    async def once(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            c = await Conn.open(self.port, CLIENT, timeout=10)
            g = await c.reply(10)
            self.greet.append(loop.time() - t0)
            if not g.startswith("220"):
                self.failures.append(g[:40])
                c.close()
                return
            await c.cmd("EHLO client.bench", 10)
            await c.cmd("MAIL FROM:<a@example.com>", 10)
            await c.cmd("RCPT TO:<b@example.com>", 10)
            await c.cmd("DATA", 10)
            self.n += 1
            r = await c.cmd((MESSAGE % self.n).decode() + ".", 10)
            if not r.startswith("250"):
                self.failures.append(r[:40])
            await c.cmd("QUIT", 10)
            c.close()
            self.mail.append(loop.time() - t0)
        except (OSError, TimeoutError, ConnectionError) as e:
            self.failures.append(type(e).__name__)

    async def run(self, stop: Any) -> None:
        while not stop.is_set():
            await self.once()
            await asyncio.sleep(self.every)

    def summary(self) -> str:
        if not self.mail and not self.greet:
            return f"no answer ({', '.join(sorted(set(self.failures)))})"
        s = (f"greeting max {1000 * max(self.greet):.0f} ms, mail median "
             f"{1000 * statistics.median(self.mail):.0f} ms / max {1000 * max(self.mail):.0f} ms"
             f" ({len(self.mail)} messages)") if self.mail else "no mail went through"
        if self.failures:
            s += f"; {len(self.failures)} failed ({', '.join(sorted(set(self.failures)))})"
        return s


def _forked() -> None:
    asyncio.events._set_running_loop(None)  # forked from inside this process's running loop


def _other_main(port: int, stop: Any, out: Any) -> None:
    _forked()
    other = Other(port)
    asyncio.run(other.run(stop))
    out.put(other.summary())


def _noop_main(port: int, stop: Any, out: Any) -> None:
    """NOOP every 50 ms on one open session, and a new connection's greeting every 0.5 s."""
    _forked()

    async def run() -> str:
        loop = asyncio.get_running_loop()
        noop: list[float] = []
        greet: list[float] = []
        c = await Conn.open(port, CLIENT)
        await c.reply()
        await c.cmd("EHLO other.bench")
        while not stop.is_set():
            t = loop.time()
            await c.cmd("NOOP")
            noop.append(loop.time() - t)
            if len(noop) % 10 == 0:
                t = loop.time()
                g = await Conn.open(port, CLIENT)
                await g.reply()
                greet.append(loop.time() - t)
                g.close()
            await asyncio.sleep(0.05)
        c.close()
        return (f"NOOP median {1000 * statistics.median(noop):.1f} ms / max "
                f"{1000 * max(noop):.0f} ms ({len(noop)}); greeting max "
                f"{1000 * max(greet):.0f} ms")
    out.put(asyncio.run(run()))


class OtherProcess:
    """The other client in its own process (its own event loop and interpreter), so that what
    it measures is the relay, not this process busy with the attackers."""

    def __init__(self, port: int, target: Callable[[int, Any, Any], None] = _other_main
                 ) -> None:
        self.stop_event = MP.Event()
        self.out = MP.Queue()
        self.proc = MP.Process(target=target, args=(port, self.stop_event, self.out),
                               daemon=True)
        self.proc.start()

    def finish(self) -> str:
        self.stop_event.set()
        summary = self.out.get(timeout=120)
        self.proc.join()
        return str(summary)

def with_relay(listen: str = "", extra: str = "", auth: bool = False
               ) -> Callable[[Callable[..., Row]], Callable[[], Row]]:
    """Run an attack against a fresh relay and sink in a temporary folder."""
    def wrap(attack: Callable[..., Row]) -> Callable[[], Row]:
        def run() -> Row:
            with tempfile.TemporaryDirectory(prefix="relay-hostile-") as tmp:
                folder = Path(tmp)
                lst = listen
                if auth:
                    from relay.passwords import hash_password

                    cert, key = make_cert(folder)
                    (folder / "users").write_text(f"alice:{hash_password('correct horse')}\n")
                    lst += (f'\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
                            f'auth_file = "{folder / "users"}"\n')
                sink = Sink()
                relay = Relay(folder, sink, lst, extra)
                try:
                    return asyncio.run(attack(relay, sink))
                finally:
                    relay.stop()
                    sink.stop()
        run.__name__ = attack.__name__
        run.__doc__ = attack.__doc__
        return run
    return wrap


# --- the attacks ------------------------------------------------------------------------------

AUTH_SECONDS = 15.0


@with_relay(auth=True)
async def auth_brute_force(relay: Relay, sink: Sink) -> Row:
    """Two attackers (two addresses) guess passwords as fast as the relay answers, reconnecting
    when closed; a third client sends NOOP every 50 ms on an open session."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    answers: dict[str, int] = {}

    async def attacker(source: str) -> None:
        n = 0
        while not stop.is_set():
            try:
                c = await Conn.open(relay.port, source)
                await c.starttls()
                while not stop.is_set():
                    n += 1
                    r = await c.cmd(plain("alice", f"guess{n}"))
                    answers[r[:3]] = answers.get(r[:3], 0) + 1
                    if not r.startswith("535"):
                        break
                c.close()
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError):
                answers["closed"] = answers.get("closed", 0) + 1

    other = OtherProcess(relay.port, _noop_main)
    await asyncio.sleep(1)
    t0 = loop.time()
    tasks = [loop.create_task(attacker(ATTACKER)), loop.create_task(attacker(ATTACKER2))]
    await asyncio.sleep(AUTH_SECONDS)
    stop.set()
    await asyncio.gather(*tasks)
    seen = other.finish()
    checked = answers.get("535", 0) + answers.get("421", 0)
    outcome = (f"{checked} guesses answered in {AUTH_SECONDS:.0f} s: "
               f"{answers.get('535', 0)} x 535, {answers.get('421', 0)} x 421 (session closed "
               f"or address backing off), {answers.get('454', 0)} x 454")
    return Row("AUTH brute force, 2 sessions in parallel", outcome, loop.time() - t0,
               relay.peak_rss_mib(), seen)


@with_relay(auth=True)
async def auth_user_enumeration(relay: Relay, sink: Sink) -> Row:
    """Refusal time of a wrong password for the existing user and for an unknown one, 10 each,
    alternating, each from its own address (no backoff in the way)."""
    loop = asyncio.get_running_loop()
    times: dict[str, list[float]] = {"alice": [], "nobody": []}
    t0 = loop.time()
    for i in range(10):
        for user in times:
            c = await Conn.open(relay.port, f"127.0.{10 + i}.{1 + len(user)}")
            await c.starttls()
            t = loop.time()
            r = await c.cmd(plain(user, "wrong"))
            times[user].append(loop.time() - t)
            assert r.startswith("535"), r
            c.close()
    known, unknown = (statistics.median(times[u]) for u in ("alice", "nobody"))
    return Row("AUTH: known vs unknown user", f"known user refused in {1000 * known:.0f} ms, "
               f"unknown in {1000 * unknown:.0f} ms (median of 10; ratio "
               f"{unknown / known:.2f})", loop.time() - t0, relay.peak_rss_mib(), "-")


IDLE = 1100


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


async def _idle_attack(relay: Relay, sink: Sink, label: str) -> Row:
    _raise_open_files()
    loop = asyncio.get_running_loop()
    other = OtherProcess(relay.port)
    await asyncio.sleep(1)  # the other client's first messages: before the attack
    t0 = loop.time()
    log0 = relay.log_size()
    held: list[Conn] = []
    refused = 0
    greeted = 0

    async def one() -> None:
        nonlocal refused, greeted
        try:
            c = await Conn.open(relay.port, ATTACKER, timeout=15)
        except (OSError, TimeoutError):
            refused += 1
            return
        held.append(c)
        try:
            g = await c.reply(15)
            greeted += g.startswith("220")
            refused += not g.startswith("220")
        except (ConnectionError, TimeoutError):
            refused += 1

    for i in range(0, IDLE, 50):
        await asyncio.gather(*(one() for _ in range(min(50, IDLE - i))))
    await asyncio.sleep(10)  # everything held open while the other client keeps mailing
    seen = other.finish()
    for c in held:
        c.close()
    n, grown = relay.attack_log(log0)
    return Row(label, f"{greeted} greeted and held idle, {refused} refused (421 or no answer); "
               f"{n} log lines ({grown:,} bytes) about the attack", loop.time() - t0,
               relay.peak_rss_mib(), seen)


@with_relay()
async def idle_connections(relay: Relay, sink: Sink) -> Row:
    """1,100 idle connections from one allowed address (relay at 1,024 open files), held 10 s
    while the other client sends mail."""
    return await _idle_attack(relay, sink, f"{IDLE:,} idle connections from one client")


@with_relay(listen="max_connections = 5000\nmax_connections_per_client = 5000")
async def idle_connections_limits_off(relay: Relay, sink: Sink) -> Row:
    """The same with the connection limits set above the open-files limit: the accept loop
    runs out of file descriptors (EMFILE); the log must stay small."""
    return await _idle_attack(relay, sink, f"{IDLE:,} idle connections, limits set too high "
                                           "(EMFILE)")


REFUSED = 5000


@with_relay(listen='allow = ["127.0.0.1/32", "127.0.0.2/32"]')
async def refused_connects(relay: Relay, sink: Sink) -> Row:
    """5,000 connections from an address outside [listen] allow, 50 at a time."""
    loop = asyncio.get_running_loop()
    other = OtherProcess(relay.port)
    await asyncio.sleep(1)
    log0 = relay.log_size()
    t0 = loop.time()
    answers: dict[str, int] = {}

    async def one() -> None:
        try:
            c = await Conn.open(relay.port, OUTSIDER, timeout=15)
            g = await c.reply(15)
            answers[g[:3]] = answers.get(g[:3], 0) + 1
            c.close()
        except (OSError, TimeoutError, ConnectionError) as e:
            answers[type(e).__name__] = answers.get(type(e).__name__, 0) + 1

    for _ in range(0, REFUSED, 50):
        await asyncio.gather(*(one() for _k in range(50)))
    dt = loop.time() - t0
    await asyncio.sleep(1)
    seen = other.finish()
    n, grown = relay.attack_log(log0)
    return Row(f"{REFUSED:,} refused connects (outside allow)",
               f"{answers}; {n} log line(s) ({grown:,} bytes) about them", dt,
               relay.peak_rss_mib(), seen)


# --- decode on hostile images -----------------------------------------------------------------

def _hwm_mib(pid: int | str, needle: bytes) -> float | None:
    """VmHWM (peak RSS) of a live process whose command line holds `needle`, in MiB."""
    try:
        if needle not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None  # not yet exec'd: still a copy of this process
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _decode(folder: Path, name: str, data: bytes) -> tuple[int, str, float, float, float | None]:
    """(exit status, stderr, seconds, peak RSS MiB of decode, peak RSS MiB of its tesseract
    child when one ran). Peaks are VmHWM sampled every 5 ms while the processes live (a
    process's rusage would count this bench's own memory, copied at fork, too)."""
    f = folder / name
    f.write_bytes(data)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "relay", "decode", "--db",
                             str(folder / "relay.db"), "--config", str(folder / "c.toml"), str(f)],
                            cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    tess: float | None = None
    while proc.poll() is None:
        peak = max(peak, _hwm_mib(proc.pid, b"decode") or 0.0)
        try:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            kids = []
        for k in kids:
            hwm = _hwm_mib(k, b"tesseract")
            if hwm is not None:
                tess = max(tess or 0.0, hwm)
        time.sleep(0.005)
    seconds = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    return proc.returncode, err.strip(), seconds, peak, tess


def _decode_row(label: str, name: str, make: Callable[[], bytes]) -> Row:
    from relay import keys
    from relay.store import Store

    with tempfile.TemporaryDirectory(prefix="relay-decode-") as tmp:
        folder = Path(tmp)
        Store(folder / "relay.db").close()
        keys.load(folder / "relay.key", create=True)
        (folder / "c.toml").write_text('[signature]\nkey_file = "relay.key"\n'
                                       '[decode]\nocr_languages = "eng"\n')
        data = make()
        code, err, seconds, peak, tess = _decode(folder, name, data)
    outcome = f"{len(data) / 1e6:.1f} MB file: exit {code}, " + (f"'{err}'" if err else "read")
    return Row(label, outcome, seconds, peak,
               f"tesseract child: {'not started' if tess is None else f'{tess:.0f} MiB'}")


def decode_png_bomb() -> Row:
    """A 20,000 x 20,000 white PNG (400 megapixels) compressed to about 0.4 MB."""
    return _decode_row("decode: PNG bomb 20,000 x 20,000", "bomb.png",
                       lambda: bombs.png_bomb(20_000, 20_000))


def decode_big_jpeg() -> Row:
    """A real 12,000 x 12,000 JPEG (144 megapixels)."""
    return _decode_row("decode: JPEG 12,000 x 12,000", "big.jpg",
                       lambda: bombs.jpeg_white(12_000, 12_000))


def decode_screenshot() -> Row:
    """Reference: an ordinary 1,200 x 800 screenshot with text, read by tesseract."""
    def make() -> bytes:
        import io

        from PIL import Image, ImageDraw

        im = Image.new("L", (1200, 800), 255)
        d = ImageDraw.Draw(im)
        for y in range(20, 780, 24):
            d.text((20, y), "The quarterly review is scheduled for next Thursday in the main "
                            "hall, every team lead brings a summary.", fill=0)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        return buf.getvalue()
    return _decode_row("decode: ordinary screenshot 1,200 x 800 (reference)", "shot.png", make)


ATTACKS: list[Callable[[], Row]] = [
    auth_brute_force, auth_user_enumeration, idle_connections, idle_connections_limits_off,
    refused_connects, decode_png_bomb, decode_big_jpeg, decode_screenshot,
]
NAMES = {"auth": [auth_brute_force, auth_user_enumeration],
         "idle": [idle_connections, idle_connections_limits_off],
         "refused": [refused_connects],
         "decode": [decode_png_bomb, decode_big_jpeg, decode_screenshot]}


def table(rows: list[Row]) -> str:
    head = ["attack", "what the relay did", "seconds", "peak RSS MiB",
            "other client meanwhile"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", help=f"groups to run: {', '.join(NAMES)} (default: all)")
    args = ap.parse_args()
    for n in args.which:
        if n not in NAMES:
            ap.error(f"unknown group {n!r} (known: {', '.join(NAMES)})")
    attacks = [a for n in args.which for a in NAMES[n]] if args.which else ATTACKS
    rows = []
    for attack in attacks:
        print(f"# {attack.__name__}: {(attack.__doc__ or '').split(chr(10))[0]}", flush=True)
        rows.append(attack())
        print("  " + " | ".join(rows[-1].cells()), flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
