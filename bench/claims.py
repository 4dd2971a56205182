#!/usr/bin/env python3
"""What a claim costs one delivery attempt (relay.lease: read the holder, take, release) next to
what one copy's record costs (Store.set_copy_states, one row, one commit), measured side by side
on the same SQLite file (WAL, synchronous=FULL, as the relay opens it).

    flock /tmp/bench.lock python3 bench/claims.py [-n 300]

Prints the median of each and their ratio: the claim's cost in copy records per attempt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay import lease  # noqa: E402
from relay.scheme import SCHEME  # noqa: E402
from relay.store import ACCEPTED, Store  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=300, help="rounds (default 300)")
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "relay.db")
        store.record_message(identity="m", key_id="k1", scheme=SCHEME, sender="b@example.com",
                             message_id=None, subject=None, date=None, size=1, documents=[],
                             doc_shingles=[])
        claim, record = [], []
        for i in range(n):  # interleaved: both see the same disk at the same moments
            t0 = time.perf_counter()
            now = time.time()
            lease.holder(store, f"id{i}")
            assert lease.take(store, f"id{i}", "bench/1/x", now, now + 210)
            lease.release(store, f"id{i}", "bench/1/x", now)
            t1 = time.perf_counter()
            store.set_copy_states("m", [(f"r{i}@example.com", ACCEPTED, "250 ok")])
            t2 = time.perf_counter()
            claim.append(t1 - t0)
            record.append(t2 - t1)
        store.close()
    c, r = statistics.median(claim), statistics.median(record)
    print(f"claim per attempt (holder + take + release): median {c * 1000:.3f} ms")
    print(f"one copy's record (one row, one commit):     median {r * 1000:.3f} ms")
    print(f"ratio: a claim costs {c / r:.2f} copy records ({n} rounds, interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
