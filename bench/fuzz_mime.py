#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris / libFuzzer) of the parse-rewrite path:
relay.policy.normalise_newlines -> relay.fingerprint.prepare -> Prepared.copy_for, plus
relay.mime.text_parts on the raw (not normalised) input.

    pip install atheris
    python bench/fuzz_mime.py                       # 300 s
    python bench/fuzz_mime.py --seconds 600 --findings out/fuzz
    python bench/fuzz_mime.py --replay FILE...      # re-check saved inputs, print the problem

Seed corpus: CPython's Lib/test/test_email/data/msg_*.txt (sysconfig stdlib path), plus a few
MIME tokens as a libFuzzer dictionary. Only modules of the `relay` package are instrumented.

Invariants, for every input (as the relay does it: newlines normalised to CRLF first):
1. text_parts(raw), prepare(), copy_for() and rendering the all-ones and all-zeros bit vectors
   never raise;
2. a copy is the normalised input itself, or differs only in the whitespace of text parts:
   both parsed with the email package (compat32), same tree, same headers in every part,
   non-text leaves byte-identical after transfer decoding, text leaves equal after collapsing
   runs of spaces, U+00A0 and `&nbsp;` (in text/html also line ends, which HTML renders as
   spaces); and the bytes before the first / after the last
   rewritable body (relay.mimewalk's own spans) are unchanged. A difference on a message in which
   the email package itself records defects (it reads another MIME structure than relay.mimewalk,
   e.g. `Name :` headers) is reported apart, as `parser-differential`. Under carrier rules 1
   (the default; `--rules 0` fuzzes the rules before) such a message is ambiguous
   (relay.ambiguity.Ambiguity) and left whole, so this class must stay empty;
3. no line longer than 998 octets that was not already in the input;
4. no bare CR or LF.

Findings are not fatal: the first input of each kind (invariant + exception type + place) is
saved under --findings (default: a new temp folder) and the run goes on. libFuzzer runs in a
child process (it exits the process when done); the parent prints a summary: executions,
libFuzzer's final coverage line (cov = instrumented edges of the relay package), and one line
per kind of finding with its reproducer.

Without atheris the script says so and runs a FALLBACK: a plain random byte-mutation loop over
the same seeds and invariants (not coverage-guided).
"""

from __future__ import annotations

import argparse
import email
import email.message
import email.policy
import glob
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import atheris
except ImportError:  # pragma: no cover - the fallback is reported
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["relay"]):
        from relay import carriers, codes, fingerprint, mime, policy, textpart  # noqa: F401
else:
    from relay import carriers, fingerprint, mime, policy, textpart
    from relay.scheme import SCHEME

KEY_ID, KEY = "fuzz", hashlib.sha256(b"fuzz key").digest()
SENDER = "boss@example.com"
RATE = 0.3  # the dense profile: the most carriers, the most edits
RULES = [carriers.RULES]  # carrier rules prepare() uses (--rules)
RCPTS = ("alice@example.com", "bob@example.com")
LINE_MAX = 998

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_SQUASH = re.compile(r"(?:&nbsp;|[ \u00a0])+")
# HTML renders a line end of its source as a space; the relay may mark one with `&nbsp;`
_SQUASH_HTML = re.compile(r"(?:&nbsp;|[ \t\r\n\u00a0])+")

DICTIONARY = [
    "Content-Type: ", "Content-Transfer-Encoding: ", "MIME-Version: 1.0", "multipart/mixed",
    "multipart/alternative", "multipart/related", "message/rfc822", "text/plain", "text/html",
    "boundary=", "charset=", "utf-8", "iso-8859-1", "iso-2022-jp", "shift_jis", "utf-16",
    "quoted-printable", "base64", "7bit", "8bit", "binary", "format=flowed", "delsp=yes",
    "&nbsp;", "<p>", "</p>", "<pre>", "<br>", "=\r\n", "=20", "=C2=A0", "\r\n\r\n", "\r\n--",
    "--\r\n", ". ", "  ", "\xa0", "Content-Disposition: attachment", "; name*=",
]


class Finding(Exception):
    def __init__(self, kind: str, detail: str, tag: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.tag = tag  # what makes two findings of a kind different (for the summary)


def _charset(part: email.message.Message) -> str:
    cs = part.get_content_charset() or "ascii"
    try:
        import codecs

        codecs.lookup(cs)
        return cs
    except (LookupError, ValueError):
        return "latin-1"


def _leaves(raw: bytes) -> list[tuple[str, list[tuple[str, str]], bytes, str | None]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = []
    for p in msg.walk():
        heads = [(k, str(v)) for k, v in p.items()]
        if p.is_multipart():
            out.append((p.get_content_type(), heads, b"", None))
            continue
        payload = p.get_payload(decode=True)
        body = payload if isinstance(payload, bytes) else b""
        text = None
        if p.get_content_maintype() == "text":
            try:
                text = body.decode(_charset(p), "replace")
            except Exception:  # a codec that cannot even decode with "replace"
                text = body.decode("latin-1")
        out.append((p.get_content_type(), heads, body, text))
    return out


def same_but_whitespace(orig: bytes, copy: bytes) -> str | None:
    """None when the copy differs from the original only in text-part whitespace; else why."""
    a, b = _leaves(orig), _leaves(copy)
    if len(a) != len(b):
        return f"email package sees {len(a)} parts in the original, {len(b)} in the copy"
    for i, ((ta, ha, ba, xa), (tb, hb, bb, xb)) in enumerate(zip(a, b, strict=True)):
        if ta != tb or ha != hb:
            return f"part {i}: type or headers differ ({ta} / {tb})"
        if xa is None or xb is None:
            if ba != bb:
                return f"part {i} ({ta}, not text): decoded bytes differ"
        elif (sq := _SQUASH_HTML if ta == "text/html" else _SQUASH).sub(" ", xa) != \
                sq.sub(" ", xb):
            return f"part {i} ({ta}): text differs beyond whitespace"
    return None


def check_copy(data: bytes, copy: bytes, parts: list[textpart.TextPart], what: str) -> None:
    if copy == data:
        return
    if _BARE.search(copy):
        raise Finding("bare-cr-lf", f"{what}: bare CR or LF in the copy")
    long_in = {ln for ln in data.split(b"\r\n") if len(ln) > LINE_MAX}
    for ln in copy.split(b"\r\n"):
        if len(ln) > LINE_MAX and ln not in long_in:
            raise Finding("long-line", f"{what}: a {len(ln)}-octet line not in the input")
    if parts:
        first = min(p.start for p in parts)
        last = max(p.end for p in parts)
        if not copy.startswith(data[:first]) or not copy.endswith(data[last:]):
            raise Finding("outside-bytes", f"{what}: bytes outside the text bodies changed")
    why = same_but_whitespace(data, copy)
    if why is not None:
        defects = email_defects(data)
        if defects:  # the email package reads another structure than relay.mimewalk does
            raise Finding("parser-differential", f"{'+'.join(defects)}: {what}: {why}",
                          "+".join(defects))
        raise Finding("not-whitespace-only", f"{what}: {why}", re.sub(r"part \d+ ", "", why))


def email_defects(raw: bytes) -> list[str]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return sorted({type(d).__name__ for p in msg.walk() for d in p.defects})


def check(raw: bytes) -> None:
    """All invariants on one input; raises Finding (or the exception the relay raised)."""
    try:
        mime.text_parts(raw)  # the raw bytes too: must never raise
        data = policy.normalise_newlines(raw)
        p = fingerprint.prepare(data, SENDER, KEY_ID, KEY,
                                replace(SCHEME, word_rate=RATE, rules=RULES[0]))
        if _BARE.search(data):
            raise Finding("bare-cr-lf", "normalise_newlines left a bare CR or LF")
        copies = [(f"copy_for({r})", p.copy_for(r)) for r in RCPTS]
        if p.carriers:
            copies.append(("all carriers set", p._render([1] * p.carriers)))
            copies.append(("no carrier set", p._render([0] * p.carriers)))
    except Finding:
        raise
    except Exception as e:
        raise Finding("exception", f"{e.__class__.__name__}: {e}") from e
    for what, copy in copies:
        check_copy(data, copy, p._parts, what)


def finding_key(f: Finding) -> str:
    where = ""
    cause = f.__cause__
    if cause is not None:
        frames = [fr for fr in traceback.extract_tb(cause.__traceback__)
                  if "/relay/" in fr.filename]
        if frames:
            fr = frames[-1]
            where = f"{Path(fr.filename).name}:{fr.lineno}"
        return f"{f.kind}:{cause.__class__.__name__}:{where}"
    return f"{f.kind}:{f.tag[:60]}" if f.tag else f.kind


class Recorder:
    def __init__(self, out: Path, stop_on_first: bool) -> None:
        self.out = out
        self.stop_on_first = stop_on_first
        self.kinds: dict[str, tuple[int, str, Path]] = {}
        self.execs = 0

    def __call__(self, raw: bytes) -> None:
        self.execs += 1
        try:
            check(raw)
        except Finding as f:
            key = finding_key(f)
            n, detail, path = self.kinds.get(key, (0, f.detail, Path()))
            if n == 0:
                self.out.mkdir(parents=True, exist_ok=True)
                path = self.out / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)[:80]}.eml"
                path.write_bytes(raw)
                tb = ""
                if f.__cause__ is not None:
                    tb = "".join(traceback.format_exception(f.__cause__))
                path.with_suffix(".txt").write_text(f"{key}\n{f.detail}\n\n{tb}")
                print(f"\nFINDING {key}: {f.detail} -> {path}", flush=True)
            self.kinds[key] = (n + 1, detail, path)
            with open(self.out / "findings.log", "a") as log:
                log.write(f"{key}\t{path}\t{f.detail[:300]!r}\n")
            if self.stop_on_first:
                raise

    def summary(self) -> None:
        print(f"\nexecutions: {self.execs}; distinct findings: {len(self.kinds)}")
        for key, (n, detail, path) in sorted(self.kinds.items()):
            print(f"  {key}  x{n}  {detail[:150]}  reproducer: {path}")


def seeds() -> list[Path]:
    stdlib = sysconfig.get_paths()["stdlib"]
    return sorted(Path(p) for p in glob.glob(os.path.join(stdlib, "test", "test_email", "data",
                                                           "msg_*.txt")))


def run_atheris(rec: Recorder, seconds: int, corpus: Path, extra: list[str]) -> None:
    """In the child process: libFuzzer owns the process from here and exits at the end."""
    assert atheris is not None
    dict_file = rec.out / "mime.dict"
    dict_file.write_text("".join(
        '"' + "".join(f"\\x{b:02x}" for b in s.encode("latin-1")) + '"\n' for s in DICTIONARY))
    argv = [sys.argv[0], str(corpus), f"-max_total_time={seconds}", f"-dict={dict_file}",
            "-print_final_stats=1", "-max_len=65536", "-timeout=20", "-rss_limit_mb=4096",
            f"-artifact_prefix={rec.out}/", *extra]
    atheris.Setup(argv, rec)
    atheris.Fuzz()


def parent(args: argparse.Namespace, seed_files: list[Path]) -> int:
    """Run the atheris child, echo its progress, then summarise from the findings folder."""
    out: Path = args.findings
    out.mkdir(parents=True, exist_ok=True)
    (out / "findings.log").unlink(missing_ok=True)
    tmp = None
    corpus = args.corpus
    if corpus is None:
        tmp = Path(tempfile.mkdtemp(prefix="relay-fuzz-corpus-"))
        corpus = tmp
    corpus.mkdir(parents=True, exist_ok=True)
    for p in seed_files:
        shutil.copy(p, corpus / p.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--seconds",
           str(args.seconds), "--findings", str(out), "--corpus", str(corpus),
           "--rules", str(args.rules)]
    if args.stop_on_first:
        cmd.append("--stop-on-first")
    if args.libfuzzer:
        cmd += ["--", *args.libfuzzer]
    log_path = out / "fuzz.log"
    final = ""
    execs = ""
    t0 = time.monotonic()
    last = 0.0
    with open(log_path, "w") as log, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace") as child:
        assert child.stdout is not None
        for line in child.stdout:
            log.write(line)
            if line.startswith("FINDING") or "DONE" in line or "Traceback" in line:
                print(line.rstrip(), flush=True)
            if line.startswith("#") and "DONE" in line:
                final = line.strip()
            if line.startswith("stat::number_of_executed_units"):
                execs = line.split(":")[-1].strip()
            if ("\tpulse " in line or "\tNEW " in line or "\tREDUCE " in line) and \
                    time.monotonic() - last > 60:
                print(line.rstrip(), flush=True)
                last = time.monotonic()
        rc = child.wait()
    corpus_n = len(list(corpus.iterdir()))
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    kinds: dict[str, list[str]] = {}
    flog = out / "findings.log"
    if flog.exists():
        for row in flog.read_text().splitlines():
            key, path, detail = row.split("\t", 2)
            kinds.setdefault(key, [path, detail, 0])  # type: ignore[list-item]
            kinds[key][2] += 1  # type: ignore[operator]
    artifacts = sorted(p.name for p in out.iterdir()
                       if p.name.split("-")[0] in ("crash", "timeout", "oom", "leak", "slow"))
    print(f"\natheris (libFuzzer) run of {time.monotonic() - t0:.0f} s, exit status {rc}; "
          f"executions {execs or '?'}; final: {final or '?'}; corpus now {corpus_n} inputs")
    print(f"distinct findings: {len(kinds)}; libFuzzer artifacts (crash/timeout/oom): "
          f"{len(artifacts)}; log and reproducers in {out}")
    for key, (path, detail, n) in sorted(kinds.items()):
        print(f"  {key}  x{n}  {detail[:160]}\n    reproducer: {path}  "
              f"(python bench/fuzz_mime.py --replay {path})")
    for a in artifacts:
        print(f"  artifact {out / a}")
    return 1 if kinds or artifacts else 0


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[pos:pos + rng.randint(1, 16)]
        elif op == 1:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            b[pos:pos] = rng.choice(DICTIONARY).encode("latin-1")
        elif op == 3 and b:
            i = rng.randrange(len(b))
            b[i] = rng.randrange(256)
        elif op == 4:
            other = rng.choice(pool)
            s = rng.randrange(len(other) + 1)
            b[pos:pos] = other[s:s + rng.randint(1, 200)]
        elif op == 5 and b:
            s = rng.randrange(len(b))
            b[pos:pos] = b[s:s + rng.randint(1, 64)]
    return bytes(b)


def run_fallback(rec: Recorder, seconds: int, pool: list[bytes], seed: int) -> None:
    why = "atheris is not installed" if atheris is None else "--fallback given"
    print(f"FALLBACK ({why}): random byte-mutation loop over the same seeds and invariants "
          "(NOT coverage-guided)", flush=True)
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    for s in pool:
        rec(s)
    while time.monotonic() < end:
        rec(mutate(rng, rng.choice(pool), pool))
    rec.summary()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--findings", type=Path, default=None,
                    help="where reproducers and the log go (default: a new temp folder)")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="working corpus folder (default: a temp folder, seeded)")
    ap.add_argument("--stop-on-first", action="store_true", help="stop at the first finding")
    ap.add_argument("--fallback", action="store_true", help="force the random mutation loop")
    ap.add_argument("--seed", type=int, default=1, help="fallback loop only")
    ap.add_argument("--replay", nargs="+", type=Path, help="check these inputs and exit")
    ap.add_argument("--rules", type=int, default=carriers.RULES,
                    help="carrier rules for prepare() (0: before the MIME ambiguity check)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags (after --)")
    args = ap.parse_args()
    RULES[0] = args.rules
    if args.replay:
        bad = 0
        for f in args.replay:
            try:
                check(f.read_bytes())
                print(f"{f}: OK")
            except Finding as e:
                bad += 1
                print(f"{f}: {e.kind}: {e.detail}")
                if e.__cause__ is not None:
                    traceback.print_exception(e.__cause__)
        return 1 if bad else 0
    if args.findings is None:
        args.findings = Path(tempfile.mkdtemp(prefix="relay-fuzz-findings-"))
    rec = Recorder(args.findings, args.stop_on_first)
    if args.child:
        run_atheris(rec, args.seconds, args.corpus, args.libfuzzer)
        return 0
    seed_files = seeds()
    print(f"seeds: {len(seed_files)} files from {seed_files[0].parent if seed_files else '?'}",
          flush=True)
    if atheris is None or args.fallback:
        run_fallback(rec, args.seconds, [p.read_bytes() for p in seed_files], args.seed)
        print(f"reproducers in {args.findings}")
        return 1 if rec.kinds else 0
    return parent(args, seed_files)


if __name__ == "__main__":
    sys.exit(main())
