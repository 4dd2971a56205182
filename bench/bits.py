#!/usr/bin/env python3
"""Per-copy bits and decode scoring, in process, this tree against another version side by side.

    python bench/bits.py                                 # this tree only
    git archive <rev> relay | tar -x -C /tmp/before      # another version's package ...
    python bench/bits.py --before /tmp/before            # ... measured alternately with this one

Each round starts one worker process per version (PYTHONPATH = that version), alternating, on
the same message (~30 KB text/plain + text/html from GPL-3 prose, quoted-printable) and key.
A worker measures: `Prepared.bits_for` per copy (median over --copies recipients),
`Prepared.copy_for` per copy, the bytes alone for the same bits made by the template
(`Prepared.copy_with`) and by the reference (`Prepared._render`), alternating, the time
`prepare` takes and the template's share of it, and `relay.decoding.decode` of a faithful
60-word excerpt of one copy's plain text with the message logged to --recipients recipients
(a temp SQLite log, fresh `Derived`, median over --decodes). It also prints a digest of the
decode report and of the bits of the first 200 recipients: the two versions must agree (same
bits, same statistics).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = bytes(range(32))
SENDER = "ceo@example.com"


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from speed import leak_excerpt, log_message, text_html_message

    from relay import decoding, fingerprint
    from relay.keys import Keyring
    from relay.scheme import SCHEME
    from relay.tokens import excerpt_words

    raw = text_html_message(args.size, "bits")
    t0 = time.perf_counter()
    p = fingerprint.prepare(raw, SENDER, "k1", KEY, SCHEME.with_rate(1 / 6))
    prepare_ms = (time.perf_counter() - t0) * 1e3
    templated = getattr(p, "_template", None) is not None
    build_ms = []
    if templated:  # what the template adds to prepare (built again, timed alone)
        for _ in range(3):
            t0 = time.perf_counter()
            fingerprint._template(p)
            build_ms.append((time.perf_counter() - t0) * 1e3)
    rcpts = [f"user{i:05d}@example.com" for i in range(args.recipients)]
    digest = hashlib.sha256()
    for r in rcpts[:200]:
        digest.update(bytes(p.bits_for(r)))
    bits_ms, copy_ms, bytes_ms, render_ms, array_ms = [], [], [], [], []
    for k, r in enumerate(rcpts[:args.copies]):
        t0 = time.perf_counter()
        bits = p.bits_for(r)
        t1 = time.perf_counter()
        p.copy_for(r)
        t2 = time.perf_counter()
        bits_ms.append((t1 - t0) * 1e3)
        copy_ms.append((t2 - t1) * 1e3)
        if templated:  # the bytes alone: the template and the reference, alternating order;
            # the template also with the bits as a numpy array (as relay.codes will give them)
            arr = np.frombuffer(bytes(bits), dtype=np.uint8)
            for way in (("t", "a", "r") if k % 2 else ("r", "a", "t")):
                t0 = time.perf_counter()
                if way == "t":
                    p.copy_with(bits)
                elif way == "a":
                    p.copy_with(arr)
                else:
                    p._render(bits)
                {"t": bytes_ms, "a": array_ms, "r": render_ms}[way].append(
                    (time.perf_counter() - t0) * 1e3)
    with tempfile.TemporaryDirectory() as tmp:
        store = log_message(Path(tmp) / "relay.db", p, SENDER, rcpts)
        leaker = rcpts[len(rcpts) // 3]
        words = excerpt_words(leak_excerpt(p.copy_for(leaker), 60, 0.4))
        ring = Keyring((("k1", KEY),))
        dec_s = []
        for _ in range(args.decodes):
            t0 = time.perf_counter()
            rep = decoding.decode([words], store, ring)
            dec_s.append(time.perf_counter() - t0)
        store.close()
    out = rep.as_json()
    print(json.dumps({
        "size": len(raw), "carriers": p.carriers,
        "bits_ms": statistics.median(bits_ms), "copy_ms": statistics.median(copy_ms),
        "bytes_ms": statistics.median(bytes_ms) if bytes_ms else None,
        "render_ms": statistics.median(render_ms) if render_ms else None,
        "array_ms": statistics.median(array_ms) if array_ms else None,
        "prepare_ms": prepare_ms,
        "template_ms": statistics.median(build_ms) if build_ms else None,
        "decode_s": statistics.median(dec_s), "verdict": out["verdict"],
        "top": out["candidates"][0]["recipient"] if out["candidates"] else None,
        "leaker": leaker, "bits_observed": out["excerpts"][0]["bits_observed"],
        "report_sha": hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:16],
        "bits_sha": digest.hexdigest()[:16]}))


def run(path: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run([sys.executable, __file__, "--worker", "--size", str(args.size),
                          "--copies", str(args.copies), "--recipients", str(args.recipients),
                          "--decodes", str(args.decodes)], env=env, capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, help="folder holding another version's relay/")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=30_000, help="message bytes (text + HTML)")
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--decodes", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    versions = [("before", args.before)] if args.before else []
    versions.append(("this tree", ROOT))
    got: dict[str, list[dict]] = {name: [] for name, _ in versions}
    for i in range(args.rounds):
        for name, path in versions if i % 2 == 0 else versions[::-1]:
            got[name].append(run(path, args))
    first = got["this tree"][0]
    print(f"message {first['size']} bytes, {first['carriers']} carriers; {args.rounds} rounds, "
          f"medians; decode: 60 words, {args.recipients} recipients")
    print()
    print("| version | bits per copy (ms) | copy_for per copy (ms) | decode (s) | verdict | "
          "bits read | bits digest | report digest |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    med = {}
    for name, rows in got.items():
        med[name] = {k: statistics.median(r[k] for r in rows)
                     for k in ("bits_ms", "copy_ms", "decode_s")}
        r = rows[0]
        ok = "leaker" if r["top"] == r["leaker"] else f"top {r['top']}"
        print(f"| {name} | {med[name]['bits_ms']:.3f} | {med[name]['copy_ms']:.3f} | "
              f"{med[name]['decode_s']:.2f} | {r['verdict']} ({ok}) | {r['bits_observed']} | "
              f"{', '.join(sorted({x['bits_sha'] for x in rows}))} | "
              f"{', '.join(sorted({x['report_sha'] for x in rows}))} |")
    if args.before:
        a, b = med["before"], med["this tree"]
        print(f"| this tree / before | {b['bits_ms'] / a['bits_ms']:.3f}x | "
              f"{b['copy_ms'] / a['copy_ms']:.2f}x | {b['decode_s'] / a['decode_s']:.3f}x | | | "
              f"| |")
    rows = [r for r in got["this tree"] if r.get("bytes_ms") is not None]
    if rows:
        m = {k: statistics.median(r[k] for r in rows)
             for k in ("bits_ms", "bytes_ms", "array_ms", "render_ms", "prepare_ms",
                       "template_ms")}
        print()
        print("Bytes of a copy, the same bits, this tree (medians over copies, then rounds):")
        print()
        print("| bits (ms) | bytes, template (ms) | the same, bits as an array (ms) | "
              "bytes, _render (ms) | template / _render | bits + template bytes (ms) | "
              "prepare (ms) | of which the template (ms) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(f"| {m['bits_ms']:.3f} | {m['bytes_ms']:.3f} | {m['array_ms']:.3f} | "
              f"{m['render_ms']:.2f} | {m['bytes_ms'] / m['render_ms']:.3f}x | "
              f"{m['bits_ms'] + m['bytes_ms']:.3f} | {m['prepare_ms']:.0f} | "
              f"{m['template_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
