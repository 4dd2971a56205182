#!/usr/bin/env python3
"""kill -9 loop: the crash scenario of tests/test_crash.py, N times, the kill at a random moment.

    python bench/crash_loop.py                 # 20 runs, 200 recipients, 4 upstream connections
    python bench/crash_loop.py -n 50 --sink-delay 0 --recipients 1000   # fast upstream

Each run: a recording sink (own process, `--sink-delay` s per copy), a fresh `relay serve`
(subprocess, fresh database and key); one all-staff message to R recipients; once the sink holds
a random number of copies in [1, R-1], plus a random pause in [0, 2 * sink delay) so the kill
lands anywhere in the sink's cycle, SIGKILL the relay; read its database (what the restart will
see); restart it on the same database; retry the same message until 250; count the copies.

Per run: copies the sink held at the kill, how many of those the database had committed, the
in-flight window (held by the sink, not committed: the contract lets these be sent again),
duplicates, duplicates NOT explained by that window (a relay bug), missing recipients, copies
whose bytes are not the recipient's expected copy. Exit status 1 if anything is missing, wrong
or unexplained, or if a run doubled more copies than there are upstream connections.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import test_crash as scenario  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=20)
    ap.add_argument("--recipients", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4, help="relay upstream connections")
    ap.add_argument("--sink-delay", type=float, default=0.02, help="seconds per copy at the sink")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep each run's folder (logs, db)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill -9 loop: {args.runs} runs, {args.recipients} recipients, concurrency "
          f"{args.concurrency}, sink delay {args.sink_delay * 1000:.0f} ms/copy, seed {seed}")
    head = (f"{'run':>3} {'kill@':>5} {'before':>6} {'commit':>6} {'flight':>6} {'dup':>3} "
            f"{'unexpl':>6} {'miss':>4} {'wrong':>5} {'secs':>5}  replies after restart")
    print(head)
    print("-" * len(head))
    tot = {"dup": 0, "unexpl": 0, "miss": 0, "wrong": 0, "flight": 0, "before": 0, "commit": 0}
    runs_with_dup = 0
    max_dup = 0
    failures = 0
    t_all = time.monotonic()
    for i in range(1, args.runs + 1):
        work = Path(tempfile.mkdtemp(prefix=f"relay-crash-{i:02d}-"))
        kill_at = rng.randint(1, args.recipients - 1)
        try:
            r = scenario.crash_scenario(
                work, n_rcpts=args.recipients, concurrency=args.concurrency,
                sink_delay=args.sink_delay, kill_at=kill_at,
                jitter=2 * args.sink_delay, seed=rng.randrange(1 << 30), deadline_s=300)
        except Exception as e:  # one broken run is reported (its folder kept), the loop goes on
            failures += 1
            print(f"{i:>3} {kill_at:>5}  run failed: {e.__class__.__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''} ({work})")
            continue
        bad = r.missing or r.unexplained or r.wrong or not r.final.startswith("250")
        if not args.keep and not bad:
            shutil.rmtree(work, ignore_errors=True)
        replies = ", ".join(x[:3] for x in r.retries)
        print(f"{i:>3} {kill_at:>5} {r.before_kill:>6} {r.committed:>6} {r.in_flight:>6} "
              f"{r.duplicates:>3} {r.unexplained:>6} {r.missing:>4} {r.wrong:>5} "
              f"{r.seconds:>5.1f}  {replies}", flush=True)
        tot["dup"] += r.duplicates
        tot["unexpl"] += r.unexplained
        tot["miss"] += r.missing
        tot["wrong"] += r.wrong
        tot["flight"] += r.in_flight
        tot["before"] += r.before_kill
        tot["commit"] += r.committed
        runs_with_dup += r.duplicates > 0
        max_dup = max(max_dup, r.duplicates)
        if not r.final.startswith("250"):
            failures += 1
    ok = (failures == 0 and tot["miss"] == 0 and tot["unexpl"] == 0 and tot["wrong"] == 0
          and max_dup <= args.concurrency)
    print(f"summary: {args.runs} runs in {time.monotonic() - t_all:.0f} s, {failures} failed; "
          f"copies before kill {tot['before']} (committed at kill "
          f"{tot['commit']}, in flight {tot['flight']}); duplicates "
          f"{tot['dup']} in {runs_with_dup}/{args.runs} runs (max {max_dup} per run, limit "
          f"{args.concurrency}), unexplained {tot['unexpl']}, missing {tot['miss']}, "
          f"wrong bytes {tot['wrong']}: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
