"""From suspect text to a verdict, through a small in-memory log built as the relay builds it."""

from __future__ import annotations

import json
import math
import random
import re
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pgserver import Backend

from relay.carriers import NONE, SENTENCE, WORD, Gap, analyse_plain
from relay.codes import MessageCode
from relay.decoding import MAX_CANDIDATES, Derived, Report, decode
from relay.hashes import carrier_keys, message_identity, pack_hashes, shingles, word_hashes
from relay.keys import Keyring
from relay.scheme import BLOCK, CUT, EVEN, SCHEME, V2, V3, Scheme, bias
from relay.store import DocumentRow
from relay.tokens import excerpt_words

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
RING = Keyring((("k1", K1),))
RATE = 1 / 6
THRESHOLD = 1e-6


def paragraphs(name: str) -> list[str]:
    text = Path(f"/usr/share/common-licenses/{name}").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 30]


def reflow(paras: Sequence[str], width: int = 72) -> str:
    return "\n\n".join(textwrap.fill(p, width) for p in paras) + "\n"


GPL = reflow(paragraphs("GPL-3")[5:45])
APACHE = reflow(paragraphs("Apache-2.0")[:25])


@dataclass
class Logged:
    identity: str
    text: str
    gaps: list[tuple[int, Gap]]
    ckeys: list[bytes]
    classes: list[int]
    code: MessageCode
    meta: dict[str, Any]
    recipients: list[str]

    def bits(self, recipient: str) -> list[int]:
        return self.code.bits(recipient, self.ckeys, self.classes)

    def copy_for(self, recipient: str) -> str:
        out, pos = [], 0
        for (_, g), b in zip(self.gaps, self.bits(recipient), strict=True):
            out += [self.text[pos:g.start], "  " if b else " "]
            pos = g.end
        out.append(self.text[pos:])
        return "".join(out)


class MemLog:
    """The decoder's view of the store, filled the way relay/fingerprint.py analyses a part."""

    def __init__(self) -> None:
        self.docs: dict[int, DocumentRow] = {}
        self.index: dict[int, set[int]] = defaultdict(set)
        self.msgs: dict[str, tuple[dict[str, Any], list[str]]] = {}

    def add(self, text: str, recipients: Sequence[str], *, subject: str, key_id: str = "k1",
            key: bytes = K1, rate: float = RATE, sender: str = "boss@example.com",
            block: int = BLOCK, cut: int = CUT, version: int = SCHEME.version) -> Logged:
        raw = f"Subject: {subject}\r\n\r\n{text}".encode()
        identity = message_identity(raw, sender)
        layout = analyse_plain(text)
        hashes = word_hashes(key, layout.words)
        ck = carrier_keys(hashes)
        gaps = [(i, g) for i, g in layout.carriers() if bias(g.cls, rate) > 0]
        classes = bytes(g.cls if bias(g.cls, rate) > 0 else NONE for g in layout.gaps)
        doc_id = len(self.docs) + 1
        self.docs[doc_id] = DocumentRow(doc_id, identity, "1", "plain", pack_hashes(hashes),
                                        classes)
        for s in set(shingles(hashes)):
            self.index[s].add(doc_id)
        meta = {"message_id": f"<{subject.replace(' ', '.')}@example.com>", "subject": subject,
                "date": "Mon, 23 Nov 2026 10:00:00 +0000"}
        scheme = Scheme(version, rate, block, cut)
        self.msgs[identity] = ({"key_id": key_id, "scheme": scheme, **meta}, sorted(recipients))
        return Logged(identity, text, gaps, [ck[i] for i, _ in gaps],
                      [g.cls for _, g in gaps],
                      MessageCode(key, identity, [(ck, classes)], scheme), meta,
                      sorted(recipients))

    def find_documents(self, hashes: Sequence[int], limit: int = 20) -> list[tuple[int, int]]:
        counts: dict[int, int] = defaultdict(int)
        for h in set(hashes):
            for d in self.index.get(h, ()):
                counts[d] += 1
        return sorted(counts.items(), key=lambda kv: -kv[1])[:limit]

    def document(self, doc_id: int) -> DocumentRow:
        return self.docs[doc_id]

    def message(self, identity: str) -> dict[str, Any]:
        return dict(self.msgs[identity][0])

    def signing_of(self, identity: str) -> tuple[str, Scheme] | None:
        m = self.msgs.get(identity)
        return None if m is None else (m[0]["key_id"], m[0]["scheme"])

    def recipients(self, identity: str) -> list[str]:
        return list(self.msgs[identity][1])

    def documents_of(self, identity: str) -> list[DocumentRow]:
        return [d for d in self.docs.values() if d.identity == identity]


def staff(n: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{i:04d}@example.com" for i in range(n)]


def window(text: str, start: int, n: int) -> str:
    toks = list(re.finditer(r"\S+", text))
    return text[toks[start].start():toks[start + n - 1].end()]


def n_words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def big() -> tuple[MemLog, Logged]:
    log = MemLog()
    return log, log.add(GPL, staff(1000), subject="GPL for all")


@pytest.fixture(scope="module")
def mid() -> tuple[MemLog, Logged]:
    """A smaller list where many decodes are needed (scoring costs time per recipient)."""
    log = MemLog()
    return log, log.add(GPL, staff(400, "staff"), subject="GPL for some")


# --- identification --------------------------------------------------------------------------


def test_faithful_excerpt_names_the_leaker(big: tuple[MemLog, Logged]) -> None:
    log, m = big
    rnd = random.Random(10)
    for _ in range(3):
        leaker = rnd.choice(m.recipients)
        copy = m.copy_for(leaker)
        ex = window(copy, rnd.randrange(n_words(copy) - 120), 120)
        rep = decode([excerpt_words(ex)], log, RING, THRESHOLD)
        assert rep.verdict == "identified"
        top = rep.candidates[0]
        assert top.recipient == leaker
        assert top.false_match_probability <= THRESHOLD
        assert top.bits_observed >= 90
        assert top.bits_matching >= top.bits_observed - 2
        assert rep.candidates[1].false_match_probability > 100 * THRESHOLD
        assert rep.message == m.meta
        assert rep.recipients == 1000
        assert rep.others == []


def test_copy_pasted_from_html_and_rewrapped(big: tuple[MemLog, Logged]) -> None:
    """NBSP + space for doubled gaps, CRLF, a different wrap width: still the leaker."""
    log, m = big
    leaker = m.recipients[417]
    copy = m.copy_for(leaker)
    ex = window(copy, 800, 160).replace("  ", "\u00a0 ")
    lines = [ln for para in ex.split("\n\n") for ln in para.split("\n")]
    flowed = " ".join(lines)
    # re-wrap at 50 columns by cutting only at single-space gaps
    out, col = [], 0
    for tok in re.split(r"(?<=\S) (?=\S)", flowed):
        if col + len(tok) > 50 and col:
            out.append("\r\n")
            col = 0
        elif col:
            out.append(" ")
            col += 1
        out.append(tok)
        col += len(tok)
    rep = decode([excerpt_words("".join(out))], log, RING, THRESHOLD)
    assert rep.verdict == "identified"
    assert rep.candidates[0].recipient == leaker


def test_original_text_is_never_identified(mid: tuple[MemLog, Logged]) -> None:
    log, m = mid
    rnd = random.Random(20)
    for _ in range(20):
        ex = window(m.text, rnd.randrange(n_words(m.text) - 120), 120)
        rep = decode([excerpt_words(ex)], log, RING, THRESHOLD)
        assert rep.verdict == "inconclusive"
        assert rep.message == m.meta
        assert rep.candidates and rep.candidates[0].false_match_probability > THRESHOLD
        assert rep.candidates[0].bits_observed >= 90


def test_leaker_outside_the_log_is_not_identified(mid: tuple[MemLog, Logged]) -> None:
    """Every scored recipient is innocent: an outsider's copy never names one of them."""
    log, m = mid
    rnd = random.Random(30)
    for i in range(6):
        copy = m.copy_for(f"outsider{i}@elsewhere.org")
        ex = window(copy, rnd.randrange(n_words(copy) - 120), 120)
        rep = decode([excerpt_words(ex)], log, RING, THRESHOLD)
        assert rep.verdict == "inconclusive"
        assert rep.candidates[0].false_match_probability > THRESHOLD


def test_short_excerpt_is_inconclusive(big: tuple[MemLog, Logged]) -> None:
    log, m = big
    copy = m.copy_for(m.recipients[3])
    rep = decode([excerpt_words(window(copy, 500, 15))], log, RING, THRESHOLD)
    assert rep.verdict == "inconclusive"
    assert rep.message == m.meta
    assert 0 < rep.candidates[0].bits_observed <= 15
    assert rep.candidates[0].false_match_probability > THRESHOLD


def test_unrelated_text_is_no_match(big: tuple[MemLog, Logged]) -> None:
    log, _ = big
    texts = [
        "The quick brown fox jumps over the lazy dog and then some more unrelated words here",
        window(APACHE, 100, 120),
        "software",
        "",
    ]
    for t in texts:
        rep = decode([excerpt_words(t)], log, RING, THRESHOLD)
        assert rep.verdict == "no_match"
        assert rep.message is None
        assert rep.candidates == []
        j = rep.as_json()
        assert j["verdict"] == "no_match" and j["message"] is None and j["candidates"] == []


def test_too_few_words_of_the_message_is_no_match(big: tuple[MemLog, Logged]) -> None:
    log, m = big
    five = window(m.copy_for(m.recipients[0]), 300, 5)
    rep = decode([excerpt_words(five)], log, RING, THRESHOLD)
    assert rep.verdict == "no_match" and rep.message is None
    # a few real words drowned in unrelated text are no evidence of the message either
    mixed = window(APACHE, 0, 60) + " " + window(m.text, 300, 8)
    rep = decode([excerpt_words(mixed)], log, RING, THRESHOLD)
    assert rep.verdict == "no_match"


def test_key_rotation_old_messages_still_decode() -> None:
    log = MemLog()
    m = log.add(GPL, staff(200), subject="before rotation", key_id="old", key=K1)
    leaker = m.recipients[50]
    ex = excerpt_words(window(m.copy_for(leaker), 1000, 130))
    ring = Keyring((("old", K1), ("new", K2)))
    rep = decode([ex], log, ring, THRESHOLD)
    assert rep.verdict == "identified" and rep.candidates[0].recipient == leaker
    # without the key that signed it, the message cannot even be found
    rep = decode([ex], log, Keyring((("new", K2),)), THRESHOLD)
    assert rep.verdict == "no_match"


# --- several messages ------------------------------------------------------------------------


def test_two_excerpts_of_two_messages_are_pooled() -> None:
    log = MemLog()
    people = staff(300)
    a = log.add(GPL, people, subject="first notice")
    b = log.add(APACHE, people + ["only-b@example.com"], subject="second notice")
    leaker = people[123]
    ea = excerpt_words(window(a.copy_for(leaker), 700, 45))
    eb = excerpt_words(window(b.copy_for(leaker), 400, 45))
    ra = decode([ea], log, RING, THRESHOLD)
    rb = decode([eb], log, RING, THRESHOLD)
    both = decode([ea, eb], log, RING, THRESHOLD)
    assert ra.message == a.meta and rb.message == b.meta
    top = both.candidates[0]
    assert top.recipient == leaker
    assert top.bits_observed == ra.candidates[0].bits_observed + rb.candidates[0].bits_observed
    assert top.false_match_probability < min(ra.candidates[0].false_match_probability,
                                             rb.candidates[0].false_match_probability)
    assert both.verdict == "identified"
    assert both.message == a.meta
    assert [o["message_id"] for o in both.others] == [b.meta["message_id"]]
    assert both.recipients == 301
    assert [e["messages_matched"] for e in both.excerpts] == [1, 1]


def test_same_text_logged_twice_mentions_the_other() -> None:
    log = MemLog()
    first = log.add(GPL, staff(300, "a"), subject="announcement")
    second = log.add(GPL, staff(250, "b"), subject="announcement (resent)",
                     sender="assistant@example.com")
    assert first.identity != second.identity
    leaker = second.recipients[77]
    ex = excerpt_words(window(second.copy_for(leaker), 1500, 120))
    rep = decode([ex], log, RING, THRESHOLD)
    assert rep.verdict == "identified"
    assert rep.candidates[0].recipient == leaker
    assert rep.message == second.meta
    assert len(rep.others) == 1
    other = rep.others[0]
    assert other["message_id"] == first.meta["message_id"]
    assert other["subject"] == first.meta["subject"]
    assert other["recipients"] == 300
    assert rep.recipients == 550  # every recipient of every message tried is counted
    assert rep.excerpts[0]["messages_matched"] == 2


def test_repeated_excerpt_adds_no_evidence(mid: tuple[MemLog, Logged]) -> None:
    log, m = mid
    ex = excerpt_words(window(m.text, 100, 120))  # the unmodified original: nobody's copy
    once = decode([ex], log, RING, THRESHOLD)
    four = decode([ex, ex, ex, ex], log, RING, THRESHOLD)
    # got: bits_observed 432 (4 x 108) and a false-match probability of 4.9e-05 instead of
    # 0.95 (with 1,000 recipients the verdict even becomes 'identified', fmp 1.4e-08)
    assert four.candidates[0].bits_observed == once.candidates[0].bits_observed
    assert four.candidates[0].false_match_probability == pytest.approx(
        once.candidates[0].false_match_probability)
    assert four.verdict == once.verdict


# --- report shape ----------------------------------------------------------------------------


def check_shape(j: dict[str, Any]) -> None:
    json.loads(json.dumps(j))  # plain JSON types only
    assert {"verdict", "message", "candidates"} <= set(j)
    assert j["verdict"] in ("identified", "inconclusive", "no_match")
    if j["verdict"] == "no_match":
        assert j["message"] is None and j["candidates"] == []
        return
    msg = j["message"]
    assert isinstance(msg, dict) and {"message_id", "subject", "date"} <= set(msg)
    assert all(v is None or isinstance(v, str) for v in msg.values())
    cands = j["candidates"]
    assert isinstance(cands, list) and 0 < len(cands) <= MAX_CANDIDATES
    for c in cands:
        assert {"recipient", "bits_observed", "bits_matching", "false_match_probability"} <= set(c)
        assert isinstance(c["recipient"], str) and "@" in c["recipient"]
        assert isinstance(c["bits_observed"], int) and isinstance(c["bits_matching"], int)
        assert 0 <= c["bits_matching"] <= c["bits_observed"]
        assert isinstance(c["false_match_probability"], float)
        assert 0.0 <= c["false_match_probability"] <= 1.0
    fmps = [c["false_match_probability"] for c in cands]
    assert fmps == sorted(fmps)
    assert len({c["recipient"] for c in cands}) == len(cands)
    top = fmps[0]
    assert (j["verdict"] == "identified") == (top <= THRESHOLD)


def test_json_shape(big: tuple[MemLog, Logged]) -> None:
    log, m = big
    leaker = m.recipients[999]
    reps: list[Report] = [
        decode([excerpt_words(window(m.copy_for(leaker), 2000, 120))], log, RING, THRESHOLD),
        decode([excerpt_words(window(m.text, 2000, 30))], log, RING, THRESHOLD),
        decode([excerpt_words("nothing to see here at all, really nothing")], log, RING,
               THRESHOLD),
    ]
    assert [r.verdict for r in reps] == ["identified", "inconclusive", "no_match"]
    for r in reps:
        j = r.as_json()
        check_shape(j)
    j = reps[0].as_json()
    assert len(j["candidates"]) == MAX_CANDIDATES
    assert j["candidates"][0]["recipient"] == leaker
    assert j["message"] == m.meta


def test_message_logged_before_blocks_still_decodes() -> None:
    """A message logged with block 0 (independent bits, before blocks existed), with blocks
    cut evenly (before UNITS) or with code v2 (before v3) is decoded with the code it was
    signed with, next to a message signed with the current code (v3)."""
    log = MemLog()
    old = log.add(GPL, staff(300), subject="old", rate=0.16, block=0, version=V2)
    even = log.add(GPL.replace("software", "works"), staff(300), subject="even", cut=EVEN,
                   version=V2)
    v2 = log.add(GPL.replace("software", "code"), staff(300), subject="v2", version=V2)
    new = log.add(GPL.replace("software", "programs"), staff(300), subject="new")
    assert new.code.scheme == SCHEME.with_rate(RATE) and new.code.scheme.version == V3
    assert old.code.blocks is None and new.code.blocks is not None
    assert even.code.blocks is not None and even.code.blocks.ones != new.code.blocks.ones
    rnd = random.Random(4)
    for m in (old, even, v2, new):
        leaker = rnd.choice(m.recipients)
        copy = m.copy_for(leaker)
        ex = window(copy, rnd.randrange(n_words(copy) - 150), 150)
        rep = decode([excerpt_words(ex)], log, RING, THRESHOLD)
        assert rep.verdict == "identified", rep.as_json()
        assert rep.candidates[0].recipient == leaker
        assert rep.message == m.meta


def test_word_hyphenated_at_a_plain_line_end_costs_no_false_disagreement(
        tmp_path: Path, backend: Backend) -> None:
    """text/plain wrapped at a hyphen ("non-" / "free") and its HTML ("non-free") key the gaps
    around that word differently; an excerpt of the plain copy, where the word is joined back,
    must not read those gaps against the HTML's keys: the leaker disagrees with nothing."""
    import email
    import email.message
    import email.policy

    from relay.fingerprint import prepare
    from relay.store import ACCEPTED

    words = " ".join(paragraphs("GPL-3")[5:9]).split()
    words[60] = "non-free"
    text = " ".join(words)
    plain = textwrap.fill(text, 72).replace("non-free", "non-\nfree")  # as a wrapper breaks it
    m = email.message.EmailMessage()
    m["Subject"] = "Licences"
    m.set_content(plain + "\n")
    m.add_alternative(f"<p>{text}</p>\n", subtype="html")
    p = prepare(m.as_bytes(), "boss@example.com", "k1", K1, SCHEME.with_rate(RATE))
    store = backend.store(tmp_path / "relay.db")
    store.record_message(**p.log_entry("boss@example.com"))
    rcpts = staff(200)
    for r in rcpts:
        store.set_copy_states(p.identity, [(r, ACCEPTED, "250 ok")])
    for leaker in rcpts[:30]:
        copy = email.message_from_bytes(p.copy_for(leaker), policy=email.policy.default)
        body = copy.get_body(("plain",)).get_content()
        at = body.index("non-\nfree")
        words_ = excerpt_words(body[body.index(" ", at - 300):body.index(" ", at + 250)])
        assert any(w.joined and w.norm == "nonfree" for w in words_)
        rep = decode([words_], store, RING, THRESHOLD)
        top = rep.candidates[0]
        assert top.recipient == leaker, rep.as_json()
        assert top.bits_matching == top.bits_observed, rep.as_json()


# --- the reported probability is honest -------------------------------------------------------
#
# The false-match probability is the product's central claim. These tests check the number the
# decoder reports, end to end: against brute force on small codes, and against the behaviour
# of real innocent codes on real prose (calibration).

SHORT = reflow(paragraphs("GPL-3")[5:7])  # a few blocks of 12: small enough to enumerate


def _brute_null(code: MessageCode, ckeys: Sequence[bytes], classes: Sequence[int],
                bits: Sequence[int]) -> list[float]:
    """P(D = d) for an innocent, by enumeration: every k-subset of every touched block's
    members (each equally likely), every value of every independent carrier; blocks and
    independent carriers are independent of each other (separate stream values)."""
    from itertools import combinations

    dist = [1.0]

    def convolve(pmf: dict[int, float]) -> None:
        nonlocal dist
        new = [0.0] * (len(dist) + max(pmf))
        for i, a in enumerate(dist):
            for k, b in pmf.items():
                new[i + k] += a * b
        dist = new

    by_block: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
    for c, cls, y in zip(ckeys, classes, bits, strict=True):
        b = code.in_block(c) if cls == WORD else None
        if b is None:
            p1 = 0.5 if cls == SENTENCE else code.word_rate
            convolve({int(y != 1): p1, int(y != 0): 1 - p1} if y in (0, 1) else {})
        else:
            by_block[b].append((c, y))
    assert code.blocks is not None or not by_block
    for b, seen in by_block.items():
        members, k = code.blocks.members[b], code.blocks.ones[b]
        counts: dict[int, float] = defaultdict(float)
        subsets = list(combinations(members, k))
        for chosen in subsets:
            ones = set(chosen)
            counts[sum((c in ones) != y for c, y in seen)] += 1 / len(subsets)
        convolve(counts)
    return dist


@pytest.mark.parametrize("block,cut,rate,version",
                         [(12, CUT, RATE, V3), (12, CUT, RATE, V2), (12, EVEN, RATE, V2),
                          (0, CUT, 0.16, V2)],
                         ids=["v3-units", "units", "even", "independent"])
def test_reported_probability_equals_brute_force(block: int, cut: int, rate: float,
                                                 version: int) -> None:
    """Every candidate's p-value is P(an innocent disagrees at most d times), enumerated over
    every code an innocent could hold, and its false-match probability is 1 - (1 - p)^n over
    all n recipients; with a few gaps flipped so that d > 0 too."""
    from relay.reading import matches

    log = MemLog()
    m = log.add(SHORT, staff(40), subject="short", block=block, cut=cut, rate=rate,
                version=version)
    if block:
        assert m.code.blocks is not None and len(m.code.blocks.members) >= 2
        assert max(len(x) for x in m.code.blocks.members) <= 30
    rnd = random.Random(block + cut + version)
    for trial in range(4):
        leaker = m.recipients[trial]
        copy = m.copy_for(leaker)
        if trial % 2:  # flip a few gaps: the leaker disagrees somewhere
            copy = re.sub(r"(?<=\S)( {1,2})(?=\S)",
                          lambda g: (" " if len(g.group(1)) == 2 else "  ")
                          if rnd.random() < 0.08 else g.group(1), copy)
        ex = excerpt_words(window(copy, rnd.randrange(10), n_words(copy) - 12))
        rep = decode([ex], log, RING, THRESHOLD)
        (ev,) = matches(ex, log, RING, Derived())
        pmf = _brute_null(ev.code, ev.ckeys, ev.classes, ev.bits)
        assert rep.candidates, rep.as_json()
        for c in rep.candidates:
            d = c.bits_observed - c.bits_matching
            p = sum(pmf[:d + 1])
            assert c.p_value == pytest.approx(p, rel=1e-9, abs=1e-300), (c, d)
            assert c.false_match_probability == pytest.approx(1 - (1 - p) ** 40, rel=1e-9)
        assert rep.candidates[0].recipient == leaker


CALIBRATION_TEXT = reflow(paragraphs("GPL-3")[5:25])  # ~1,400 words of prose nobody here wrote


def _outsider_fmps(n_recipients: int, trials: int, seed: int) -> list[float]:
    """The false-match probability decode reports for excerpts (20-80 words) of copies made for
    people the logged message never reached: recipients of another message with the same text,
    and copies signed under another key. Every scored recipient is innocent."""
    log = MemLog()
    log.add(CALIBRATION_TEXT, staff(n_recipients), subject="logged")
    sources = [MemLog().add(CALIBRATION_TEXT, staff(40, "other"), subject="same text, not logged",
                            sender="someone@example.com"),
               MemLog().add(CALIBRATION_TEXT, staff(40, "k2-"), subject="logged", key=K2)]
    copies = [{r: s.copy_for(r) for r in s.recipients} for s in sources]
    rnd = random.Random(seed)
    derived = Derived()
    out = []
    for t in range(trials):
        length = (20, 30, 40, 60, 80)[t % 5]
        copy = rnd.choice(list(copies[t % 2].values()))
        ex = excerpt_words(window(copy, rnd.randrange(n_words(copy) - length), length))
        rep = decode([ex], log, RING, THRESHOLD, derived)
        assert rep.verdict != "identified", rep.as_json()
        out.append(rep.candidates[0].false_match_probability if rep.candidates else 1.0)
    return out


def _at_most(count: int, trials: int, a: float) -> bool:
    """Whether `count` of `trials` events of probability at most a is plausible: within the
    binomial tail bound P(X >= count) >= 1e-4 (Chernoff), i.e. not a miscalibration."""
    mean = a * trials
    if count <= mean:
        return True
    x = count / trials
    kl = x * math.log(x / a) + (1 - x) * math.log((1 - x) / (1 - a)) if x < 1 else -math.log(a)
    return trials * kl < math.log(1e4)


@pytest.mark.parametrize("n,trials", [(1, 1500), (20, 500)], ids=["one-recipient", "twenty"])
def test_reported_probability_is_calibrated(n: int, trials: int) -> None:
    """P(reported false-match probability <= a) <= a for outsiders' excerpts, at a = 0.5 ...
    0.001. With one recipient the reported value is the p-value itself, where a test with
    1,500 trials tells an honest probability (about 0.6 a at these levels, the rest lost to
    the discreteness of counts) from one 2x too small (about 1.4 a); with twenty, the
    correction for the number of recipients is checked too."""
    fmps = _outsider_fmps(n, trials, seed=n)
    for a in (0.5, 0.2, 0.1, 0.05, 0.01, 0.001):
        count = sum(f <= a for f in fmps)
        assert _at_most(count, trials, a), (a, count, trials)


# --- which rendering, where in the text ------------------------------------------------------


def _alternative(tmp_path: Path, text_paras: Sequence[str], recipients: Sequence[str],
                 url: str | None = None) -> tuple[Any, Any]:
    """A text/plain (wrapped at 72) + text/html message fingerprinted by the relay's own
    prepare and logged in a real store (PostgreSQL at `url` when given)."""
    import email.message

    from relay.fingerprint import prepare
    from relay.store import ACCEPTED, Store

    m = email.message.EmailMessage()
    m["Subject"] = "Licences"
    m.set_content(reflow(text_paras))
    m.add_alternative("".join(f"<p>{p}</p>\n" for p in text_paras), subtype="html")
    p = prepare(m.as_bytes(), "boss@example.com", "k1", K1, SCHEME.with_rate(RATE))
    store = Store(tmp_path / "relay.db", url=url)
    store.record_message(**p.log_entry("boss@example.com"))
    for r in recipients:
        store.set_copy_states(p.identity, [(r, ACCEPTED, "250 ok")])
    return p, store


def _body(copy: bytes, subtype: str) -> str:
    import email
    import email.policy

    msg = email.message_from_bytes(copy, policy=email.policy.default)
    return msg.get_body((subtype,)).get_content()


def test_plain_excerpt_with_joined_lines_is_read_only_where_renderings_agree(
        tmp_path: Path) -> None:
    """A faithful plain excerpt whose line ends were joined by a paste aligns word for word with
    the text/plain and the text/html rendering. The HTML has a carrier where the plain text had
    a line end; reading it against the HTML counted the leaker's doubled HTML gaps there as
    disagreements (7-11 in 100 words). Only gaps that are carriers in both are read."""
    rcpts = staff(300)
    p, store = _alternative(tmp_path, paragraphs("GPL-3")[5:12], rcpts)
    rnd = random.Random(7)
    for leaker in rcpts[:12]:
        plain = _body(p.copy_for(leaker), "plain")
        joined = re.sub(r"\s*\n\s*", " ", plain)
        ex = excerpt_words(window(joined, rnd.randrange(n_words(joined) - 100), 100))
        rep = decode([ex], store, RING, THRESHOLD)
        top = rep.candidates[0]
        assert top.recipient == leaker, rep.as_json()
        assert top.bits_matching == top.bits_observed, rep.as_json()
        assert rep.verdict == "identified"


def test_mail_quoted_inside_a_long_article_is_found(tmp_path: Path, backend: Backend) -> None:
    """A faithful copy of the mail (about 480 words) inside an article of about 2,000 words of
    commentary: under a quarter of the text aligns, but one long stretch does."""
    rcpts = staff(300)
    p, store = _alternative(tmp_path, paragraphs("GPL-3")[5:12], rcpts, backend.url)
    leaker = rcpts[123]
    quoted = _body(p.copy_for(leaker), "plain")
    commentary = [q for q in paragraphs("Apache-2.0")] + paragraphs("MPL-2.0")
    before, after = reflow(commentary[:12]), reflow(commentary[12:30])
    article = before + "\n" + quoted + "\n" + after
    total, own = n_words(article), n_words(quoted)
    assert own < 0.25 * total and total > 1800, (own, total)
    rep = decode([excerpt_words(article)], store, RING, THRESHOLD)
    assert rep.verdict == "identified", rep.as_json()["excerpts"]
    assert rep.candidates[0].recipient == leaker
    # the article alone, or with a short stretch of the mail, is still not this message
    assert decode([excerpt_words(before + after)], store, RING, THRESHOLD).verdict == "no_match"
    few = before + " " + window(quoted, 40, 12) + " " + after
    assert decode([excerpt_words(few)], store, RING, THRESHOLD).verdict == "no_match"


# --- text that reached all staff twice -------------------------------------------------------


def _pasted(html_body: str) -> str:
    """What a reader copies out of rendered HTML: tags gone (block ends as line breaks),
    entities decoded, runs of ASCII whitespace collapsed, U+00A0 kept."""
    import html as html_mod

    t = re.sub(r"(?i)<br\s*/?>|</(?:p|div)>", "\n", html_body)
    t = html_mod.unescape(re.sub(r"<[^>]+>", "", t))
    return "\n".join(re.sub(r"[ \t\r\f]+", " ", ln).strip(" ") for ln in t.split("\n"))


def _forward(x_copy: bytes, forwarder: str) -> bytes:
    """X forwards their copy inline to all staff, as Outlook does: a header block, then the
    original text and HTML (not quoted, not in a quote element), whitespace untouched."""
    import email.message

    plain, body = _body(x_copy, "plain"), _body(x_copy, "html")
    head = "From: The Boss\nSent: Monday\nTo: All Staff\nSubject: Licences\n\n"
    m = email.message.EmailMessage()
    m["Subject"] = "Fwd: Licences"
    m["From"] = forwarder
    m.set_content("FYI, see below.\n\n" + head + plain)
    m.add_alternative("<div>FYI, see below.</div><div><b>From:</b> The Boss<br>"
                      "<b>Sent:</b> Monday</div>" + body, subtype="html")
    return m.as_bytes()


def test_forwarded_copy_never_names_the_forwarder(tmp_path: Path) -> None:
    """Recipient X forwards their copy to all staff; Y leaks their copy of the forward. The
    forward's copies shed X's doubled gaps, so Y is named through the forward and X never as
    the leaker of the first message; the report tells where the text travelled."""
    from relay.fingerprint import prepare
    from relay.store import ACCEPTED

    rcpts = staff(200)
    first, store = _alternative(tmp_path, paragraphs("GPL-3")[5:12], rcpts)
    rnd = random.Random(11)
    named = 0
    for trial in range(6):
        x = rcpts[trial]
        derived = Derived()
        fwd = prepare(_forward(first.copy_for(x), x), x, "k1", K1, SCHEME.with_rate(RATE))
        store.record_message(**fwd.log_entry(x))
        for r in rcpts:
            store.set_copy_states(fwd.identity, [(r, ACCEPTED, "250 ok")])
        for y in rnd.sample([r for r in rcpts if r != x], 3):
            copy = fwd.copy_for(y)
            for text in (_pasted(_body(copy, "html")), _body(copy, "plain")):
                joined = re.sub(r"\s*\n\s*", " ", text)
                start = rnd.randrange(20, n_words(joined) - 100)
                rep = decode([excerpt_words(window(joined, start, 100))], store, RING,
                             THRESHOLD, derived)
                top = rep.candidates[0]
                assert not (rep.verdict == "identified" and top.recipient == x), rep.as_json()
                assert rep.verdict != "identified" or top.recipient == y, rep.as_json()
                named += rep.verdict == "identified"
                assert any(p["from_copy_of"] == x and p["sender"] == x
                           for p in rep.provenance), rep.provenance
    assert named >= 30, named  # of 36 pastes


def test_text_of_the_forwarders_own_copy_is_not_named(tmp_path: Path, backend: Backend) -> None:
    """X forwarded their copy to all staff, and the leak shows X's copy: the text may have
    travelled through that forward (X's sent mail, an archive, a forward made by an older
    relay that kept X's marks), so X is not named; the report says why."""
    from relay.fingerprint import prepare
    from relay.store import ACCEPTED

    rcpts = staff(200)
    first, store = _alternative(tmp_path, paragraphs("GPL-3")[5:12], rcpts, backend.url)
    x = rcpts[5]
    leak = excerpt_words(window(_body(first.copy_for(x), "plain"), 30, 120))
    before = decode([leak], store, RING, THRESHOLD)
    assert before.verdict == "identified" and before.candidates[0].recipient == x
    assert before.provenance == []
    fwd = prepare(_forward(first.copy_for(x), x), x, "k1", K1, SCHEME.with_rate(RATE))
    store.record_message(**fwd.log_entry(x))
    for r in rcpts:
        store.set_copy_states(fwd.identity, [(r, ACCEPTED, "250 ok")])
    rep = decode([leak], store, RING, THRESHOLD)
    assert rep.candidates[0].recipient == x
    assert rep.verdict == "inconclusive", rep.as_json()
    (prov,) = rep.provenance
    assert prov["from_copy_of"] == x and prov["explains_top_candidate"]
    assert prov["message"]["subject"] == "Fwd: Licences"
    assert prov["contains"]["subject"] == "Licences"
    # the forwarder is found from the forward's own whitespace as it arrived, whoever sent it
    store2_dir = tmp_path / "other"
    store2_dir.mkdir()
    first2, store2 = _alternative(store2_dir, paragraphs("GPL-3")[5:12], rcpts,
                                  backend.another().url)
    relayed = prepare(_forward(first2.copy_for(x), "assistant@example.com"),
                      "assistant@example.com", "k1", K1, SCHEME.with_rate(RATE))
    store2.record_message(**relayed.log_entry("assistant@example.com"))
    leak2 = excerpt_words(window(_body(first2.copy_for(x), "plain"), 30, 120))
    rep2 = decode([leak2], store2, RING, THRESHOLD)
    assert rep2.verdict == "inconclusive" and rep2.candidates[0].recipient == x
    assert rep2.provenance[0]["from_copy_of"] == x
    assert rep2.provenance[0]["sender"] == "assistant@example.com"
    # asked directly, with nothing derived before: the earlier message's code comes from the
    # scheme it was logged with
    from relay.provenance import copy_made_from

    assert copy_made_from(store2, relayed.identity, first2.identity, RING, Derived()) == (x, True)


# --- what the evidence sheet is made of ------------------------------------------------------


def test_gaps_say_where_each_read_gap_is(big: tuple[MemLog, Logged]) -> None:
    log, m = big
    leaker = m.recipients[321]
    ex = window(m.copy_for(leaker), 300, 100)
    ex = ex.replace("  ", " ", 2)  # two doubled gaps lost: two disagreements
    words = excerpt_words(ex)
    rep = decode([words], log, RING, THRESHOLD)
    top = rep.candidates[0]
    assert top.recipient == leaker
    assert len(rep.gaps) == top.bits_observed and all(g.counted for g in rep.gaps)
    assert len({g.word for g in rep.gaps}) == len(rep.gaps)
    for g in rep.gaps:
        assert g.excerpt == 0
        assert words[g.word].gap_after == g.observed
        assert g.between == (words[g.word].norm, words[g.word + 1].norm)
    assert sum(g.named == g.observed for g in rep.gaps) == top.bits_matching
    assert top.bits_observed - top.bits_matching == 2
    assert rep.as_json()["gaps"][0] == rep.gaps[0].as_json()
    # every recipient's counts, best first, and no names
    assert len(rep.detail.spread) == 1000
    assert rep.detail.spread[:MAX_CANDIDATES] == [(c.bits_observed, c.bits_matching)
                                                  for c in rep.candidates]
    assert rep.detail.sender == "boss@example.com" or rep.detail.sender is None
    assert rep.detail.key_id == "k1"
    # a copy agreeing at every read gap would have done better than the leaker's here
    assert rep.detail.perfect is not None and rep.detail.perfect < top.false_match_probability


def test_perfect_match_probability_is_the_leakers_when_nothing_disagrees(
        big: tuple[MemLog, Logged]) -> None:
    log, m = big
    leaker = m.recipients[5]
    rep = decode([excerpt_words(window(m.copy_for(leaker), 900, 40))], log, RING, THRESHOLD)
    top = rep.candidates[0]
    assert top.bits_matching == top.bits_observed
    assert rep.detail.perfect == top.false_match_probability
    assert rep.verdict == "inconclusive" and rep.detail.perfect > THRESHOLD


def test_gaps_of_pooled_excerpts_count_as_the_score_does() -> None:
    log = MemLog()
    people = staff(200)
    a = log.add(GPL, people, subject="first")
    b = log.add(APACHE, people[:150] + ["only-b@example.com"], subject="second")
    leaker = people[42]
    ea1 = excerpt_words(window(a.copy_for(leaker), 100, 60))
    ea2 = excerpt_words(window(a.copy_for(leaker), 130, 60))  # 30 words in common with ea1
    eb = excerpt_words(window(b.copy_for(leaker), 200, 50))
    rep = decode([ea1, ea2, eb], log, RING, THRESHOLD)
    top = rep.candidates[0]
    assert top.recipient == leaker
    assert sum(g.counted for g in rep.gaps) == top.bits_observed
    assert [sum(g.excerpt == i for g in rep.gaps) for i in range(3)] == [
        e["bits_observed"] for e in rep.excerpts]
    repeats = [g for g in rep.gaps if not g.counted]
    assert repeats and all(g.excerpt == 1 for g in repeats)
    assert all(g.named is not None for g in rep.gaps)
    # an outsider to the first message: its gaps are read but not theirs to count
    rep2 = decode([excerpt_words(window(b.copy_for("only-b@example.com"), 200, 120)),
                   ea1], log, RING, THRESHOLD)
    assert rep2.candidates[0].recipient == "only-b@example.com"
    assert all(g.named is None and not g.counted for g in rep2.gaps if g.excerpt == 1)
    assert sum(g.counted for g in rep2.gaps) == rep2.candidates[0].bits_observed
