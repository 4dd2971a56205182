#!/usr/bin/env python3
"""The relay's log on PostgreSQL against SQLite, side by side in one run.

    flock /tmp/bench.lock python bench/store_backends.py            # full run
    flock /tmp/bench.lock python bench/store_backends.py --quick    # a short run

A private PostgreSQL cluster (tests/pgserver.py's, but with fsync on: durable as SQLite's
synchronous=FULL), or `--url` for an existing empty database. Two relays (`python -m relay
serve`, bench/speed.py's config) into the same Postfix smtp-sink: one with `[store] path`, one
with `[store] url`. Parts:
  * fan-out: an all-staff 30 KB text+HTML message to 2,000 recipients in one transaction,
    the two relays alternating over rounds (a fresh message each time); copies/s, medians;
  * decode at 1,000,000 logged copies: 100 messages of 10,000 recipients each, logged in
    process into both logs (the same prepared messages), then a faithful 60-word excerpt of one
    copy decoded in process (relay.decoding.decode) and through `relay decode --json`;
    seconds, medians.
Prints one Markdown table with the ratios PostgreSQL/SQLite and saves it to
bench/out/store_backends.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

import speed  # noqa: E402


def start_pg(tmp: Path) -> tuple[object, str]:
    from pgserver import PgServer, bindir

    found = bindir()
    if found is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    server = PgServer(found, speed.free_port(), durable=True)
    server.init()
    return server, server.url(server.new_database())


def start_relay(tmp: Path, port: int, upstream: int, concurrency: int,
                url: str | None) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = speed.relay_config(tmp, port, upstream, concurrency)
    if url:
        # url instead of path: a config naming both is refused (they are different logs)
        cfg.write_text(cfg.read_text().replace('path = "relay.db"', f'url = "{url}"'))
    log = open(tmp / "relay.log", "ab")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--config", str(cfg)],
                         cwd=ROOT, stderr=log, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    speed.wait_port(port, p)
    return p


def fanout(tmp: Path, url: str, rounds: int, nrcpt: int, concurrency: int,
           log) -> dict[str, float]:
    sink_port, lite_port, pg_port = speed.free_port(), speed.free_port(), speed.free_port()
    sink = speed.start_sink(sink_port)
    relays = []
    try:
        relays.append(start_relay(tmp / "sqlite", lite_port, sink_port, concurrency, None))
        relays.append(start_relay(tmp / "pg", pg_port, sink_port, concurrency, url))
        rcpts = [f"user{i:05d}@example.com" for i in range(nrcpt)]
        rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
        order = [("sqlite", lite_port), ("postgresql", pg_port)]
        serial = 0
        for i in range(rounds):
            for name, port in order if i % 2 == 0 else order[::-1]:
                serial += 1
                dt = speed.send(port, rcpts, speed.text_html_message(30_000, f"be-{serial}"))
                rates[name].append(nrcpt / dt)
                log(f"fan-out round {i + 1}, {name}: {nrcpt / dt:.0f} copies/s")
        return {k: speed.med(v) for k, v in rates.items()}
    finally:
        for p in relays:
            speed.stop(p)
        speed.stop(sink)


def decode(tmp: Path, url: str, recipients: int, messages: int, repeat: int,
           log) -> dict[str, tuple[float, float, str]]:
    """{backend: (in-process seconds, CLI seconds, verdict)} at messages x recipients copies."""
    from relay import decoding, fingerprint
    from relay import keys as keys_mod
    from relay.scheme import SCHEME
    from relay.store import Store
    from relay.tokens import excerpt_words

    d = tmp / "decode"
    d.mkdir()
    ring = keys_mod.load(d / "relay.key", create=True)
    key_id, key = ring.current
    confs = {"sqlite": d / "sqlite.toml", "postgresql": d / "pg.toml"}
    confs["sqlite"].write_text('[store]\npath = "relay.db"\n[signature]\nkey_file = "relay.key"\n')
    confs["postgresql"].write_text(f'[store]\nurl = "{url}"\n[signature]\n'
                                   'key_file = "relay.key"\n')
    stores = {"sqlite": Store(d / "relay.db"), "postgresql": Store(url=url)}
    rcpts = [f"user{i:05d}@example.com" for i in range(recipients)]
    p = fingerprint.prepare(speed.text_html_message(30_000, "decode-target"), speed.SENDER,
                            key_id, key, SCHEME.with_rate(1 / 6))
    pool = speed.other_paragraphs()
    spent = {k: 0.0 for k in stores}
    for i in range(messages):
        if i == 0:
            q = p
        else:
            paras = [pool[(i * 7 + j) % len(pool)] for j in range(8 + i % 5)]
            q = fingerprint.prepare(speed.build(paras, f"other-{i}"), speed.SENDER, key_id, key,
                                    SCHEME.with_rate(1 / 6))
        for name, s in stores.items():
            t0 = time.perf_counter()
            speed.log_message(Path("unused"), q, speed.SENDER, rcpts, s)
            spent[name] += time.perf_counter() - t0
    log(f"logged {messages} x {recipients:,} copies: SQLite {spent['sqlite']:.0f} s, "
        f"PostgreSQL {spent['postgresql']:.0f} s")
    leaker = rcpts[recipients // 3]
    leak = speed.leak_excerpt(p.copy_for(leaker), 60, 0.4)
    (d / "leak.txt").write_text(leak)
    out = {}
    for name, s in stores.items():
        inproc, cli = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            rep = decoding.decode([excerpt_words(leak)], s, ring)
            inproc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--config",
                                str(confs[name]), str(d / "leak.txt")], cwd=d,
                               capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
            cli.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise SystemExit(f"relay decode failed: {r.stderr.strip()}")
        top = rep.candidates[0].recipient if rep.candidates else None
        verdict = f"{rep.verdict}, leaker first: {'yes' if top == leaker else 'NO'}"
        out[name] = (speed.med(inproc), speed.med(cli), verdict)
        log(f"decode {name}: in process {out[name][0]:.3f} s, CLI {out[name][1]:.2f} s, "
            f"{verdict}")
        s.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 500 recipients, 10 logged messages of 10,000, 1 decode")
    ap.add_argument("--url", help="an empty PostgreSQL database instead of a private cluster")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--recipients", type=int)
    ap.add_argument("--logged", type=int, help="messages of 10,000 recipients (default 100)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "store_backends.md")
    args = ap.parse_args()
    q = args.quick
    rounds = args.rounds or (1 if q else 3)
    nrcpt = args.recipients or (500 if q else 2000)
    logged = args.logged or (10 if q else 100)
    repeat = 1 if q else 3

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="relay-backends-"))
    server = None
    try:
        if args.url:
            urls = [args.url, args.url]
        else:
            server, url1 = start_pg(tmp)
            urls = [url1, server.url(server.new_database())]  # type: ignore[attr-defined]
        rate = fanout(tmp, urls[0], rounds, nrcpt, args.concurrency, log)
        dec = decode(tmp, urls[1], 10_000, logged, repeat, log)
    finally:
        if server is not None:
            server.destroy()  # type: ignore[attr-defined]
    copies = f"{logged * 10_000:,}"
    rows = [
        ("| measure | SQLite | PostgreSQL | PostgreSQL / SQLite |"),
        ("| --- | --- | --- | --- |"),
        (f"| fan-out, 30 KB text+HTML to {nrcpt:,} recipients (copies/s, median of {rounds}) "
         f"| {rate['sqlite']:.0f} | {rate['postgresql']:.0f} "
         f"| {rate['postgresql'] / rate['sqlite']:.2f}x |"),
        (f"| decode in process at {copies} logged copies (s, median of {repeat}) "
         f"| {dec['sqlite'][0]:.3f} | {dec['postgresql'][0]:.3f} "
         f"| {dec['postgresql'][0] / dec['sqlite'][0]:.2f}x |"),
        (f"| `relay decode` (CLI, wall clock) at {copies} logged copies (s, median of {repeat}) "
         f"| {dec['sqlite'][1]:.2f} | {dec['postgresql'][1]:.2f} "
         f"| {dec['postgresql'][1] / dec['sqlite'][1]:.2f}x |"),
        (f"| decode verdict | {dec['sqlite'][2]} | {dec['postgresql'][2]} | |"),
    ]
    table = "\n".join(rows) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
