#!/usr/bin/env python3
"""The relay's own cost per fan-out copy, apart from making the copy, against the naive fan-out.

    flock /tmp/bench.lock python bench/relay_overhead.py                  # copies = the original
    flock /tmp/bench.lock python bench/relay_overhead.py --render --inproc
    flock /tmp/bench.lock python bench/relay_overhead.py --profile /tmp/relay.prof

Into one Postfix smtp-sink, alternating over rounds, one all-staff message (bench/speed.py's
text+HTML GPL-3 message, `--size` bytes) to `--n` recipients through:
  B  the naive fan-out of bench/speed.py (no marks, no log);
  C  `relay serve` (this tree) in a wrapper process that, unless `--render`, makes every copy
     the original bytes (`Prepared.copy_for` returns `raw`): everything else (analysis, the
     log, one fsynced record per copy, the upstream transactions) runs as in production;
  D  (`--inproc`) the same relay with the worker processes' rendering turned off
     (`Analyser.render` fails, so every copy is made in the relay process, as before).
Prints copies/s per round, medians, C/B, D/B and the relay's CPU seconds (user, system) from
/proc. `--profile FILE` writes a cProfile of C's relay process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import speed  # noqa: E402

WRAPPER = """
import os, sys, cProfile
from pathlib import Path
sys.path.insert(0, {root!r})
from relay import analysis, config, fingerprint, server
if not {render!r}:
    fingerprint.Prepared.copy_for = lambda self, r: self.raw
if os.environ.get("RELAY_OVERHEAD_INPROC"):
    async def _off(self, *a, **k):
        raise analysis.AnalysisFailed("turned off for the measurement")
    analysis.Analyser.render = _off
if __name__ == "__main__":
    prof = {profile!r}
    p = cProfile.Profile() if prof else None
    if p:
        p.enable()
    try:
        server.serve(config.load(Path({cfg!r})))
    finally:
        if p:
            p.disable()
            p.dump_stats(prof)
"""


def start(tmp: Path, port: int, upstream: int, render: bool, profile: str, inproc: bool
          ) -> subprocess.Popen:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = speed.relay_config(tmp, port, upstream, 8)
    run = tmp / "run.py"
    run.write_text(WRAPPER.format(root=str(ROOT), render=render, profile=profile,
                                  cfg=str(cfg)))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if inproc:
        env["RELAY_OVERHEAD_INPROC"] = "1"
    p = subprocess.Popen([sys.executable, str(run)], cwd=tmp,
                         stderr=open(tmp / "relay.log", "ab"), env=env)  # noqa: SIM115
    speed.wait_port(port, p)
    return p


def cpu_seconds(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="recipients (default 2000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=30000, help="message size, bytes")
    ap.add_argument("--render", action="store_true", help="real copies (default: the original)")
    ap.add_argument("--inproc", action="store_true", help="also D: copies made in process")
    ap.add_argument("--profile", default="", help="cProfile output file for C's relay")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="relay-overhead-"))
    sink_port, naive_port = speed.free_port(), speed.free_port()
    sink = speed.start_sink(sink_port)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(speed.start_naive(naive_port, sink_port, 8))
        targets = [("B", naive_port, procs[0])]
        port = speed.free_port()
        procs.append(start(tmp / "c", port, sink_port, a.render, a.profile, False))
        targets.append(("C", port, procs[-1]))
        if a.inproc:
            port = speed.free_port()
            procs.append(start(tmp / "d", port, sink_port, a.render, "", True))
            targets.append(("D", port, procs[-1]))
        rcpts = [f"user{i:05d}@example.com" for i in range(a.n)]
        rates: dict[str, list[float]] = {name: [] for name, *_ in targets}
        cpu: dict[str, list[float]] = {name: [] for name, *_ in targets}
        serial = 0
        for i in range(a.rounds):
            for name, port, proc in targets if i % 2 == 0 else targets[::-1]:
                serial += 1
                raw = speed.text_html_message(a.size, f"overhead-{os.getpid()}-{serial}")
                before = sum(cpu_seconds(proc.pid))
                dt = speed.send(port, rcpts, raw)
                cpu[name].append((sum(cpu_seconds(proc.pid)) - before) / a.n * 1e3)
                rates[name].append(a.n / dt)
                print(f"round {i + 1} {name}: {a.n / dt:.0f} copies/s, "
                      f"{cpu[name][-1]:.2f} ms CPU per copy (main process)", flush=True)
        b = speed.med(rates["B"])
        print(f"\ncopies are {'rendered' if a.render else 'the original bytes'}; "
              f"{a.n} recipients, {len(raw)} bytes, {a.rounds} rounds (medians)")
        for name, *_ in targets:
            r = speed.med(rates[name])
            print(f"{name}: {r:.0f} copies/s ({', '.join(f'{x:.0f}' for x in rates[name])}), "
                  f"{name}/B {r / b:.2f}, main process CPU {speed.med(cpu[name]):.2f} ms/copy")
    finally:
        for p in procs:
            speed.stop(p)
        speed.stop(sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
