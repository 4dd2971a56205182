#!/usr/bin/env python3
"""Write tests/vectors/release-0.1.db, its key file and suspect excerpts with their verdicts.

    PYTHONPATH=$PWD python3 tests/vectors/make_release_db.py          # refuses to overwrite

RUN THIS ONLY TO ADD A LOG OF A NEW RELEASE (under a new name), never to "fix" a failing
decode of release-0.1.db: that database stands for the logs already out there, and a later
version must decode them the same (tests/test_release_db.py).

How the database was made (release 0.1, the code of this commit):
- messages "mixed" (text/plain + text/html, quoted-printable) and "plain" (text/plain only),
  30 recipients each, went through the real relay: `python -m relay serve` over loopback into
  a recording sink in its own process (tests/test_crash.py), 4 upstream connections; the
  excerpts of these messages are cut from the copies the sink received;
- messages "even" and "independent" (text/plain + text/html, 30 recipients each) were logged
  with the codes of older releases (word gaps in blocks cut EVEN; independent bits, block 0)
  the way delivery logs a message: fingerprint.prepare, Store.record_message(**log_entry),
  Store.add_copies, then each copy's state accepted; their excerpts are cut from
  Prepared.copy_for, the bytes such a release sent.
The key (release-0.1.key) is a TEST-ONLY key, public in this repository.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import hashlib
import html
import json
import re
import shutil
import sys
import tempfile
import textwrap
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import test_crash as scenario  # noqa: E402

from relay import fingerprint, keys  # noqa: E402
from relay.config import PROFILES  # noqa: E402
from relay.decoding import decode  # noqa: E402
from relay.scheme import BLOCK, CUT, EVEN, V2, Scheme  # noqa: E402
from relay.store import ACCEPTED, Store  # noqa: E402
from relay.tokens import excerpt_words  # noqa: E402

NAME = "release-0.1"
KEY_ID = "test-only-0.1"
KEY_HEX = "7e57" * 16
KEY_TEXT = (f"# TEST-ONLY key of tests/vectors/{NAME}.db: public in the repository, never use "
            f"it for real mail\n{KEY_ID} {KEY_HEX}\n")
SENDER = scenario.SENDER
UNRELATED = (
    "Autumn came early to the valley that year. The orchards were picked bare by the middle "
    "of September, and the river ran low and clear over the stones. In the village the baker "
    "started lighting his oven an hour later, because fewer people came for bread before dawn, "
    "and the school bus took the long road around the hill while the bridge was repaired. Most "
    "evenings the old men sat outside the cafe and argued about the weather, the price of "
    "diesel and who had the best pears, as they had done for as long as anyone could remember.")


def gpl_paragraphs() -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 40]


def message(subject: str, mid: str, paras: list[str], with_html: bool) -> bytes:
    m = EmailMessage()
    m["From"] = f"The Boss <{SENDER}>"
    m["To"] = "all-staff@example.com"
    m["Subject"] = subject
    m["Message-ID"] = f"<{mid}@example.com>"
    m["Date"] = "Mon, 24 Nov 2025 10:00:00 +0000"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras), cte="quoted-printable")
    if with_html:
        m.add_alternative("<html><body>" + "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
                          + "</body></html>", subtype="html", cte="quoted-printable")
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def recipients(tag: str) -> list[str]:
    return [f"{tag}{i:02d}@example.com" for i in range(30)]


def body_text(copy: bytes, subtype: str) -> str:
    msg = email.message_from_bytes(copy, policy=email.policy.default)
    part = msg.get_body((subtype,))
    assert part is not None
    text = part.get_content()
    if subtype == "html":  # what a reader copies from the rendered page, NBSP kept
        text = re.sub(r"</p>\s*", "\n\n", text)
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return text.replace("\r\n", "\n")


def window(text: str, start: int, n: int) -> str:
    """Words start .. start+n of `text` with the whitespace between them as it is."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    return text[spans[start][0]:spans[min(start + n, len(spans)) - 1][1]] + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.parse_args()
    db_out = HERE / f"{NAME}.db"
    if db_out.exists():
        print(f"{db_out} exists: read this script's docstring", file=sys.stderr)
        return 2
    paras = gpl_paragraphs()
    msgs = {  # name -> (raw, recipients, block, cut)
        "mixed": (message("Licensing", "release-mixed", paras[4:8], True), recipients("mixed"),
                  BLOCK, CUT),
        "plain": (message("Conveying", "release-plain", paras[8:12], False),
                  recipients("plain"), BLOCK, CUT),
        "even": (message("Patents", "release-even", paras[12:16], True), recipients("even"),
                 BLOCK, EVEN),
        "independent": (message("Termination", "release-independent", paras[16:20], True),
                        recipients("indep"), 0, EVEN),
    }
    work = Path(tempfile.mkdtemp(prefix="relay-release-db-"))
    (work / "var").mkdir(mode=0o700)
    keyfile = work / "var" / "relay.key"
    keyfile.write_text(KEY_TEXT)
    keyfile.chmod(0o600)
    key = keys.load(keyfile).get(KEY_ID)
    copies: dict[str, dict[str, bytes]] = {}
    sink = scenario.SinkProcess(work / "sink.log")
    try:
        relay = scenario.RelayProcess(scenario.write_config(work, sink.port, concurrency=4))
        try:
            for name in ("mixed", "plain"):
                raw, rcpts, _, _ = msgs[name]
                reply = scenario.send_once(relay.port, SENDER, rcpts, raw, timeout=120)
                assert reply.startswith("250"), reply
            assert relay.terminate() == 0
        finally:
            relay.kill()
        for c in sink.copies():
            assert len(c.rcpts) == 1
            name = c.rcpts[0][:5].rstrip("0123456789")
            copies.setdefault(name, {})[c.rcpts[0]] = c.data
    finally:
        sink.stop()
    store = Store(work / "var" / "relay.db", create=False)
    for name in ("even", "independent"):
        raw, rcpts, block, cut = msgs[name]
        p = fingerprint.prepare(raw, SENDER, KEY_ID, key,  # code v2: the release's code
                                Scheme(V2, PROFILES["standard"], block, cut))
        store.record_message(**p.log_entry(SENDER))
        store.add_copies(p.identity, rcpts)
        store.set_copy_states(p.identity, [(r, ACCEPTED, "250 2.0.0 queued") for r in rcpts])
        copies[name] = {r: p.copy_for(r) for r in rcpts}
    store.close()
    assert {n: len(c) for n, c in copies.items()} == {"mixed": 30, "plain": 30, "even": 30,
                                                      "independent": 30}, copies.keys()

    # the excerpts: (file, message, recipient whose copy is cut, part, first word, words)
    cuts = [
        ("mixed-plain-100.txt", "mixed", "mixed07@example.com", "plain", 20, 100),
        ("mixed-html-100.txt", "mixed", "mixed21@example.com", "html", 60, 100),
        ("mixed-plain-40.txt", "mixed", "mixed03@example.com", "plain", 10, 40),
        ("plain-120.txt", "plain", "plain11@example.com", "plain", 30, 120),
        ("even-plain-100.txt", "even", "even05@example.com", "plain", 15, 100),
        ("even-html-100.txt", "even", "even29@example.com", "html", 90, 100),
        ("independent-plain-120.txt", "independent", "indep17@example.com", "plain", 25, 120),
        ("independent-html-120.txt", "independent", "indep00@example.com", "html", 70, 120),
    ]
    exdir = HERE / NAME
    exdir.mkdir(exist_ok=True)
    texts: dict[str, tuple[str, str | None]] = {}
    for fname, name, rcpt, sub, start, n in cuts:
        texts[fname] = (window(body_text(copies[name][rcpt], sub), start, n), rcpt)
    raw_mixed = msgs["mixed"][0]
    texts["mixed-original-100.txt"] = (window(body_text(raw_mixed, "plain"), 20, 100), None)
    texts["unrelated.txt"] = (UNRELATED + "\n", None)

    db = work / "var" / "relay.db"
    store = Store(db, create=False)
    ring = keys.load(keyfile)
    expect = {}
    for fname, (text, source) in texts.items():
        rep = decode([excerpt_words(text)], store, ring).as_json()
        top = rep["candidates"][0] if rep["candidates"] else None
        if rep["verdict"] == "identified":
            assert top is not None and top["recipient"] == source, (fname, rep)
        expect[fname] = {
            "copy_of": source, "verdict": rep["verdict"],
            "recipient": top["recipient"] if rep["verdict"] == "identified" else None,
            "best_candidate": top["recipient"] if top else None,
            "bits_observed": rep["excerpts"][0]["bits_observed"],
            "message_id": rep["message"]["message_id"] if rep["message"] else None,
        }
        (exdir / fname).write_text(text)
        print(f"{fname:28s} {rep['verdict']:12s} {expect[fname]['recipient']} "
              f"bits {expect[fname]['bits_observed']} "
              f"p {top['false_match_probability'] if top else None}")
    store.close()
    for suffix in ("-wal", "-shm"):
        assert not Path(str(db) + suffix).exists() or Path(str(db) + suffix).stat().st_size == 0
    shutil.copyfile(db, db_out)
    (HERE / f"{NAME}.key").write_text(KEY_TEXT)
    (exdir / "expected.json").write_text(json.dumps({
        "note": f"verdicts of the excerpts against {NAME}.db, written once by "
                "make_release_db.py; never edited to make a test pass",
        "threshold": 1e-6, "db_sha256": hashlib.sha256(db_out.read_bytes()).hexdigest(),
        "excerpts": expect}, indent=1) + "\n")
    shutil.rmtree(work)
    print(f"wrote {db_out} ({db_out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
