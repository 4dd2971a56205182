#!/usr/bin/env python3
"""Speed of the relay against the wire and against the simplest fan-out, side by side.

    flock /tmp/bench.lock python bench/speed.py            # full run
    flock /tmp/bench.lock python bench/speed.py --quick    # a short run (fewer rounds/recipients)

In one process tree and one run, into the same Postfix smtp-sink:
  A  smtp-source -> smtp-sink (Postfix's tools): the wire;
  B  a naive fan-out (this file, `naive` subcommand, its own process): aiosmtpd in, 8 pooled
     aiosmtplib connections out, one transaction per recipient of all-staff mail, no marks, no
     log; other mail passed through in one transaction;
  C  `python -m relay serve` with a temp config (fresh key and database, upstream = the sink).
Parts: all-staff fan-out of a 30 KB and a 100 KB text+HTML message (GPL-3 prose) to 2,000
recipients in one SMTP transaction, B and C alternating over rounds (A: smtp-source sends the
same message once per recipient); ordinary mail (smtp-source, 8 and 50 sessions, 20 KB, one
recipient) direct, through B and through C; a 10,000-recipient fan-out through B and C with
the relay's peak RSS and the latency of ordinary mail sent meanwhile; decode times at 10,000
recipients and with 100 logged messages of 10,000 recipients each (1,000,000 logged copies,
built in process with relay.store.Store, not over SMTP). Prints one Markdown table with the
ratios C/B and C/A and saves it to bench/out/speed.md.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import glob
import html
import os
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SENDER = "ceo@example.com"
LICENSES = Path("/usr/share/common-licenses")
DEBREF = Path("/usr/share/debian-reference")


# --- text and messages --------------------------------------------------------------------------

def license_paragraphs(name: str = "GPL-3") -> list[str]:
    text = (LICENSES / name).read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 20]


class _Paras(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paras: list[str] = []
        self.cur: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "p":
            self.cur = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self.cur is not None:
            self.paras.append(" ".join("".join(self.cur).split()))
            self.cur = None

    def handle_data(self, data: str) -> None:
        if self.cur is not None:
            self.cur.append(data)


def other_paragraphs() -> list[str]:
    """Prose other than GPL-3 for the other messages of the big log: the English Debian
    Reference when installed, else the other licenses."""
    out: list[str] = []
    for f in sorted(glob.glob(str(DEBREF / "ch*.en.html"))):
        p = _Paras()
        p.feed(Path(f).read_text(encoding="utf-8"))
        out += [t for t in p.paras if len(t.split()) > 25]
    if not out:
        for name in ("GFDL-1.3", "Apache-2.0", "MPL-2.0", "Artistic", "CC0-1.0"):
            if (LICENSES / name).exists():
                out += license_paragraphs(name)
    return list(dict.fromkeys(out))


def build(paras: list[str], tag: str) -> bytes:
    m = EmailMessage()
    m["From"] = SENDER
    m["To"] = "all-staff@example.com"
    m["Subject"] = f"Announcement {tag}"
    m["Message-ID"] = f"<{tag}@example.com>"
    m["Date"] = "Mon, 24 Nov 2025 10:00:00 +0000"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras), cte="quoted-printable")
    m.add_alternative("<html><body>\n" + "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
                      + "</body></html>\n", subtype="html", cte="quoted-printable")
    m.set_boundary(f"=_bench_{tag}")  # the same bytes in every run
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def text_html_message(size: int, tag: str, paras: list[str] | None = None) -> bytes:
    """A text/plain + text/html all-staff message of about `size` bytes (at least), made of
    whole paragraphs of real prose (GPL-3 by default, repeated if need be)."""
    pool = paras or license_paragraphs()
    use: list[str] = []
    i = 0
    while True:
        use.append(pool[i % len(pool)])
        i += 1
        raw = build(use, tag)
        if len(raw) >= size or i > 10 * len(pool):
            return raw


def plain_text(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = msg.get_body(("plain",))
    return part.get_content() if part is not None else ""


def leak_excerpt(copy: bytes, n: int, where: float) -> str:
    """n consecutive words of a copy's plain text, starting at the word at `where` (0..1), with
    the copy's whitespace as it is (a faithful paste)."""
    text = plain_text(copy)
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    i = min(int(where * len(spans)), len(spans) - n)
    return text[spans[i][0]:spans[i + n - 1][1]]


def log_message(path: Path, prepared, sender: str, recipients: list[str], store=None):
    """Log a prepared message and its copies as delivered, in process (what the relay's fan-out
    leaves in its log)."""
    from relay.store import Store

    store = store or Store(path)
    store.record_message(**prepared.log_entry(sender))
    store.add_copies(prepared.identity, recipients)
    store.set_copy_states(prepared.identity, [(r, "delivered", "250 ok") for r in recipients])
    return store


# --- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process {proc.args} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


def tool(name: str) -> str:
    exe = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(exe).exists():
        raise SystemExit(f"{name}: not found (install postfix)")
    return exe


def start_sink(port: int) -> subprocess.Popen:
    args = [tool("smtp-sink")]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    p = subprocess.Popen(args + [f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p


def start_naive(port: int, upstream: int, concurrency: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, __file__, "naive", "--port", str(port),
                          "--upstream", str(upstream), "--concurrency", str(concurrency)],
                         cwd=ROOT)
    wait_port(port, p)
    return p


def relay_config(tmp: Path, port: int, upstream: int, concurrency: int) -> Path:
    """The relay's config for these benchmarks (fresh key and database in `tmp`, retention
    off), written to tmp/config.toml."""
    cfg = tmp / "config.toml"
    cfg.write_text(f"""
[listen]
port = {port}
max_recipients = 10000
timeout = 600
[upstream]
port = {upstream}
concurrency = {concurrency}
fanout_budget = 280
[policy]
lists = ["all-staff@example.com"]
min_recipients = 20
[store]
path = "relay.db"
keep_days = 0
[signature]
key_file = "relay.key"
""")
    return cfg


def start_relay(tmp: Path, port: int, upstream: int, concurrency: int) -> subprocess.Popen:
    cfg = relay_config(tmp, port, upstream, concurrency)
    log = open(tmp / "relay.log", "ab")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--config", str(cfg)],
                         cwd=ROOT, stderr=log, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wait_port(port, p)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def peak_rss_mib(pid: int) -> tuple[float, list[float]]:
    """VmHWM of a process and of each of its child processes (the analysis workers, which make
    the copies), in MiB: (the process, [each child])."""
    pids = []
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (t / "children").read_text().split()]
    except OSError:
        pass

    def hwm(p: int) -> float:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    return hwm(pid), [hwm(p) for p in dict.fromkeys(pids)]


# --- B: the naive fan-out ----------------------------------------------------------------------

def naive_main(args: argparse.Namespace) -> None:
    """The simplest fan-out anyone could write: aiosmtpd in, a pool of aiosmtplib connections
    out, one transaction per recipient of all-staff mail, nothing else (no marks, no log)."""
    import aiosmtplib
    from aiosmtpd.controller import Controller

    class Pool:
        def __init__(self) -> None:
            self.q: asyncio.Queue | None = None

        async def get(self) -> aiosmtplib.SMTP:
            if self.q is None:
                self.q = asyncio.Queue()
                for _ in range(args.concurrency):
                    self.q.put_nowait(None)
            c = await self.q.get()
            if c is None or not c.is_connected:
                c = aiosmtplib.SMTP(hostname="127.0.0.1", port=args.upstream, timeout=60)
                await c.connect()
            return c

        def put(self, c: aiosmtplib.SMTP | None) -> None:
            assert self.q is not None
            self.q.put_nowait(c)

        async def send(self, sender: str, rcpts: list[str], data: bytes) -> None:
            c = await self.get()
            try:
                await c.sendmail(sender, rcpts, data)
            except Exception:
                c = None
                raise
            finally:
                self.put(c)

    pool = Pool()

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            rcpts = list(envelope.rcpt_tos)
            data = envelope.original_content or envelope.content
            try:
                if len(rcpts) >= 20 or "all-staff@example.com" in data[:4000].decode(
                        "latin-1").lower():
                    it = iter(rcpts)

                    async def worker() -> None:
                        for r in it:
                            await pool.send(envelope.mail_from, [r], data)

                    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                else:
                    await pool.send(envelope.mail_from, rcpts, data)
            except Exception as e:
                return f"451 4.3.0 {e}"
            return "250 OK"

    ctl = Controller(Handler(), hostname="127.0.0.1", port=args.port, decode_data=False,
                     data_size_limit=0, timeout=600, server_hostname="naive")
    ctl.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    ctl.stop()


# --- measurements ---------------------------------------------------------------------------------

RETRIES: list[str] = []  # 4xx answers met (the client retried the same bytes at once)


def send(port: int, rcpts: list[str], raw: bytes) -> float:
    """Seconds from MAIL FROM to the 250 of DATA for one transaction to all `rcpts`; a 4xx (a
    fan-out budget used up) is retried at once with the same bytes, as an MTA would later, and
    the time counts until the last 250."""
    t0 = time.perf_counter()
    for _ in range(10):
        with smtplib.SMTP("127.0.0.1", port, timeout=900) as c:
            try:
                c.sendmail(SENDER, rcpts, raw)
                return time.perf_counter() - t0
            except smtplib.SMTPDataError as e:
                if not 400 <= e.smtp_code < 500:
                    raise
                RETRIES.append(f"{e.smtp_code} {e.smtp_error[:60]!r}")
    raise SystemExit(f"port {port}: still 4xx after 10 attempts: {RETRIES[-1]}")


def smtp_source(port: int, messages: int, sessions: int, *, size: int = 0,
                file: Path | None = None) -> float:
    """Seconds for smtp-source to send `messages` one-recipient messages over `sessions` reused
    sessions."""
    args = [tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-d", "-r", "1",
            "-f", SENDER, "-t", "user@example.com", "-M", "bench.example.com"]
    args += ["-F", str(file)] if file else ["-l", str(size)]
    t0 = time.perf_counter()
    subprocess.run(args + [f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL,
                   timeout=900)
    return time.perf_counter() - t0


def ordinary(size: int) -> bytes:
    body = " ".join(license_paragraphs("GPL-3"))[:size]
    m = EmailMessage()
    m["From"] = SENDER
    m["To"] = "someone@example.com"
    m["Subject"] = "ordinary"
    m.set_content(textwrap.fill(body, 72))
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Prober(threading.Thread):
    """Ordinary mail (one recipient, ~20 KB) sent every `every` seconds on a fresh connection;
    the time each takes from connect to the 250 of DATA."""

    def __init__(self, port: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.done = threading.Event()
        self.times: list[float] = []
        self.raw = ordinary(20_000)

    def run(self) -> None:
        while not self.done.is_set():
            t0 = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", self.port, timeout=600) as c:
                c.sendmail(SENDER, ["someone@example.com"], self.raw)
            self.times.append(time.perf_counter() - t0)
            self.done.wait(self.every)

    def stop(self) -> list[float]:
        self.done.set()
        self.join(700)
        return self.times


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt(x: float, unit: str = "") -> str:
    if x != x:
        return "n/a"
    s = f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}" if abs(x) >= 10 else f"{x:.2f}"
    return s + unit


def ratio(c: float, ref: float) -> str:
    return "n/a" if not ref or c != c or ref != ref else f"{c / ref:.2f}x"


def decode_times(tmp: Path, recipients: int, messages: int, repeat: int,
                 log: callable) -> dict:
    """`relay decode` (the CLI, wall clock) and relay.decoding.decode (in process) of a
    faithful 60-word excerpt, the message logged to `recipients`; then with `messages` such
    messages logged (the others of other prose)."""
    from relay import decoding, fingerprint
    from relay import keys as keys_mod
    from relay.scheme import SCHEME
    from relay.tokens import excerpt_words

    d = tmp / "decode"
    d.mkdir()
    ring = keys_mod.load(d / "relay.key", create=True)
    key_id, key = ring.current
    (d / "config.toml").write_text('[store]\npath = "relay.db"\n[signature]\n'
                                   'key_file = "relay.key"\n')
    rcpts = [f"user{i:05d}@example.com" for i in range(recipients)]
    raw = text_html_message(30_000, "decode-target")
    p = fingerprint.prepare(raw, SENDER, key_id, key, SCHEME.with_rate(1 / 6))
    store = log_message(d / "relay.db", p, SENDER, rcpts)
    leaker = rcpts[recipients // 3]
    leak = leak_excerpt(p.copy_for(leaker), 60, 0.4)
    (d / "leak.txt").write_text(leak)
    out: dict = {}

    def measure(tag: str) -> None:
        cli, inproc = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--config",
                                str(d / "config.toml"), str(d / "leak.txt")], cwd=ROOT,
                               capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
            cli.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"relay decode failed: {r.stderr.strip()}")
            t0 = time.perf_counter()
            rep = decoding.decode([excerpt_words(leak)], store, ring)
            inproc.append(time.perf_counter() - t0)
        top = rep.candidates[0].recipient if rep.candidates else None
        out[f"{tag} cli"] = med(cli)
        out[f"{tag} inproc"] = med(inproc)
        out[f"{tag} verdict"] = f"{rep.verdict}, leaker ranked first: " \
                                f"{'yes' if top == leaker else 'NO'}"
        log(f"decode {tag}: CLI {med(cli):.2f} s, in process {med(inproc):.2f} s, "
            f"{rep.verdict}, top is the leaker: {top == leaker}, "
            f"{rep.excerpts[0]['bits_observed']} bits read")

    measure("one")
    if messages > 1:
        pool = other_paragraphs()
        t0 = time.perf_counter()
        for i in range(messages - 1):
            k = 8 + i % 5
            paras = [pool[(i * 7 + j) % len(pool)] for j in range(k)]
            q = fingerprint.prepare(build(paras, f"other-{i}"), SENDER, key_id, key,
                                    SCHEME.with_rate(1 / 6))
            log_message(d / "relay.db", q, SENDER, rcpts, store)
        log(f"logged {messages - 1} more messages x {recipients} recipients in "
            f"{time.perf_counter() - t0:.0f} s")
        measure("many")
    store.close()
    return out


# --- the run --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description="speed of the relay against the wire and a naive "
                                             "fan-out (see the module docstring)")
    sub = ap.add_subparsers(dest="cmd")
    nv = sub.add_parser("naive", help="run the naive fan-out (B) alone")
    nv.add_argument("--port", type=int, required=True)
    nv.add_argument("--upstream", type=int, required=True)
    nv.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--quick", action="store_true",
                    help="a short run: 1 round, 500 recipients, 2,000 for the big fan-out, "
                         "10 logged messages, 1 decode each")
    ap.add_argument("--rounds", type=int, help="B/C rounds per message size (default 3)")
    ap.add_argument("--recipients", type=int, help="per all-staff message (default 2000)")
    ap.add_argument("--big", type=int, help="recipients of the big fan-out (default 10000)")
    ap.add_argument("--logged", type=int, help="messages in the big log (default 100)")
    ap.add_argument("--ordinary", type=int, help="messages per smtp-source run (default 1000)")
    ap.add_argument("--concurrency", type=int, default=8, help="upstream connections (B and C)")
    ap.add_argument("--sizes", default="30000,100000", help="all-staff message sizes, bytes")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: "
                                               "fanout,ordinary,big,decode")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "speed.md")
    args = ap.parse_args()
    if args.cmd == "naive":
        naive_main(args)
        return 0
    q = args.quick
    rounds = args.rounds or (1 if q else 3)
    nrcpt = args.recipients or (500 if q else 2000)
    big = args.big or (2000 if q else 10_000)
    logged = args.logged or (10 if q else 100)
    nord = args.ordinary or (500 if q else 1000)
    repeat = 1 if q else 3
    skip = set(filter(None, args.skip.split(",")))
    sizes = [int(s) for s in args.sizes.split(",")]

    lines: list[str] = []

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    rows: list[tuple[str, str, str, str, str, str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="relay-speed-"))
    sink_port, naive_port, relay_port = free_port(), free_port(), free_port()
    sink = start_sink(sink_port)
    naive = relay = None
    try:
        naive = start_naive(naive_port, sink_port, args.concurrency)
        relay = start_relay(tmp, relay_port, sink_port, args.concurrency)
        rcpts = [f"user{i:05d}@example.com" for i in range(max(nrcpt, big))]
        serial = 0

        def fresh(size: int) -> bytes:
            nonlocal serial
            serial += 1
            return text_html_message(size, f"speed-{serial}-{size}")

        if "fanout" not in skip:
            for size in sizes:
                a_rate, b_rate, c_rate = [], [], []
                f = tmp / f"msg-{size}.eml"
                raw0 = fresh(size)
                f.write_bytes(raw0.replace(b"\r\n", b"\n"))
                for i in range(rounds):
                    a_rate.append(nrcpt / smtp_source(sink_port, nrcpt, args.concurrency,
                                                      file=f))
                    order = [("B", naive_port, b_rate), ("C", relay_port, c_rate)]
                    for name, port, acc in order if i % 2 == 0 else order[::-1]:
                        dt = send(port, rcpts[:nrcpt], fresh(size))
                        acc.append(nrcpt / dt)
                        log(f"fan-out {len(raw0)} B, round {i + 1}, {name}: {nrcpt / dt:.0f} "
                            f"copies/s")
                    log(f"fan-out {len(raw0)} B, round {i + 1}, A: {a_rate[-1]:.0f} msg/s")
                a, b, c = med(a_rate), med(b_rate), med(c_rate)
                rows.append((f"all-staff fan-out, {len(raw0) / 1000:.0f} KB text+HTML, "
                             f"{nrcpt:,} recipients (copies/s, median of {rounds})",
                             fmt(a), fmt(b), fmt(c), ratio(c, b), ratio(c, a),
                             f"C per round: {', '.join(f'{x:.0f}' for x in c_rate)}"))

        if "ordinary" not in skip:
            for sessions in (8, 50):
                res = {}
                for name, port in (("A", sink_port), ("B", naive_port), ("C", relay_port)):
                    res[name] = med([nord / smtp_source(port, nord, sessions, size=20_000)
                                     for _ in range(rounds)])
                    log(f"ordinary, {sessions} sessions, {name}: {res[name]:.0f} msg/s")
                rows.append((f"ordinary mail, 20 KB, 1 recipient, {sessions} sessions "
                             f"(msg/s, smtp-source, median of {rounds})",
                             fmt(res["A"]), fmt(res["B"]), fmt(res["C"]),
                             ratio(res["C"], res["B"]), ratio(res["C"], res["A"]), ""))

        if "big" not in skip:
            idle = Prober(relay_port)
            idle.start()
            time.sleep(3)
            idle_times = idle.stop()
            got = {}
            for name, port in (("B", naive_port), ("C", relay_port)):
                pr = Prober(port)
                pr.start()
                dt = send(port, rcpts[:big], fresh(30_000))
                times = pr.stop()
                got[name] = (big / dt, med(times), max(times) if times else float("nan"),
                             len(times))
                log(f"big fan-out {big}, {name}: {big / dt:.0f} copies/s, ordinary mail "
                    f"meanwhile median {med(times) * 1e3:.0f} ms max {max(times) * 1e3:.0f} ms "
                    f"({len(times)} sent)")
            rss, workers = peak_rss_mib(relay.pid)
            f = tmp / "msg-big.eml"
            raw_big = fresh(30_000)
            f.write_bytes(raw_big.replace(b"\r\n", b"\n"))
            a = big / smtp_source(sink_port, big, args.concurrency, file=f)
            (cb, cm, cx, cn), (bb, bm, bx, bn) = got["C"], got["B"]
            rows.append((f"all-staff fan-out, {len(raw_big) / 1000:.0f} KB text+HTML, {big:,} "
                         "recipients (copies/s, one run)",
                         fmt(a), fmt(bb), fmt(cb), ratio(cb, bb), ratio(cb, a),
                         f"peak RSS (VmHWM): relay process {rss:.0f} MiB, its "
                         f"{len(workers)} worker processes "
                         f"{', '.join(f'{w:.0f}' for w in workers)} MiB"))
            rows.append((f"ordinary mail during that fan-out: median latency (ms; {cn} sent "
                         f"through C, {bn} through B)", "", fmt(bm * 1e3), fmt(cm * 1e3),
                         ratio(cm, bm), "",
                         f"relay idle: median {med(idle_times) * 1e3:.0f} ms"))
            rows.append(("ordinary mail during that fan-out: max latency (ms)", "",
                         fmt(bx * 1e3), fmt(cx * 1e3), ratio(cx, bx), "", ""))

        if "decode" not in skip:
            stop(relay)
            dt = decode_times(tmp, big, logged, repeat, log)
            rows.append((f"`relay decode` of a 60-word excerpt, {big:,} recipients (s, CLI)",
                         "", "", fmt(dt["one cli"]), "", "",
                         f"in process {dt['one inproc']:.2f} s; {dt['one verdict']}"))
            if logged > 1:
                rows.append((f"the same, {logged} messages x {big:,} recipients logged "
                             f"({logged * big:,} copies) (s, CLI)", "", "",
                             fmt(dt["many cli"]), "", "",
                             f"in process {dt['many inproc']:.2f} s; {dt['many verdict']}"))
    finally:
        for p in (relay, naive):
            if p is not None:
                stop(p)
        stop(sink)
        shutil.rmtree(tmp, ignore_errors=True)

    head = ("| measure | A smtp-source -> smtp-sink | B naive fan-out | C relay | C/B | C/A "
            "| notes |")
    lines += [f"`python bench/speed.py{' --quick' if q else ''}` "
              f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{os.cpu_count()} cores, loopback, Postfix smtp-sink upstream, "
              f"{args.concurrency} upstream connections for B and C)", "", head,
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if RETRIES:
        lines += ["", f"4xx answers retried: {len(RETRIES)} ({'; '.join(RETRIES[:3])})"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this tree's relay, also over an installed one
    sys.exit(main())
