"""End-to-end attribution benchmark through the real relay.

1. An aiosmtpd sink on 127.0.0.1 (port 0) stores every copy it receives, by message and recipient.
2. `python -m relay serve --config TMP/config.toml` runs as a subprocess: fresh key and database in
   a temp dir, upstream = the sink, listening on a free port.
3. All-staff messages (text/plain wrapped at 72, quoted-printable, plus a text/html alternative;
   3-6 paragraphs of English or French prose from the Debian Reference, disjoint between
   messages) go through the relay to N recipients each (one SMTP transaction per message unless
   --batch); the client waits for 250. The sink must hold exactly N distinct copies of each,
   differing from the original only in the whitespace of the text parts.
4. The relay is stopped (SIGTERM, must exit 0) and, per condition, T trials pick a random message,
   a random leaker (or colluders) and a random excerpt of the copy, apply the condition and
   decode: the first trial of every condition through `python -m relay decode --json --config`
   (checked against the in-process verdict), all of them through relay.decoding.decode over the
   same Store. A verdict counts as identified (the leaker, or one of the colluders, is named),
   wrong (anybody else is named), inconclusive or no_match.

    python bench/attribution.py                   # 1,000 recipients, 40 trials per condition
    python bench/attribution.py --recipients 10000 --trials 100 --jobs 2
    python bench/attribution.py --clients         # mail as Outlook, Gmail, Apple Mail,
                                                  # Thunderbird and a plain base64 client write it

--clients (run_clients): one English and one French message per client shape of
tests/clients.py (prose from /usr/share/common-licenses and the Debian Reference), each to N
recipients through the relay; every copy must differ from the original only in text-body
whitespace as Python's email package reads it (clients.whitespace_only). Per shape: faithful
60/100-word excerpts of the plain rendering with line breaks kept and with them joined by a
space, 60/100-word pastes of the rendered HTML (NBSP kept), the original text; plus unrelated
text; and the share of ordinary word gaps each copy changes in each rendering.

Prints one Markdown table and saves it to bench/out/attribution.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import html
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from aiosmtpd.smtp import SMTP as SMTPServer  # noqa: E402
from profiles import (  # noqa: E402
    SENDER,
    build_message,
    code_version,
    gap_changes,
    load_paragraphs,
    part_text,
)

from relay import keys  # noqa: E402
from relay.decoding import decode  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.tokens import excerpt_words, is_sentence_gap  # noqa: E402

OUT = HERE / "out"
FILLERS = {"en": ["indeed", "also", "notably", "however", "clearly", "today"],
           "fr": ["aussi", "notamment", "donc", "cependant", "ainsi", "bien"]}


# --- the sink ---------------------------------------------------------------------------------

class Sink:
    """An SMTP server that keeps every copy: (Message-ID, recipient) -> [bytes]."""

    def __init__(self) -> None:
        self.copies: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        self.transactions = 0
        self.lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd)
        data = envelope.original_content or envelope.content
        m = re.search(rb"^Message-ID:[ \t]*(\S+)", data, re.M | re.I)
        mid = m.group(1).decode("ascii", "replace") if m else ""
        with self.lock:
            self.transactions += 1
            for r in envelope.rcpt_tos:
                self.copies[(mid, r)].append(bytes(data))
        return "250 2.0.0 stored"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop

            def factory() -> SMTPServer:
                return SMTPServer(self, hostname="sink.test", decode_data=False,
                                  enable_SMTPUTF8=True, data_size_limit=0)

            self._server = loop.run_until_complete(
                loop.create_server(factory, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="sink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            sys.exit("sink did not start")

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --- the relay --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, listen_port: int, upstream_port: int, profile: str,
                 threshold: float) -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(f"""\
[listen]
host = "127.0.0.1"
port = {listen_port}

[upstream]
host = "127.0.0.1"
port = {upstream_port}

[policy]
lists = ["all-staff@example.com"]

[store]
path = "relay.db"

[signature]
key_file = "relay.key"
profile = "{profile}"

[decode]
threshold = {threshold!r}
ocr_languages = "eng+fra"
""")
    return cfg


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def start_relay(cfg: Path, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 (kept open for the child's life)
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--config", str(cfg)],
                            cwd=cfg.parent, env=env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"relay serve exited with status {proc.returncode} at start; "
                               f"log: {tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"relay serve did not greet on port {port} within 30 s; "
                       f"log: {tail(log_path)}")


def stop_relay(proc: subprocess.Popen) -> int | None:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(35)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:])


def send(port: int, raw: bytes, rcpts: list[str], batch: int) -> tuple[int, float, list[str]]:
    """Send raw to rcpts through the relay, `batch` recipients per transaction; retry a 4xx up
    to 5 times. Returns (transactions, seconds, problems)."""
    problems: list[str] = []
    txns = 0
    t0 = time.time()
    for i in range(0, len(rcpts), batch):
        chunk = rcpts[i:i + batch]
        for attempt in range(6):
            with smtplib.SMTP("127.0.0.1", port, timeout=600) as s:
                s.ehlo("bench.test")
                code, resp = s.mail(SENDER)
                if code != 250:
                    problems.append(f"MAIL: {code} {resp!r}")
                    break
                for r in chunk:
                    code, resp = s.rcpt(r)
                    if code != 250:
                        problems.append(f"RCPT {r}: {code} {resp!r}")
                code, resp = s.data(raw)
                txns += 1
            if code == 250:
                break
            problems.append(f"DATA attempt {attempt + 1}: {code} {resp.decode(errors='replace')}")
            if code >= 500:
                break
            time.sleep(2)
    return txns, time.time() - t0, problems


# --- text manipulation ------------------------------------------------------------------------

def split_ws(text: str) -> tuple[list[str], list[str]]:
    """Words (runs of non-whitespace) and the separators between consecutive words."""
    toks = list(re.finditer(r"\S+", text))
    words = [m.group() for m in toks]
    seps = [text[toks[k].end():toks[k + 1].start()] for k in range(len(toks) - 1)]
    return words, seps


def join_ws(words: list[str], seps: list[str]) -> str:
    out = [words[0]]
    for s, w in zip(seps, words[1:], strict=True):
        out.append(s)
        out.append(w)
    return "".join(out)


def _grams(text: str, k: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + k]) for i in range(len(words) - k + 1)}


def window(text: str, n: int, rng: random.Random) -> tuple[list[str], list[str], int]:
    words, seps = split_ws(text)
    n = min(n, len(words))
    s = rng.randrange(0, len(words) - n + 1)
    return words[s:s + n], seps[s:s + n - 1], s


def is_inline(sep: str) -> bool:
    return sep in (" ", "  ", "\u00a0 ", " \u00a0")


def mistype(word: str, rng: random.Random) -> str:
    pos = [i for i, c in enumerate(word) if c.isalpha()]
    if len(pos) < 2:
        return word + "x"
    i = rng.choice(pos)
    c = word[i].lower()
    new = rng.choice([x for x in "abcdefghijklmnopqrstuvwxyz" if x != c])
    return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1:]


def flip_and_typo(words: list[str], seps: list[str], gap_rate: float, typo_rate: float,
                  rng: random.Random) -> str:
    words, seps = list(words), list(seps)
    inline = [k for k, s in enumerate(seps) if is_inline(s)]
    for k in rng.sample(inline, round(gap_rate * len(inline))):
        seps[k] = " " if len(seps[k]) == 2 else "  "
    for k in rng.sample(range(len(words)), round(typo_rate * len(words))):
        words[k] = mistype(words[k], rng)
    return join_ws(words, seps)


def cut_mid_sentence(text: str, n: int, rng: random.Random) -> str:
    """n words starting and ending inside a sentence, first and last word cut in half."""
    words, seps = split_ws(text)
    for _ in range(200):
        s = rng.randrange(1, len(words) - n)
        e = s + n - 1
        if not is_sentence_gap(words[s - 1], words[s]) and not is_sentence_gap(words[e],
                                                                               words[e + 1]):
            break
    w = words[s:s + n]
    w[0] = w[0][len(w[0]) // 2:] or w[0]
    w[-1] = w[-1][:max(1, len(w[-1]) // 2)]
    return join_ws(w, seps[s:s + n - 1])


def reorder_drop_insert(text: str, n: int, lang: str, rate: float, rng: random.Random) -> str:
    """n words; paragraphs (or, inside one paragraph, sentence groups) put in another order;
    `rate` of the words dropped and as many filler words inserted (single spaces)."""
    words, seps, _ = window(text, n, rng)
    # segments: split at paragraph breaks, else at sentence gaps
    cuts = [k for k, s in enumerate(seps) if "\n\n" in s]
    if not cuts:
        sent = [k for k, s in enumerate(seps) if is_sentence_gap(words[k], words[k + 1])]
        cuts = sorted(rng.sample(sent, min(2, len(sent))))
    segs, start = [], 0
    for k in cuts + [len(words) - 1]:
        segs.append((words[start:k + 1], seps[start:k]))
        start = k + 1
    segs = [s for s in segs if s[0]]
    if len(segs) >= 2:
        order = list(range(len(segs)))
        while order == sorted(order):
            rng.shuffle(order)
        segs = [segs[i] for i in order]
    w: list[str] = []
    sp: list[str] = []
    for i, (sw, ss) in enumerate(segs):
        if i:
            sp.append("\n\n")
        w += sw
        sp += ss
    k = round(rate * len(w))
    for _ in range(k):  # drop a word (and the gap before it)
        i = rng.randrange(1, len(w))
        del w[i]
        del sp[i - 1]
    for _ in range(k):  # insert a filler word with single spaces
        i = rng.randrange(1, len(w))
        w.insert(i, rng.choice(FILLERS[lang]))
        sp.insert(i - 1, " ")
        sp[i] = sp[i] if sp[i] != "  " else " "  # a retyped insertion: single gaps around it
    return join_ws(w, sp)


def reflow(words: list[str], seps: list[str], width: int) -> str:
    """A news site's re-flow: every line break becomes a space, then lines are broken again
    at `width` columns (a gap where a line now breaks is written as a newline)."""
    seps = [" " if "\n" in s else s for s in seps]
    out, line = [words[0]], len(words[0])
    for s, w in zip(seps, words[1:], strict=True):
        if line + len(s) + len(w) > width:
            out += ["\n", w]
            line = len(w)
        else:
            out += [s, w]
            line += len(s) + len(w)
    return "".join(out)


def html_paragraphs(html_part: str) -> list[str]:
    """Inner HTML of the <p> elements of the HTML part."""
    return re.findall(r"<p>(.*?)</p>", html_part, re.S)


def rendered_copy(html_part: str, nbsp_as_space: bool = False) -> str:
    """What a reader copies out of the rendered HTML: tags gone, entities decoded, runs of ASCII
    whitespace collapsed (CSS white-space: normal) but U+00A0 kept, paragraphs on their own
    lines. nbsp_as_space: the clipboard turned U+00A0 into a space (some browsers do)."""
    paras = []
    for frag in html_paragraphs(html_part):
        t = html.unescape(re.sub(r"<[^>]+>", "", frag))
        t = re.sub(r"[ \t\n\r\f]+", " ", t).strip(" \t\n\r\f")
        paras.append(t.replace("\u00a0", " ") if nbsp_as_space else t)
    return "\n\n".join(paras)


def mix(texts: list[str], normalise: bool, rng: random.Random, n: int) -> str:
    """Colluders' copies (same words, different gaps) over the same n-word window: where their
    gaps differ, take one colluder's version at random, or a single space (normalise)."""
    split = [split_ws(t) for t in texts]
    words = split[0][0]
    assert all(s[0] == words for s in split), "colluders' copies differ in words"
    n = min(n, len(words))
    s = rng.randrange(0, len(words) - n + 1)
    seps = []
    for k in range(s, s + n - 1):
        opts = [sp[1][k] for sp in split]
        if len(set(opts)) == 1:
            seps.append(opts[0])
        else:
            seps.append(" " if normalise else rng.choice(opts))
    return join_ws(words[s:s + n], seps)


# --- conditions and jobs ----------------------------------------------------------------------

@dataclass
class Job:
    cond: str
    kind: str  # "text" or "image"
    payload: object  # the excerpt text, or (page html, width, height, scale, fmt)
    truth: tuple[str, ...]  # recipients whose naming is correct; () = nobody's copy
    cli: bool = False


@dataclass
class Result:
    verdict: str
    top: str | None
    bits: int
    words: int = 0
    cli: dict | None = None
    error: str | None = None
    seconds: float = 0.0
    mismatched: int | None = None  # the true leaker's disagreements, when ranked in the top 10


@dataclass
class Cond:
    name: str
    target: str  # human-readable target
    min_share: float | None = None  # identified share required
    expect: str = "identified"  # identified / never / no_match
    results: list[tuple[Result, tuple[str, ...]]] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class Msg:
    lang: str
    raw: bytes
    msgid: str
    paras: list[str]
    plain: dict[str, str] = field(default_factory=dict)  # recipient -> text/plain of the copy
    html: dict[str, str] = field(default_factory=dict)


_W: dict = {}


def _worker_init(db: str, key_file: str, threshold: float, ocr_langs: str) -> None:
    _W["store"] = Store(Path(db), create=False)
    _W["ring"] = keys.load(Path(key_file))
    _W["threshold"] = threshold
    _W["langs"] = ocr_langs


def _render(payload) -> bytes:
    import render  # tests/render.py

    page, width, height, scale, fmt = payload
    return render.render_html(page, width=width, height=height, scale=scale, fmt=fmt)


def run_job(job: Job, cfg_path: str | None) -> Result:
    t0 = time.time()
    try:
        if job.kind == "image":
            data = _render(job.payload)
            from relay.ocr import read_image

            words = read_image(data, _W["langs"])
            suffix = "." + job.payload[4]
        else:
            data = job.payload.encode("utf-8")
            words = excerpt_words(job.payload)
            suffix = ".txt"
        rep = decode([words], _W["store"], _W["ring"], _W["threshold"])
        res = Result(rep.verdict, rep.candidates[0].recipient if rep.candidates else None,
                     rep.excerpts[0]["bits_observed"] if rep.excerpts else 0, len(words))
        mine = [c for c in rep.candidates if c.recipient in job.truth]
        if mine:
            res.mismatched = mine[0].bits_observed - mine[0].bits_matching
        if job.cli and cfg_path:
            with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
                f.write(data)
                name = f.name
            try:
                proc = subprocess.run([sys.executable, "-m", "relay", "decode", "--json",
                                       "--config", cfg_path, name], capture_output=True,
                                      env=env(), cwd=ROOT, timeout=300)
            finally:
                os.unlink(name)
            if proc.returncode != 0:
                res.cli = {"error": f"exit {proc.returncode}: "
                                    f"{proc.stderr.decode(errors='replace').strip()[-300:]}"}
            else:
                out = json.loads(proc.stdout)
                res.cli = {"verdict": out["verdict"],
                           "top": out["candidates"][0]["recipient"] if out["candidates"]
                           else None}
    except Exception as e:  # reported per condition, never hides a verdict
        res = Result("error", None, 0, error=f"{e.__class__.__name__}: {e}")
    res.seconds = time.time() - t0
    return res


def make_conditions(args) -> list[Cond]:
    c = [
        Cond("faithful plain, 40 words", "-"),
        Cond("faithful plain, 60 words", ">= 80%", 0.80),
        Cond("faithful plain, 100 words", ">= 95%", 0.95),
        Cond("faithful plain, 120 words", "-"),
        Cond("copy-paste of rendered HTML (NBSP + space), 100 words", ">= 95%", 0.95),
        Cond("copy-paste of rendered HTML, NBSP pasted as space, 100 words", "-"),
        Cond("100 words, 5% gaps flipped + 2% words mistyped", ">= 80%", 0.80),
        Cond("cut mid-sentence (partial first/last word), 100 words", "-"),
        Cond("120 words, paragraphs reordered, 3% dropped + 3% inserted", "-"),
        Cond("re-flowed by a news site (line breaks moved, 60 cols), 100 words", "-"),
        Cond("retyped (all doubled gaps lost), 100 words", "-"),
        Cond("unmodified original text, 100 words", "never identified", expect="never"),
        Cond("unrelated text (GPL-3), 100 words", "no_match", expect="no_match"),
        Cond(f"2 colluders, mixed, {args.colluder_words} words", "-"),
        Cond(f"2 colluders, normalised, {args.colluder_words} words", "-"),
        Cond(f"3 colluders, mixed, {args.colluder_words} words", "-"),
        Cond(f"3 colluders, normalised, {args.colluder_words} words", "-"),
    ]
    if not args.no_screenshots:
        c += [
            Cond("screenshot, HTML copy, 1x PNG, 2-3 paragraphs", ">= 95%", 0.95),
            Cond("screenshot, HTML copy, 2x PNG, 2-3 paragraphs", ">= 95%", 0.95),
            Cond("screenshot, HTML copy, 1x JPEG, 2-3 paragraphs", ">= 95%", 0.95),
            Cond("screenshot, HTML copy, 2x JPEG, 2-3 paragraphs", ">= 95%", 0.95),
            Cond("screenshot, plain copy monospace pre-wrap, 1x PNG, 2-3 paragraphs",
                 ">= 95%", 0.95),
            Cond("screenshot, plain copy monospace pre-wrap, 1x JPEG, 2-3 paragraphs",
                 ">= 95%", 0.95),
        ]
    return c


def screenshot_job(cond: str, msg: Msg, leaker: str, which: str, scale: float, fmt: str,
                   rng: random.Random) -> Job:
    import render  # tests/render.py

    k = rng.choice((2, 3))
    if which == "html":
        frags = html_paragraphs(msg.html[leaker])
        i = rng.randrange(0, len(frags) - k + 1)
        chosen = frags[i:i + k]
        text_len = sum(len(html.unescape(f)) for f in chosen)
        lines = text_len // 80 + 2 * k + 2
        page = render.html_mail(chosen, font_px=15, width_px=640)
        width, height = 680, render.page_height(lines, font_px=15, margin=60)
    else:
        paras = msg.plain[leaker].strip("\n").split("\n\n")
        i = rng.randrange(0, len(paras) - k + 1)
        text = "\n\n".join(paras[i:i + k])
        page = render.plain_mail(text, monospace=True, font_px=14, width_px=680)
        width, height = 720, render.page_height(text.count("\n") + 3, font_px=14, margin=60)
    return Job(cond, "image", (page, width, height, scale, fmt), (leaker,))


def build_jobs(conds: list[Cond], msgs: list[Msg], rcpts: list[str], args,
               unrelated: list[str]) -> list[Job]:
    rng = random.Random(args.seed * 7919 + 1)
    jobs: list[Job] = []
    names = {c.name for c in conds}
    for cond in conds:
        for t in range(args.trials if "screenshot" not in cond.name else args.shot_trials):
            msg = rng.choice(msgs)
            leaker = rng.choice(rcpts)
            plain = msg.plain[leaker]
            name = cond.name
            truth: tuple[str, ...] = (leaker,)
            if name.startswith("faithful plain"):
                n = int(re.search(r"(\d+) words", name).group(1))
                w, s, _ = window(plain, n, rng)
                text = join_ws(w, s)
            elif name.startswith("copy-paste"):
                w, s, _ = window(rendered_copy(msg.html[leaker], "as space" in name), 100, rng)
                text = join_ws(w, s)
            elif name.startswith("100 words, 5% gaps"):
                w, s, _ = window(plain, 100, rng)
                text = flip_and_typo(w, s, 0.05, 0.02, rng)
            elif name.startswith("cut mid-sentence"):
                text = cut_mid_sentence(plain, 100, rng)
            elif name.startswith("120 words, paragraphs"):
                text = reorder_drop_insert(plain, 120, msg.lang, 0.03, rng)
            elif name.startswith("re-flowed"):
                w, s, _ = window(plain, 100, rng)
                text = reflow(w, s, 60)
            elif name.startswith("retyped"):
                w, s, _ = window(plain, 100, rng)
                text = join_ws(w, [" " if is_inline(x) else x for x in s])
            elif name.startswith("unmodified original"):
                w, s, _ = window(part_text(msg.raw), 100, rng)
                text, truth = join_ws(w, s), ()
            elif name.startswith("unrelated"):
                w, s, _ = window(rng.choice(unrelated), 100, rng)
                text, truth = join_ws(w, s), ()
            elif "colluders" in name:
                k = int(name[0])
                group = rng.sample(rcpts, k)
                text = mix([msg.plain[r] for r in group], "normalised" in name, rng,
                           args.colluder_words)
                truth = tuple(group)
            elif name.startswith("screenshot"):
                which = "html" if "HTML" in name else "plain"
                scale = 2.0 if "2x" in name else 1.0
                fmt = "jpg" if "JPEG" in name else "png"
                job = screenshot_job(name, msg, leaker, which, scale, fmt, rng)
                job.cli = t < args.cli_trials
                jobs.append(job)
                continue
            else:
                raise AssertionError(name)
            jobs.append(Job(name, "text", text, truth, cli=t < args.cli_trials))
    assert {j.cond for j in jobs} <= names
    return jobs


# --- main -------------------------------------------------------------------------------------

def squash(s: str) -> str:
    return re.sub(r"(?:&nbsp;|[ \u00a0])+", " ", s)


def pick_messages(args, rng: random.Random) -> list[tuple[str, list[str]]]:
    pools = {lang: load_paragraphs(lang) for lang in ("en", "fr")}
    for p in pools.values():
        rng.shuffle(p)
    out = []
    for i in range(args.messages):
        lang = ("en", "fr")[i % 2]
        pool = pools[lang]
        while True:
            k = rng.randint(3, 6)
            if len(pool) < k:
                sys.exit(f"not enough {lang} paragraphs for {args.messages} messages")
            paras, rest = pool[:k], pool[k:]
            if sum(len(p.split()) for p in paras) >= args.min_message_words:
                pools[lang] = rest
                break
            pool.append(pool.pop(0))  # rotate and try another draw
        out.append((lang, paras))
    return out


def fmt_table(conds: list[Cond]) -> str:
    head = ["condition", "trials", "identified", "wrong", "inconclusive", "no_match",
            "median bits observed", "median words", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in conds:
        if c.skipped:
            lines.append(f"| {c.name} | 0 | - | - | - | - | - | - | {c.target} | NOT RUN: "
                         f"{c.skipped} |")
            continue
        r = c.results
        n = len(r)
        ident = sum(x.verdict == "identified" and x.top in x_truth for x, x_truth in r)
        wrong = sum(x.verdict == "identified" and x.top not in x_truth for x, x_truth in r)
        inc = sum(x.verdict == "inconclusive" for x, _ in r)
        nom = sum(x.verdict == "no_match" for x, _ in r)
        err = sum(x.verdict == "error" for x, _ in r)
        bits = statistics.median(x.bits for x, _ in r) if r else 0
        words = statistics.median(x.words for x, _ in r) if r else 0
        if c.expect == "never":
            met = wrong == 0 and ident == 0
        elif c.expect == "no_match":
            met = nom == n and wrong == 0
        elif c.min_share is not None:
            met = wrong == 0 and n > 0 and ident / n >= c.min_share
        else:
            met = wrong == 0
        pct = f" ({100 * ident / n:.0f}%)" if n else ""
        errs = f"; {err} errors" if err else ""
        lines.append(f"| {c.name} | {n} | {ident}{pct} | {wrong} | {inc} | {nom} | {bits:g} | "
                     f"{words:g} | {c.target}; 0 wrong | "
                     f"{'yes' if met and not err else 'NO'}{errs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipients", type=int, default=1000, help="recipients per message")
    ap.add_argument("--messages", type=int, default=4,
                    help="all-staff messages (alternately English and French)")
    ap.add_argument("--trials", type=int, default=40, help="trials per text condition")
    ap.add_argument("--shot-trials", type=int, default=None,
                    help="trials per screenshot condition (default: --trials)")
    ap.add_argument("--colluder-words", type=int, default=200,
                    help="excerpt length of the collusion conditions (at most a message)")
    ap.add_argument("--cli-trials", type=int, default=1,
                    help="trials per condition also decoded with `python -m relay decode`")
    ap.add_argument("--batch", type=int, default=0,
                    help="recipients per SMTP transaction (default: all in one)")
    ap.add_argument("--profile", default="standard", help="signature profile of the relay")
    ap.add_argument("--threshold", type=float, default=1e-6)
    ap.add_argument("--min-message-words", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2, help="decode worker processes")
    ap.add_argument("--no-screenshots", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, db, log)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", action="store_true",
                    help="client-shaped messages (tests/clients.py) and their conditions")
    args = ap.parse_args(argv)
    if args.shot_trials is None:
        args.shot_trials = args.trials
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    live: list = []  # clean-ups for whatever was started, run even on failure
    try:
        return run_clients(args, tmp, live) if args.clients else run(args, tmp, live)
    finally:
        for stop in reversed(live):
            stop()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args, tmp: Path, live: list) -> int:
    batch = args.batch or args.recipients
    t_start = time.time()
    rng = random.Random(args.seed)
    notes: list[str] = []

    def note(s: str) -> None:
        notes.append(s)
        print("#", s, file=sys.stderr, flush=True)

    sink = Sink()
    sink.start()
    live.append(sink.stop)
    listen = free_port()
    cfg = write_config(tmp, listen, sink.port, args.profile, args.threshold)
    log_path = tmp / "relay.log"
    proc = start_relay(cfg, listen, log_path)
    live.append(lambda: proc.poll() is None and stop_relay(proc))
    note(f"relay serve pid {proc.pid} on 127.0.0.1:{listen}, upstream sink on "
         f"127.0.0.1:{sink.port}, temp dir {tmp}")

    # --- fan-out ---
    rcpts = [f"staff{i:05d}@example.com" for i in range(args.recipients)]
    msgs: list[Msg] = []
    fan_ok = True
    total_copies = 0
    total_secs = 0.0
    for i, (lang, paras) in enumerate(pick_messages(args, rng)):
        msgid = f"<bench-{args.seed}-{i}-{lang}@example.com>"
        raw = build_message(paras, f"Note de service {i}" if lang == "fr" else
                            f"Staff notice {i}", msgid, html_part=True)
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # SMTP wants CRLF
        txns, secs, problems = send(listen, raw, rcpts, batch)
        total_secs += secs
        total_copies += len(rcpts)
        note(f"message {i} ({lang}, {len(paras)} paragraphs, "
             f"{sum(len(p.split()) for p in paras)} words, {len(raw)} bytes): "
             f"{txns} transaction(s), {secs:.1f} s, {len(rcpts) / secs:.0f} copies/s"
             + (f"; PROBLEMS: {problems[:3]}" if problems else ""))
        fan_ok &= not problems
        msgs.append(Msg(lang, raw, msgid, paras))
    time.sleep(0.5)
    rc = stop_relay(proc)
    note(f"relay serve stopped on SIGTERM: exit status {rc}")
    if rc != 0:
        note(f"relay log tail: {tail(log_path)}")
    sink.stop()

    # --- what the sink got ---
    orig_parts = {}
    bad_copies = 0
    shares: dict[str, list[float]] = {"text/plain": [], "text/html": []}
    for m in msgs:
        got = {r: sink.copies.get((m.msgid, r), []) for r in rcpts}
        missing = [r for r, v in got.items() if not v]
        dup = [r for r, v in got.items() if len(v) > 1]
        distinct = len({v[0] for v in got.values() if v})
        extra = {r for (mid, r) in sink.copies if mid == m.msgid} - set(rcpts)
        note(f"sink, {m.msgid}: {sum(1 for v in got.values() if v)} recipients with a copy, "
             f"{distinct} distinct, {len(dup)} duplicated, {len(missing)} missing, "
             f"{len(extra)} unexpected")
        fan_ok &= not missing and not dup and distinct == len(rcpts) and not extra
        o_plain, o_html = part_text(m.raw), part_text(m.raw, "html")
        orig_parts[m.msgid] = (o_plain, o_html)
        for r, v in got.items():
            if not v:
                continue
            m.plain[r] = part_text(v[0])
            m.html[r] = part_text(v[0], "html")
            if squash(m.plain[r]) != squash(o_plain) or squash(m.html[r]) != squash(o_html):
                bad_copies += 1
                continue
            for kind, (o, c) in (("text/plain", (o_plain, m.plain[r])),
                                 ("text/html", (rendered_copy(o_html), rendered_copy(m.html[r])))):
                words, changed, _, _ = gap_changes(o, c)
                shares[kind].append(changed / words)
    note(f"copies whose text parts differ from the original other than in spaces: {bad_copies}")
    for kind, sh in shares.items():
        if sh:
            note(f"ordinary word gaps changed per copy, {kind} as a reader sees it: mean "
                 f"{statistics.mean(sh):.2%}, max {max(sh):.2%}; copies over one in six: "
                 f"{sum(x > 1 / 6 for x in sh)} of {len(sh)}")
    fan_ok &= bad_copies == 0
    if not all(m.plain for m in msgs):
        sys.exit("no copies to attribute: the fan-out failed (see notes above)")
    rcpts_ok = [r for r in rcpts if all(r in m.plain for m in msgs)]

    # --- trials ---
    conds = make_conditions(args)
    shots_ok, why = screenshots_available()
    if not shots_ok:
        for c in conds:
            if c.name.startswith("screenshot"):
                c.skipped = why
        note(f"screenshots not run: {why}")
    unrelated = [re.sub(r"\s+", " ", p).strip() for p in
                 Path("/usr/share/common-licenses/GPL-3").read_text().split("\n\n")]
    unrelated = [p for p in unrelated if len(p.split()) >= 110]
    jobs = build_jobs([c for c in conds if not c.skipped], msgs, rcpts_ok, args, unrelated)
    by_name = {c.name: c for c in conds}
    t_dec = time.time()
    cli_mismatch: list[str] = []
    db = tmp / "relay.db"
    key_file = tmp / "relay.key"
    with cf.ProcessPoolExecutor(max_workers=args.jobs, initializer=_worker_init,
                                initargs=(str(db), str(key_file), args.threshold,
                                          "eng+fra")) as ex:
        futs = {ex.submit(run_job, j, str(cfg)): j for j in jobs}
        for fut in cf.as_completed(futs):
            j = futs[fut]
            res = fut.result()
            by_name[j.cond].results.append((res, j.truth))
            if res.error:
                note(f"{j.cond}: error: {res.error}")
            if res.cli is not None:
                same = res.cli.get("verdict") == res.verdict and res.cli.get("top") == res.top
                if not same:
                    cli_mismatch.append(f"{j.cond}: cli {res.cli} vs in-process "
                                        f"{res.verdict}/{res.top}")
    n_cli = sum(1 for c in conds for r, _ in c.results if r.cli is not None)
    note(f"decoding: {len(jobs)} trials in {time.time() - t_dec:.0f} s with {args.jobs} "
         f"workers; {n_cli} also through `python -m relay decode --json` "
         f"({len(cli_mismatch)} disagreeing with the in-process verdict)")
    for s in cli_mismatch:
        note("CLI MISMATCH " + s)
    for c in conds:
        if not c.results:
            continue
        secs = statistics.mean(r.seconds for r, _ in c.results)
        missed = sorted((r.words, r.bits, -1 if r.mismatched is None else r.mismatched)
                        for r, truth in c.results if truth and r.verdict != "identified")
        extra = ""
        if missed and (c.min_share is not None or c.name.startswith("screenshot")):
            extra = ("; not identified at (words, bits, leaker's disagreements): "
                     + ", ".join(f"({w}, {b}, {d if d >= 0 else '-'})"
                                 for w, b, d in missed[:12])
                     + (" ..." if len(missed) > 12 else ""))
        note(f"{c.name}: {secs:.2f} s per trial{extra}")

    table = fmt_table(conds)
    head = (f"Attribution through the real relay (`python -m relay serve`, profile "
            f"{args.profile}): {len(msgs)} all-staff messages (English and French, 3-6 "
            f"paragraphs each, text/plain + text/html) to {args.recipients:,} recipients each; "
            f"threshold {args.threshold:g}; seed {args.seed}. Fan-out: {total_copies:,} copies "
            f"in {total_secs:.1f} s ({total_copies / max(total_secs, 1e-9):.0f} copies/s), "
            f"sink check {'passed' if fan_ok else 'FAILED'}.\n")
    foot = ("\n'identified': the leaker (or one of the colluders) named with false-match "
            "probability <= threshold; 'wrong': anybody else named (for the original and "
            "unrelated text, anybody named). Median bits: signature gaps read per excerpt by the "
            "in-process decode. Excerpt lengths are words of the copy (whitespace-separated).")
    runtime = f"\n{code_version()}. Runtime: {time.time() - t_start:.0f} s."
    text = head + "\n" + table + "\n" + foot + "\n\nNotes:\n" + "\n".join(
        f"- {s}" for s in notes) + "\n" + runtime + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "attribution.md").write_text(text)
    return 0


# --- client shapes (--clients) -----------------------------------------------------------------

def client_conditions(shape: str) -> list[Cond]:
    c = [Cond(f"{shape}: faithful plain, 60 words, line breaks kept", ">= 80%", 0.80),
         Cond(f"{shape}: faithful plain, 60 words, line breaks joined", ">= 80%", 0.80),
         Cond(f"{shape}: faithful plain, 100 words, line breaks kept", ">= 95%", 0.95),
         Cond(f"{shape}: faithful plain, 100 words, line breaks joined", ">= 95%", 0.95)]
    if shape != "plain_b64":
        c += [Cond(f"{shape}: copy-paste of rendered HTML, 60 words", ">= 80%", 0.80),
              Cond(f"{shape}: copy-paste of rendered HTML, 100 words", ">= 95%", 0.95)]
    c.append(Cond(f"{shape}: unmodified original text, 100 words", "never identified",
                  expect="never"))
    return c


def client_jobs(conds: list[Cond], msgs: dict[str, list[Msg]], rcpts: list[str], args,
                unrelated: list[str]) -> list[Job]:
    import clients  # tests/clients.py

    rng = random.Random(args.seed * 7919 + 2)
    jobs: list[Job] = []
    for cond in conds:
        shape, _, what = cond.name.partition(": ")
        for t in range(args.trials):
            truth: tuple[str, ...] = ()
            if shape == "all shapes":  # unrelated text
                w, s, _ = window(rng.choice(unrelated), 100, rng)
                jobs.append(Job(cond.name, "text", join_ws(w, s), (), cli=t < args.cli_trials))
                continue
            msg = rng.choice(msgs[shape])
            leaker = rng.choice(rcpts)
            n = int(re.search(r"(\d+) words", what).group(1))
            if what.startswith("faithful plain"):
                w, s, _ = window(msg.plain[leaker], n, rng)
                if "joined" in what:
                    s = [" " if "\n" in x else x for x in s]
                truth = (leaker,)
            elif what.startswith("copy-paste"):
                w, s, _ = window(msg.html[leaker], n, rng)
                truth = (leaker,)
            elif what.startswith("unmodified original"):
                w, s, _ = window(clients.plain_rendering(msg.raw) or "", n, rng)
            else:
                raise AssertionError(cond.name)
            jobs.append(Job(cond.name, "text", join_ws(w, s), truth, cli=t < args.cli_trials))
    return jobs


def run_clients(args, tmp: Path, live: list) -> int:
    import clients  # tests/clients.py

    from relay.tokens import is_sentence_gap as sentence_gap

    batch = args.batch or args.recipients
    t_start = time.time()
    notes: list[str] = []

    def note(s: str) -> None:
        notes.append(s)
        print("#", s, file=sys.stderr, flush=True)

    sink = Sink()
    sink.start()
    live.append(sink.stop)
    listen = free_port()
    cfg = write_config(tmp, listen, sink.port, args.profile, args.threshold)
    log_path = tmp / "relay.log"
    proc = start_relay(cfg, listen, log_path)
    live.append(lambda: proc.poll() is None and stop_relay(proc))
    note(f"relay serve pid {proc.pid} on 127.0.0.1:{listen}, upstream sink on "
         f"127.0.0.1:{sink.port}, temp dir {tmp}")

    rcpts = [f"staff{i:05d}@example.com" for i in range(args.recipients)]
    msgs: dict[str, list[Msg]] = {}
    cursor = {"en": args.seed * 11, "fr": args.seed * 13}
    fan_ok = True
    total_copies, total_secs = 0, 0.0
    for k, shape in enumerate(clients.SHAPES):
        for lang in ("en", "fr"):
            paras, cursor[lang] = clients.take(lang, 5, cursor[lang],
                                               clients.LONG_PARAGRAPHS[shape])
            msgid = f"<bench-{args.seed}-{shape}-{lang}@example.com>"
            kw: dict = {}
            if shape == "outlook":
                kw = {"charset": "windows-1252" if lang == "fr" else "utf-8",
                      "two_spaces": lang == "en"}
            raw = clients.build(shape, paras, lang, f"{shape} notice", msgid,
                                seed=args.seed * 100 + k, **kw)
            txns, secs, problems = send(listen, raw, rcpts, batch)
            total_secs += secs
            total_copies += len(rcpts)
            note(f"{shape} ({lang}, {len(paras)} paragraphs, "
                 f"{sum(len(p.split()) for p in paras)} words, {len(raw)} bytes): "
                 f"{txns} transaction(s), {secs:.1f} s, {len(rcpts) / secs:.0f} copies/s"
                 + (f"; PROBLEMS: {problems[:3]}" if problems else ""))
            fan_ok &= not problems
            msgs.setdefault(shape, []).append(Msg(lang, raw, msgid, paras))
    time.sleep(0.5)
    rc = stop_relay(proc)
    note(f"relay serve stopped on SIGTERM: exit status {rc}")
    if rc != 0:
        note(f"relay log tail: {tail(log_path)}")
    sink.stop()

    # --- what the sink got: whitespace-only copies, and what each rendering changes ---
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)
    for shape, ms in msgs.items():
        bad = 0
        for m in ms:
            got = {r: sink.copies.get((m.msgid, r), []) for r in rcpts}
            distinct = len({v[0] for v in got.values() if v})
            missing = sum(1 for v in got.values() if not v)
            dup = sum(1 for v in got.values() if len(v) > 1)
            fan_ok &= not missing and not dup and distinct == len(rcpts)
            o_plain = clients.plain_rendering(m.raw)
            o_html = clients.html_rendering(m.raw)
            for r, v in got.items():
                if not v:
                    continue
                why = clients.whitespace_only(m.raw, v[0])
                if why is not None:
                    bad += 1
                    note(f"{shape} {m.lang} copy for {r}: {why}")
                    continue
                m.plain[r] = clients.plain_rendering(v[0]) or ""
                if o_html is not None:
                    m.html[r] = clients.html_rendering(v[0]) or ""
                for kind, o, c in (("plain", o_plain, m.plain[r]),
                                   ("html", o_html, m.html.get(r))):
                    if o is None or c is None:
                        continue
                    gaps, changed = clients.word_gap_share(o, c, sentence_gap)
                    shares[(shape, kind)].append(changed / max(gaps, 1))
            note(f"sink, {shape} {m.lang}: {len(rcpts) - missing} recipients with a copy, "
                 f"{distinct} distinct, {dup} duplicated, {missing} missing")
        fan_ok &= bad == 0
        note(f"{shape}: copies differing from the original other than in text-body whitespace "
             f"(email package): {bad}")
    share_rows = ["| shape | rendering | copies | word gaps changed, mean | max | "
                  "copies over one in six |", "|---|---|---|---|---|---|"]
    for (shape, kind), sh in shares.items():
        share_rows.append(f"| {shape} | {kind} | {len(sh)} | {statistics.mean(sh):.2%} | "
                          f"{max(sh):.2%} | {sum(x > 1 / 6 + 1e-12 for x in sh)} |")

    conds = [c for shape in clients.SHAPES for c in client_conditions(shape)]
    conds.append(Cond("all shapes: unrelated text (GPL-3), 100 words", "no_match",
                      expect="no_match"))
    unrelated = [re.sub(r"\s+", " ", p).strip() for p in
                 Path("/usr/share/common-licenses/GPL-3").read_text().split("\n\n")]
    # GFDL-1.3 and LGPL-2.1, sources of the client mail, share whole sentences with GPL-3: a
    # paragraph holding 8 words in a row of a logged message is not unrelated to it
    logged = {g for ms in msgs.values() for m in ms
              for g in _grams(clients.plain_rendering(m.raw) or "", 8)}
    unrelated = [p for p in unrelated if len(p.split()) >= 110 and not _grams(p, 8) & logged]
    note(f"unrelated text: {len(unrelated)} GPL-3 paragraphs of 110 words or more sharing no "
         f"8-word run with a logged message")
    rcpts_ok = [r for r in rcpts if all(r in m.plain for ms in msgs.values() for m in ms)]
    jobs = client_jobs(conds, msgs, rcpts_ok, args, unrelated)
    by_name = {c.name: c for c in conds}
    t_dec = time.time()
    cli_mismatch: list[str] = []
    with cf.ProcessPoolExecutor(max_workers=args.jobs, initializer=_worker_init,
                                initargs=(str(tmp / "relay.db"), str(tmp / "relay.key"),
                                          args.threshold, "eng+fra")) as ex:
        futs = {ex.submit(run_job, j, str(cfg)): j for j in jobs}
        for fut in cf.as_completed(futs):
            j = futs[fut]
            res = fut.result()
            by_name[j.cond].results.append((res, j.truth))
            if res.error:
                note(f"{j.cond}: error: {res.error}")
            if res.cli is not None and (res.cli.get("verdict"), res.cli.get("top")) != \
                    (res.verdict, res.top):
                cli_mismatch.append(f"{j.cond}: cli {res.cli} vs {res.verdict}/{res.top}")
    note(f"decoding: {len(jobs)} trials in {time.time() - t_dec:.0f} s with {args.jobs} "
         f"workers; {len(cli_mismatch)} CLI verdicts disagreeing with the in-process one")
    for s_ in cli_mismatch:
        note("CLI MISMATCH " + s_)
    for c in conds:
        missed = sorted((r.words, r.bits, -1 if r.mismatched is None else r.mismatched)
                        for r, truth in c.results if truth and r.verdict != "identified")
        if missed:
            note(f"{c.name}: not identified at (words, bits, leaker's disagreements): "
                 + ", ".join(f"({w}, {b}, {d if d >= 0 else '-'})" for w, b, d in missed[:12])
                 + (" ..." if len(missed) > 12 else ""))
    head = (f"Client shapes through the real relay (`python -m relay serve`, profile "
            f"{args.profile}): {sum(len(v) for v in msgs.values())} all-staff messages (one "
            f"English, one French per shape) to {args.recipients:,} recipients each; threshold "
            f"{args.threshold:g}; seed {args.seed}. Fan-out: {total_copies:,} copies in "
            f"{total_secs:.1f} s, sink check {'passed' if fan_ok else 'FAILED'}.\n")
    text = (head + "\n" + fmt_table(conds) + "\n\nOrdinary word gaps changed per copy, as a "
            "reader sees each rendering (same-line gaps other than sentence gaps):\n\n"
            + "\n".join(share_rows) + "\n\nNotes:\n" + "\n".join(f"- {s_}" for s_ in notes)
            + f"\n\n{code_version()}. Runtime: {time.time() - t_start:.0f} s.\n")
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "attribution-clients.md").write_text(text)
    return 0 if fan_ok else 1


def screenshots_available() -> tuple[bool, str]:
    try:
        import render  # noqa: F401  (tests/render.py)
    except ImportError as e:
        return False, f"tests/render.py not importable: {e}"
    if render.chromium_path() is None:
        return False, "chromium not found"
    try:
        from relay.ocr import read_image  # noqa: F401
    except ImportError as e:
        return False, f"relay.ocr.read_image missing: {e}"
    return True, ""


if __name__ == "__main__":
    sys.exit(main())
