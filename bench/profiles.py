"""Capacity of each signature profile on real prose, without SMTP (the pure core).

For each profile (stealth, standard, dense) and each language (English, French paragraphs of the
Debian Reference, /usr/share/debian-reference/chNN.{en,fr}.html), one long all-staff message
(text/plain, wrapped at 72 columns, quoted-printable) is fingerprinted with relay.fingerprint and
logged in an in-memory Log. Then:

(a) share of ordinary word gaps and of sentence gaps that a copy changes, measured by comparing
    the decoded text/plain of real copies with the original, gap by gap (same-line gaps only:
    a line end never changes);
(b) the number of words of a faithful excerpt (consecutive words of the plain-text copy, line
    breaks kept) needed for >= 95% of trials to be `identified` at the threshold among 1,000 and
    among 10,000 recipients. The search over excerpt lengths scores only the leaker (the same
    alignment and p-value code as relay.decoding, family-wise over n); every length it reports
    is then checked with the full relay.decoding.decode, every recipient scored;
(c) wrong identifications in every full decode, plus two null checks per row at the 1,000-length:
    excerpts of a copy made for an outsider (not a recipient) and of the unmodified original
    text: any `identified` there is wrong.

    python bench/profiles.py                 # default: 40 trials, 1,000 and 10,000 recipients
    python bench/profiles.py --trials 100 --recipients 1000,10000,50000
"""

from __future__ import annotations

import argparse
import email
import email.policy
import glob
import hashlib
import random
import re
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relay import decoding, reading  # noqa: E402
from relay.config import PROFILES  # noqa: E402
from relay.fingerprint import Prepared, prepare  # noqa: E402
from relay.keys import Keyring  # noqa: E402
from relay.scheme import SCHEME  # noqa: E402
from relay.score import family_wise  # noqa: E402
from relay.store import DocumentRow  # noqa: E402
from relay.tokens import excerpt_words, is_sentence_gap  # noqa: E402

DEBREF = Path("/usr/share/debian-reference")
SENDER = "ceo@example.com"

# --- corpus -----------------------------------------------------------------------------------

_CODE_TAGS = {"code", "tt", "kbd", "samp", "pre", "var"}
_CODE_CLASSES = ("command", "filename", "literal", "option", "replaceable", "systemitem",
                 "userinput", "computeroutput", "package", "programlisting", "screen")
# characters and shapes that betray a command, a path, a file name or markup
_CODE_TEXT = re.compile(r"[/\\$={}<>_|~#@`*\[\]^]|\w\.\w|--|\(\)|\bhttps?\b")
_FR = frozenset("le la les des du de et est une un pour que qui dans sur par avec vous ce cette "
                "sont pas au aux".split())
_EN = frozenset("the and is of to for that in with are be this it you on by as an".split())


class _Paras(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paras: list[tuple[str, bool]] = []
        self.cur: list[str] | None = None
        self.bad = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p":
            self.cur, self.bad = [], False
        elif self.cur is not None:
            cls = dict(attrs).get("class") or ""
            if tag in _CODE_TAGS or any(c in cls for c in _CODE_CLASSES):
                self.bad = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self.cur is not None:
            self.paras.append(("".join(self.cur), self.bad))
            self.cur = None

    def handle_data(self, data: str) -> None:
        if self.cur is not None:
            self.cur.append(data)


def _language(text: str) -> str:
    words = [w.strip(".,;:!?()«»\"'’").lower() for w in text.split()]
    fr = sum(w in _FR for w in words)
    en = sum(w in _EN for w in words)
    return "fr" if fr > en else "en"


def load_paragraphs(lang: str, min_words: int = 25) -> list[str]:
    """<p> text of the Debian Reference in `lang`, whitespace collapsed; paragraphs with inline
    code, paths, commands or options are dropped, and so are untranslated ones."""
    files = sorted(glob.glob(str(DEBREF / f"ch*.{lang}.html")))
    if not files:
        sys.exit(f"{DEBREF}: no ch*.{lang}.html (install debian-reference-{lang})")
    out: list[str] = []
    seen: set[str] = set()
    for f in files:
        p = _Paras()
        p.feed(Path(f).read_text(encoding="utf-8"))
        for raw, bad in p.paras:
            t = " ".join(raw.split())
            if (bad or _CODE_TEXT.search(t) or len(t.split()) < min_words
                    or _language(t) != lang or t in seen):
                continue
            seen.add(t)
            out.append(t)
    return out


# --- messages and an in-memory log -------------------------------------------------------------

def build_message(paras: list[str], subject: str, msgid: str, html_part: bool = False,
                  width: int = 72) -> bytes:
    """An all-staff announcement: text/plain (wrapped, quoted-printable) and optionally a
    text/html alternative with one <p> per paragraph."""
    import html as _html

    m = EmailMessage()
    m["From"] = f"The CEO <{SENDER}>"
    m["To"] = "all-staff@example.com"
    m["Subject"] = subject
    m["Date"] = format_datetime(__import__("datetime").datetime(2024, 5, 6, 9, 30,
                                tzinfo=__import__("datetime").timezone.utc))
    m["Message-ID"] = msgid
    m.set_content("\n\n".join(textwrap.fill(p, width) for p in paras) + "\n",
                  cte="quoted-printable", charset="utf-8")
    if html_part:
        body = "".join(f"<p>{_html.escape(p, quote=False)}</p>\n" for p in paras)
        m.add_alternative(f"<html><body>\n{body}</body></html>\n", subtype="html",
                          cte="quoted-printable", charset="utf-8")
    return m.as_bytes()


def part_text(raw: bytes, subtype: str = "plain") -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = msg.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return part.get_content().replace("\r\n", "\n")


class MemLog:
    """The decoder's Log protocol over prepared messages, in memory (like relay.store.Store)."""

    def __init__(self, n_recipients: int) -> None:
        self.docs: list[DocumentRow] = []
        self.derived = decoding.Derived()  # keys and codes, built once per run
        self.shingle_sets: list[set[int]] = []
        self.messages: dict[str, dict] = {}
        self.n = n_recipients
        self._rcpts = [f"user{i:05d}@example.com" for i in range(n_recipients)]

    def add(self, p: Prepared) -> None:
        """Log a prepared message as Store.record_message would (its log_entry)."""
        entry = p.log_entry(SENDER)
        documents, doc_shingles = entry.pop("documents"), entry.pop("doc_shingles")
        self.messages[p.identity] = entry
        for doc, sh in zip(documents, doc_shingles, strict=True):
            self.docs.append(DocumentRow(len(self.docs), p.identity, *doc))
            self.shingle_sets.append(set(sh))

    def set_recipients(self, n: int) -> None:
        if n > len(self._rcpts):
            self._rcpts += [f"user{i:05d}@example.com" for i in range(len(self._rcpts), n)]
        self.n = n

    def find_documents(self, hashes, limit: int = 20):
        q = set(hashes)
        hits = [(d.id, len(q & s)) for d, s in zip(self.docs, self.shingle_sets, strict=True)]
        return sorted([h for h in hits if h[1]], key=lambda kv: -kv[1])[:limit]

    def document(self, doc_id: int) -> DocumentRow:
        return self.docs[doc_id]

    def documents_of(self, identity: str) -> list[DocumentRow]:
        return [d for d in self.docs if d.identity == identity]

    def message(self, identity: str) -> dict:
        return self.messages[identity]

    def signing_of(self, identity: str):
        m = self.messages.get(identity)
        return None if m is None else (m["key_id"], m["scheme"])

    def recipients(self, identity: str) -> list[str]:
        return self._rcpts[:self.n]


def recipient(i: int) -> str:
    return f"user{i:05d}@example.com"


# --- measurements ------------------------------------------------------------------------------

def gap_changes(orig: str, copy: str) -> tuple[int, int, int, int]:
    """(ordinary gaps, ordinary changed, sentence gaps, sentence changed) over same-line gaps."""
    ot = list(re.finditer(r"\S+", orig))
    ct = list(re.finditer(r"\S+", copy))
    assert [m.group() for m in ot] == [m.group() for m in ct], "copy changed more than spaces"
    ow = sc = ss = sch = 0
    for k in range(len(ot) - 1):
        sep = orig[ot[k].end():ot[k + 1].start()]
        if "\n" in sep:
            continue
        changed = copy[ct[k].end():ct[k + 1].start()] != sep
        if is_sentence_gap(ot[k].group(), ot[k + 1].group()):
            ss += 1
            sch += changed
        else:
            ow += 1
            sc += changed
    return ow, sc, ss, sch


def excerpt(text: str, toks: list[re.Match], start: int, n: int) -> str:
    return text[toks[start].start():toks[start + n - 1].end()]


def length_grid(max_words: int) -> list[int]:
    g = list(range(10, 100, 5)) + list(range(100, 300, 10)) + list(range(300, 1000, 25)) \
        + list(range(1000, 4001, 50))
    return [x for x in g if x <= max_words]


def leaker_fwp(words, log: MemLog, ring: Keyring, leaker: str, ns: list[int]):
    """Family-wise false-match probability of the leaker for each n in `ns` (the quantity the
    full decode compares with the threshold), and the bits observed. Same alignment and scoring
    code as relay.decoding, but only the leaker is scored (fast)."""
    found = reading.matches(words, log, ring, log.derived)
    if not found:
        return [1.0] * len(ns), 0
    ev = found[0]
    c = reading.score([ev], [[leaker]])[0]
    return [family_wise(c.p_value, n) for n in ns], c.bits_observed


def first_identified(grid: list[int], text: str, toks: list[re.Match], start: int,
                     log: MemLog, ring: Keyring, leaker: str, n: int,
                     threshold: float) -> int | None:
    """Shortest grid length at which the leaker is identified among n (binary search: a longer
    excerpt from the same start holds every gap of a shorter one)."""
    def ok(i: int) -> bool:
        words = excerpt_words(excerpt(text, toks, start, grid[i]))
        return leaker_fwp(words, log, ring, leaker, [n])[0][0] <= threshold

    if not ok(len(grid) - 1):
        return None
    lo, hi = 0, len(grid) - 1  # invariant: ok(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return grid[hi]


def code_version() -> str:
    """Which relay code was measured: git HEAD and whether relay/ had uncommitted changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "relay"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "relay code: unknown version (no git)"
    return f"relay code: git {head}" + (" + uncommitted changes in relay/" if dirty else "")


@dataclass
class Row:
    profile: str
    lang: str
    words: int
    ord_changed: float
    sent_changed: float
    per_n: dict  # n -> dict(words95, identified, trials, wrong, bits, ok)
    null_decodes: int
    null_wrong: int
    decodes: int
    wrong: int


def run_profile(profile: str, lang: str, paras: list[str], args, ring: Keyring,
                rng: random.Random) -> Row:
    key_id, key = ring.current
    limit = args.message_words
    if limit is None:
        limit = 0 if profile == "stealth" else 1500
    if limit:
        kept, total = [], 0
        for para in paras:
            if total >= limit:
                break
            kept.append(para)
            total += len(para.split())
        paras = kept
    raw = build_message(paras, f"Handbook ({lang})", f"<handbook-{lang}@example.com>")
    p = prepare(raw, SENDER, key_id, key, SCHEME.with_rate(PROFILES[profile]))
    orig = part_text(raw)
    ns = sorted(args.recipients)
    log = MemLog(max(ns))
    log.add(p)
    otoks = list(re.finditer(r"\S+", orig))
    nwords = len(otoks)

    # (a) what a copy changes
    tot = [0, 0, 0, 0]
    for i in range(args.copies):
        for j, v in enumerate(gap_changes(orig, part_text(p.copy_for(recipient(i))))):
            tot[j] += v
    ord_changed = tot[1] / tot[0] if tot[0] else 0.0
    sent_changed = tot[3] / tot[2] if tot[2] else 0.0

    # (b) search: per trial, the shortest grid length at which the leaker is identified
    grid = length_grid(min(args.max_words, nwords - 1))
    trials = []
    for _ in range(args.trials):
        leaker = recipient(rng.randrange(min(ns)))
        text = part_text(p.copy_for(leaker))
        toks = list(re.finditer(r"\S+", text))
        start = rng.randrange(0, len(toks) - grid[-1] + 1)
        first = {n: first_identified(grid, text, toks, start, log, ring, leaker, n,
                                     args.threshold) for n in ns}
        trials.append((leaker, text, toks, start, first))

    need = -(-95 * args.trials // 100)  # ceil(0.95 T)
    per_n: dict[int, dict] = {}
    decodes = wrong = 0
    for n in ns:
        firsts = sorted(t[4][n] for t in trials if t[4][n] is not None)
        if len(firsts) < need:
            per_n[n] = {"words95": None, "trials": args.trials}
            continue
        L95 = firsts[need - 1]
        # confirm with the full decoder, every one of the n recipients scored
        log.set_recipients(n)
        ident = bad = 0
        bits = []
        confirm = trials if n <= 1000 else trials[:args.trials_large]
        for leaker, text, toks, start, _ in confirm:
            rep = decoding.decode([excerpt_words(excerpt(text, toks, start, L95))], log, ring,
                                  args.threshold)
            decodes += 1
            bits.append(rep.excerpts[0]["bits_observed"])
            if rep.verdict == "identified":
                if rep.candidates[0].recipient == leaker:
                    ident += 1
                else:
                    bad += 1
        wrong += bad
        per_n[n] = {"words95": L95, "identified": ident, "trials": len(confirm), "wrong": bad,
                    "bits": statistics.median(bits)}

    # (c) null checks at the smallest n's length: an outsider's copy, the original text
    null_decodes = null_wrong = 0
    L0 = per_n[ns[0]].get("words95") or grid[-1]
    log.set_recipients(ns[0])
    for t in range(args.trials):
        outsider = f"outsider{t}@elsewhere.example"
        text = part_text(p.copy_for(outsider))
        toks = list(re.finditer(r"\S+", text))
        start = rng.randrange(0, len(toks) - L0 + 1)
        for src, tk in ((text, toks), (orig, otoks)):
            rep = decoding.decode([excerpt_words(excerpt(src, tk, start, L0))], log, ring,
                                  args.threshold)
            null_decodes += 1
            null_wrong += rep.verdict == "identified"
    return Row(profile, lang, nwords, ord_changed, sent_changed, per_n, null_decodes,
               null_wrong, decodes, wrong)


def fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(rows: list[Row], ns: list[int], trials: int) -> str:
    head = ["profile", "lang", "word gaps changed", "sentence gaps changed"]
    for n in ns:
        head += [f"words for 95% @ {n:,}", f"identified @ {n:,}", f"median bits @ {n:,}"]
    head += ["wrong (all decodes)", "null checks identified"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.profile, r.lang, fmt_pct(r.ord_changed), fmt_pct(r.sent_changed)]
        for n in ns:
            d = r.per_n[n]
            if d.get("words95") is None:
                cells += [f"> max ({trials} trials)", "-", "-"]
            else:
                cells += [str(d["words95"]), f"{d['identified']}/{d['trials']}",
                          f"{d['bits']:g}"]
        cells += [f"{r.wrong}/{r.decodes}", f"{r.null_wrong}/{r.null_decodes}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40, help="trials per profile and language")
    ap.add_argument("--recipients", default="1000,10000",
                    help="comma-separated recipient counts (default 1000,10000)")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--langs", default="en,fr")
    ap.add_argument("--trials-large", type=int, default=20,
                    help="trials confirmed with the full decoder for n > 1,000 (~1-2 s each)")
    ap.add_argument("--copies", type=int, default=100,
                    help="copies compared with the original for (a)")
    ap.add_argument("--message-words", type=int, default=None,
                    help="message length in words (default: all paragraphs for stealth, "
                         "about 1,500 words for the others); 0 = all paragraphs")
    ap.add_argument("--threshold", type=float, default=1e-6)
    ap.add_argument("--max-words", type=int, default=3000, help="longest excerpt tried")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    args.recipients = [int(x) for x in args.recipients.split(",")]
    ns = sorted(args.recipients)
    key = hashlib.sha256(b"relay-bench-profiles" + str(args.seed).encode()).digest()
    ring = Keyring((("k1", key),))
    t0 = time.time()
    rows = []
    for lang in args.langs.split(","):
        paras = load_paragraphs(lang)
        random.Random(args.seed).shuffle(paras)
        print(f"# {lang}: {len(paras)} paragraphs, "
              f"{sum(len(p.split()) for p in paras)} words", file=sys.stderr)
        for profile in args.profiles.split(","):
            t1 = time.time()
            rng = random.Random(f"{args.seed}-{lang}-{profile}")
            rows.append(run_profile(profile, lang, paras, args, ring, rng))
            print(f"#   {profile}: {time.time() - t1:.0f} s", file=sys.stderr)
    words = ", ".join(f"{r.profile}/{r.lang} {r.words}" for r in rows)
    print(f"Profiles on Debian Reference prose: one message per profile and language "
          f"(words: {words}), "
          f"text/plain wrapped at 72. Threshold {args.threshold:g}. Faithful excerpts of the "
          f"plain-text copy (line breaks kept), random leaker and start: {args.trials} trials per "
          f"row in the length search and at <= 1,000 recipients, the first "
          f"{min(args.trials, args.trials_large)} of them confirmed above 1,000. Gap shares over "
          f"{args.copies} copies.\n")
    print(table(rows, ns, args.trials))
    print("\n- word/sentence gaps changed: share of same-line gaps whose whitespace differs "
          "between a copy and the original.\n"
          "- words for 95%: shortest excerpt (grid of 5/10/25/50 words) at which >= 95% of "
          "trials identify the leaker in the length search (leaker scored alone, same code "
          "path).\n"
          "- identified: confirmed by relay.decoding.decode at that length, every recipient "
          "scored (k/trials); median bits: signature gaps read per excerpt.\n"
          "- wrong: identified someone other than the leaker, over all full decodes.\n"
          "- null checks: excerpts of an outsider's copy and of the unmodified original, at the "
          f"{ns[0]:,}-recipient length; any `identified` there is wrong (must be 0).")
    print(f"\n{code_version()}. Runtime: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
