#!/usr/bin/env python3
"""Code v2 against code v3 side by side, in one process: a copy's bits and a decode.

    flock /tmp/bench.lock python3 bench/code_versions.py            # full run
    flock /tmp/bench.lock python3 bench/code_versions.py --quick    # fewer rounds, 20 messages

Same key, same messages (text/plain + text/html GPL-3 prose from bench/speed.py, about 31 KB
and 101 KB), the two code versions alternating over --rounds rounds. Per round and version:
`Prepared.bits_for` per copy (median over --copies recipients) for both sizes; then
`relay.decoding.decode` of a faithful 60-word excerpt (a fresh Derived each time) with the
31 KB message logged to --recipients recipients, and with --messages such messages logged
(the others of other prose, each to the same recipients: 1,000,000 logged copies by default,
built in process with relay.store.Store); and `relay decode --json` (the CLI, wall clock) on
the large log. Prints one Markdown table of medians over rounds and the ratio v3 / v2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from speed import (  # noqa: E402
    build,
    leak_excerpt,
    log_message,
    other_paragraphs,
    text_html_message,
)

from relay import decoding, fingerprint  # noqa: E402
from relay import keys as keys_mod  # noqa: E402
from relay.scheme import V2, V3, Scheme  # noqa: E402
from relay.tokens import excerpt_words  # noqa: E402

SENDER = "ceo@example.com"
RATE = 1 / 6


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=400)
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--decodes", type=int, default=3, help="decodes per round and log")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.messages, args.copies = 2, 20, 200
    versions = {"v2": V2, "v3": V3}
    tmp = Path(tempfile.mkdtemp(prefix="code-versions-"))
    rcpts = [f"user{i:05d}@example.com" for i in range(args.recipients)]
    sizes = {"31 KB": text_html_message(30_000, "bits"),
             "101 KB": text_html_message(100_000, "bits")}
    target = text_html_message(30_000, "decode-target")
    pool = other_paragraphs()
    res: dict[tuple[str, str], list[float]] = {}

    def note(what: str, v: str, x: float) -> None:
        res.setdefault((what, v), []).append(x)

    # the logs: per version, one with the target message only, one with --messages messages
    logs = {}
    for v, ver in versions.items():
        d = tmp / v
        d.mkdir()
        ring = keys_mod.load(d / "relay.key", create=True)
        key_id, key = ring.current
        (d / "config.toml").write_text('[store]\npath = "many.db"\n[signature]\n'
                                       'key_file = "relay.key"\n')
        scheme = Scheme(ver, RATE)
        p = fingerprint.prepare(target, SENDER, key_id, key, scheme)
        one = log_message(d / "one.db", p, SENDER, rcpts)
        many = log_message(d / "many.db", p, SENDER, rcpts)
        t0 = time.perf_counter()
        for i in range(args.messages - 1):
            paras = [pool[(i * 7 + j) % len(pool)] for j in range(8 + i % 5)]
            q = fingerprint.prepare(build(paras, f"other-{i}"), SENDER, key_id, key, scheme)
            log_message(d / "many.db", q, SENDER, rcpts, many)
        print(f"{v}: logged {args.messages} x {args.recipients:,} in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        leaker = rcpts[len(rcpts) // 3]
        leak = leak_excerpt(p.copy_for(leaker), 60, 0.4)
        (d / "leak.txt").write_text(leak)
        logs[v] = (d, ring, one, many, excerpt_words(leak), leaker)

    for rnd in range(args.rounds):
        order = list(versions.items()) if rnd % 2 == 0 else list(versions.items())[::-1]
        for v, ver in order:
            d, ring, one, many, words, leaker = logs[v]
            key_id, key = ring.current
            for name, raw in sizes.items():
                p = fingerprint.prepare(raw, SENDER, key_id, key, Scheme(ver, RATE))
                p.bits_for(rcpts[0])
                ts = []
                for r in rcpts[:args.copies]:
                    t0 = time.perf_counter()
                    p.bits_for(r)
                    ts.append(time.perf_counter() - t0)
                note(f"bits per copy, {name} ({p.carriers:,} carriers), ms", v, med(ts) * 1e3)
            for tag, store in (("10,000 recipients", one),
                               (f"{args.messages * args.recipients:,} logged copies", many)):
                ts = []
                for _ in range(args.decodes):
                    t0 = time.perf_counter()
                    rep = decoding.decode([words], store, ring)
                    ts.append(time.perf_counter() - t0)
                top = rep.candidates[0].recipient if rep.candidates else None
                if top != leaker:
                    print(f"{v} {tag}: the leaker is not ranked first", file=sys.stderr)
                note(f"decode 60 words, {tag}, in process, s", v, med(ts))
            ts = []
            for _ in range(args.decodes):
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "relay", "decode", "--json",
                                    "--config", str(d / "config.toml"), str(d / "leak.txt")],
                                   cwd=ROOT, capture_output=True, text=True,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
                ts.append(time.perf_counter() - t0)
                if r.returncode != 0:
                    raise SystemExit(f"relay decode failed: {r.stderr.strip()}")
            note(f"`relay decode` CLI, {args.messages * args.recipients:,} logged copies, s",
                 v, med(ts))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    for _, _, one, many, _, _ in logs.values():
        one.close()
        many.close()
    shutil.rmtree(tmp)
    print(f"\n{args.rounds} rounds alternating v2 and v3, medians of per-round medians\n")
    print("| | code v2 | code v3 | v3 / v2 |\n| --- | --- | --- | --- |")
    for what in dict.fromkeys(w for w, _ in res):
        a, b = med(res[what, "v2"]), med(res[what, "v3"])
        fmt = "{:.3f}"
        print(f"| {what} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
