#!/usr/bin/env python3
"""Fan-out benchmark: one all-staff message (text + HTML + PDF attachment) to N recipients
through a real `relay serve` subprocess, into a loopback sink; then decode timing.

    python bench/fanout.py                      # 1,000 recipients, aiosmtpd sink, verify copies
    python bench/fanout.py -n 5000 --smtp-sink  # Postfix's smtp-sink as upstream (faster sink)

Prints copies/s (DATA sent -> 250 received), the relay's peak RSS, and decode time for a
120-word excerpt. With the aiosmtpd sink it also checks: N transactions, one recipient each,
pairwise distinct, identical to the original outside text-part whitespace.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import html
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prose() -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 30][3:13]


def message() -> bytes:
    paras = prose()
    m = EmailMessage()
    m["From"] = "ceo@example.com"
    m["To"] = "all-staff@example.com"
    m["Subject"] = "Benchmark announcement"
    m["Message-ID"] = "<bench@example.com>"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras), cte="quoted-printable")
    m.add_alternative("<html><body>" + "".join(f"<p>{html.escape(p)}</p>" for p in paras)
                      + "</body></html>", subtype="html", cte="quoted-printable")
    m.add_attachment(os.urandom(20000), maintype="application", subtype="pdf",
                     filename="plan.pdf")
    return m.as_bytes().replace(b"\n", b"\r\n")


class Sink:
    def __init__(self) -> None:
        self.copies: list[tuple[str, tuple[str, ...], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.copies.append((envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def squash(s: str) -> str:
    return re.sub(r"(?:&nbsp;|[ \u00a0])+", " ", s)


def leaves(raw: bytes) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [(p.get_content_type(), p.get_payload(decode=True) or b"") for p in msg.walk()
            if not p.is_multipart()]


def verify(orig: bytes, copies: list[tuple[str, tuple[str, ...], bytes]], n: int) -> str:
    rcpts = [r for _, rs, _ in copies for r in rs]
    assert len(copies) == n, f"{len(copies)} transactions for {n} recipients"
    assert all(len(rs) == 1 for _, rs, _ in copies), "a transaction with several recipients"
    assert len(set(rcpts)) == n, "a recipient got two copies"
    assert len({c for _, _, c in copies}) == n, "two copies are identical"
    ol = leaves(orig)
    for _, _, c in copies:
        cl = leaves(c)
        assert c.split(b"\r\n\r\n", 1)[0] == orig.split(b"\r\n\r\n", 1)[0], "headers changed"
        for (t, b), (_, ob) in zip(cl, ol, strict=True):
            if t.startswith("text/"):
                assert squash(b.decode()) == squash(ob.decode()), "text changed"
            else:
                assert b == ob, f"{t} changed"
    return "verified: N transactions, 1 recipient each, pairwise distinct, " \
           "identical outside text whitespace"


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--recipients", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--smtp-sink", action="store_true", help="use Postfix's smtp-sink upstream")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    up = free_port()
    listen = free_port()
    sink = Sink()
    controller = None
    sinkproc = None
    if args.smtp_sink:
        exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        sinkproc = subprocess.Popen([exe, "-u", "nobody", "-c", f"127.0.0.1:{up}", "1000"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        controller = Controller(sink, hostname="127.0.0.1", port=up)
        controller.start()
    (tmp / "config.toml").write_text(f"""
[listen]
port = {listen}
max_recipients = {max(args.recipients, 100)}
[upstream]
port = {up}
concurrency = {args.concurrency}
[store]
path = "relay.db"
[signature]
key_file = "relay.key"
""")
    relay = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--config",
                              str(tmp / "config.toml")], cwd=ROOT, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", listen), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    raw = message()
    rcpts = [f"user{i:05d}@example.com" for i in range(args.recipients)]
    try:
        with smtplib.SMTP("127.0.0.1", listen, timeout=600) as c:
            t0 = time.perf_counter()
            c.sendmail("ceo@example.com", rcpts, raw)
            dt = time.perf_counter() - t0
        rss = peak_rss_kib(relay.pid)
        print(f"message {len(raw)} bytes, {args.recipients} recipients, concurrency "
              f"{args.concurrency}, upstream {'smtp-sink' if args.smtp_sink else 'aiosmtpd'}")
        print(f"fan-out: {dt:.2f} s, {args.recipients / dt:.0f} copies/s; relay peak RSS "
              f"{rss / 1024:.0f} MiB")
        if controller is not None:
            print(verify(raw, sink.copies, args.recipients))
            leaker = sink.copies[len(sink.copies) // 2]
            body = next(b for t, b in leaves(leaker[2]) if t == "text/plain").decode()
            words = body.split(" ")
            (tmp / "leak.txt").write_text(" ".join(words[200:320]))
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--config",
                                  str(tmp / "config.toml"), str(tmp / "leak.txt")], cwd=ROOT,
                                 capture_output=True, text=True, check=True)
            dd = time.perf_counter() - t0
            verdict = re.search(r'"verdict": "(\w+)"', out.stdout).group(1)
            top = re.search(r'"recipient": "([^"]+)"', out.stdout).group(1)
            print(f"decode (CLI, 120 words, {args.recipients} recipients): {dd:.2f} s, "
                  f"{verdict}, top = {top}, leaker = {leaker[1][0]}")
    finally:
        relay.terminate()
        relay.wait(30)
        if controller is not None:
            controller.stop()
        if sinkproc is not None:
            sinkproc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    sys.exit(main())
