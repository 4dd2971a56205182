#!/usr/bin/env python3
"""Bounded soak: M all-staff messages of R recipients each, from C concurrent clients, through a
real `relay serve` subprocess to a loopback sink.

    python bench/soak.py                          # 50 x 1,000 from 10 clients, verify mode
    python bench/soak.py --mode smtp-sink         # Postfix's smtp-sink upstream (counts only)
    python bench/soak.py --mode both -m 20 -r 500

Modes:
- verify: the recording sink of tests/test_crash.py in its own process (digests only); every
  (message, recipient) must arrive exactly once, one recipient per transaction, and a random
  sample of copies (`--check-sample`) must be byte-identical to fingerprint.prepare(...).
  copy_for(recipient) made here with the relay's key.
- smtp-sink: Postfix's smtp-sink (`-c` transaction counter); checks the number of
  transactions only (M * R), not who got what.

Each client sends its messages one after the other (smtplib, one transaction of R recipients per
message) and retries a message after 4xx or a broken connection until 250 (5xx: failed). Prints
the total time (first MAIL to last 250), throughput in copies/s, per-message latency, retries,
the relay's peak RSS (VmHWM) and CPU time. Aborts (relay and sink killed, exit 2) after
`--max-seconds` (default 900). Exit 1 if a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import test_crash as sc  # noqa: E402

SENDER = sc.SENDER


def make_message(i: int, token: str, attach_kib: int) -> bytes:
    rng = random.Random(i)
    paras = list(sc.PARAGRAPHS)
    rng.shuffle(paras)
    paras.insert(0, f"This is notice number {i} of the soak run {token}. Please read it to the "
                    "end, and keep it for your records until the end of the quarter.")
    m = EmailMessage()
    m["From"] = f"The Boss <{SENDER}>"
    m["To"] = "all-staff@example.com"
    m["Subject"] = f"Soak notice {i}"
    m["Message-ID"] = f"<soak-{i}-{token}@example.com>"
    m["Date"] = "Mon, 24 Nov 2025 10:00:00 +0000"
    m.set_content("\n\n".join(paras), cte="quoted-printable")
    m.add_alternative("<html><body>" + "".join(f"<p>{p}</p>" for p in paras)
                      + "</body></html>", subtype="html", cte="quoted-printable")
    if attach_kib:
        m.add_attachment(rng.randbytes(attach_kib * 1024), maintype="application",
                         subtype="pdf", filename=f"notice-{i}.pdf")
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Outcome:
    latency: float = 0.0  # first attempt start -> 250
    attempts: int = 0
    replies: list[str] = field(default_factory=list)
    ok: bool = False


class SmtpSink:
    """Postfix's smtp-sink on a free loopback port; `count()` = transactions completed."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:  # port 0: the OS picks a free port, smtp-sink takes it
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        self.out = workdir / "smtp-sink.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([exe, "-u", "nobody", "-c", f"127.0.0.1:{self.port}",
                                          "256"], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("smtp-sink did not start: "
                                       + self.out.read_text(errors="replace")) from None
                time.sleep(0.05)

    def count(self) -> int:
        nums = re.findall(rb"\d+", self.out.read_bytes())
        return int(nums[-1]) if nums else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(mode: str, args: argparse.Namespace) -> bool:
    work = Path(tempfile.mkdtemp(prefix=f"relay-soak-{mode}-"))
    token = os.urandom(4).hex()
    rcpts = sc.recipients(args.recipients)
    msgs = [make_message(i, token, args.attach_kib) for i in range(args.messages)]
    sink: sc.SinkProcess | SmtpSink
    sink = (sc.SinkProcess(work / "sink.log", digest_only=True) if mode == "verify"
            else SmtpSink(work))
    relay = sc.RelayProcess(sc.write_config(
        work, sink.port, concurrency=args.concurrency,
        max_recipients=max(100, args.recipients), timeout=60))
    upstream = "recording aiosmtpd sink" if mode == "verify" else "smtp-sink"
    print(f"\n== mode {mode}: {args.messages} messages x {args.recipients} recipients "
          f"({len(msgs[0])} bytes each), {args.clients} clients, relay concurrency "
          f"{args.concurrency}, upstream {upstream}", flush=True)
    outcomes = [Outcome() for _ in msgs]
    nxt = iter(range(len(msgs)))
    lock = threading.Lock()
    t_start = time.monotonic()
    deadline = t_start + args.max_seconds
    aborted = threading.Event()

    def client() -> None:
        while not aborted.is_set():
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            o = outcomes[i]
            t0 = time.monotonic()
            while not aborted.is_set():
                o.attempts += 1
                reply = sc.send_once(relay.port, SENDER, rcpts, msgs[i], timeout=330)
                o.replies.append(reply[:120])
                if reply.startswith("2"):
                    o.ok = True
                    break
                if reply.startswith("5") or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            o.latency = time.monotonic() - t0

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    last_report = t_start
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        now = time.monotonic()
        if now > deadline:
            aborted.set()
            print(f"ABORT: still running after {args.max_seconds:.0f} s", flush=True)
            relay.kill()
            sink.stop()
            print(f"(kept {work})")
            sys.exit(2)
        if now - last_report >= args.progress:
            done = sum(o.ok for o in outcomes)
            print(f"  {now - t_start:6.0f} s: {done}/{len(msgs)} messages answered 250, "
                  f"sink holds {sink.count()} copies, relay RSS peak "
                  f"{relay.peak_rss_kib() / 1024:.0f} MiB", flush=True)
            last_report = now
    elapsed = time.monotonic() - t_start
    rss = relay.peak_rss_kib()
    cpu = cpu_seconds(relay.pid)
    code = relay.terminate(60)
    copies = args.messages * args.recipients
    lat = sorted(o.latency for o in outcomes)
    retries = sum(o.attempts - 1 for o in outcomes)
    failed = [i for i, o in enumerate(outcomes) if not o.ok]
    print(f"total {elapsed:.1f} s; {copies} copies; {copies / elapsed:.0f} copies/s; "
          f"per message: median {lat[len(lat) // 2]:.1f} s, max {lat[-1]:.1f} s; "
          f"{retries} retries (4xx or broken connection); {len(failed)} message(s) not "
          f"accepted")
    print(f"relay: peak RSS (VmHWM) {rss / 1024:.0f} MiB, CPU {cpu:.0f} s "
          f"({100 * cpu / elapsed:.0f}% of one core), exit status after SIGTERM {code}")
    ok = not failed and code == 0
    for i in failed[:5]:
        print(f"  message {i}: {outcomes[i].replies[-3:]}")
    if mode == "verify":
        assert isinstance(sink, sc.SinkProcess)
        ok = verify(sink, work, msgs, token, rcpts, args) and ok
    else:
        time.sleep(0.5)
        n = sink.count()
        same = n == copies
        print(f"smtp-sink: {n} transactions for {copies} copies: "
              f"{'OK' if same else 'MISMATCH'} (count only: smtp-sink keeps no content)")
        ok = ok and same
    sink.stop()
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(kept {work})")
    return ok


def verify(sink: sc.SinkProcess, work: Path, msgs: list[bytes], token: str, rcpts: list[str],
           args: argparse.Namespace) -> bool:
    got = sink.copies()
    mids = {f"<soak-{i}-{token}@example.com>": i for i in range(len(msgs))}
    per: Counter[tuple[int, str]] = Counter()
    multi = stray = 0
    for c in got:
        if len(c.rcpts) != 1:
            multi += 1
        if c.mid not in mids or c.mail_from != SENDER:
            stray += 1
            continue
        for r in c.rcpts:
            per[(mids[c.mid], r)] += 1
    want = {(i, r) for i in range(len(msgs)) for r in rcpts}
    missing = len(want - set(per))
    doubled = sum(n - 1 for n in per.values() if n > 1)
    extra = len(set(per) - want)
    # a sample of copies: byte-identical to what fingerprint.prepare makes with the relay's key
    from relay import fingerprint, keys
    from relay.config import PROFILES
    from relay.scheme import SCHEME

    key_id, key = keys.load(work / "var" / "relay.key").current
    rng = random.Random(1)
    sample = rng.sample(got, min(args.check_sample, len(got))) if got else []
    prepared: dict[int, fingerprint.Prepared] = {}
    wrong = 0
    for c in sample:
        if c.mid not in mids:
            continue
        i = mids[c.mid]
        if i not in prepared:
            prepared[i] = fingerprint.prepare(msgs[i], SENDER, key_id, key,
                                              SCHEME.with_rate(PROFILES["standard"]))
        if hashlib.sha256(prepared[i].copy_for(c.rcpts[0])).hexdigest() != c.sha:
            wrong += 1
    distinct = len({c.sha for c in got})
    ok = not (missing or doubled or extra or multi or stray or wrong)
    print(f"verify: {len(got)} transactions for {len(want)} (message, recipient) pairs: "
          f"missing {missing}, doubled {doubled}, unexpected {extra + stray}, "
          f"multi-recipient {multi}; {distinct} distinct copies; sample of {len(sample)} "
          f"byte-checked against fingerprint.prepare: {wrong} wrong -> "
          f"{'exactly once: OK' if ok else 'FAIL'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--messages", type=int, default=50)
    ap.add_argument("-r", "--recipients", type=int, default=1000)
    ap.add_argument("-c", "--clients", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8, help="relay upstream connections")
    ap.add_argument("--mode", choices=("verify", "smtp-sink", "both"), default="verify")
    ap.add_argument("--attach-kib", type=int, default=16, help="binary attachment per message")
    ap.add_argument("--check-sample", type=int, default=2000,
                    help="copies byte-checked against fingerprint.prepare (verify mode)")
    ap.add_argument("--max-seconds", type=float, default=900, help="abort after this long")
    ap.add_argument("--progress", type=float, default=30, help="seconds between progress lines")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    modes = ("verify", "smtp-sink") if args.mode == "both" else (args.mode,)
    t0 = time.monotonic()
    results = {}
    for mode in modes:
        remaining = args.max_seconds - (time.monotonic() - t0)
        if remaining <= 0:
            print(f"ABORT: no time left for mode {mode}")
            return 2
        args_mode = argparse.Namespace(**{**vars(args), "max_seconds": remaining})
        results[mode] = run(mode, args_mode)
    print("\nsoak: " + ", ".join(f"{m} {'OK' if ok else 'FAIL'}" for m, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
