#!/usr/bin/env python3
"""Write the known-answer vectors of the keyed code: tests/vectors/*.eml and codes.json.

    PYTHONPATH=$PWD python3 tests/vectors/make_vectors.py          # refuses to overwrite
    PYTHONPATH=$PWD python3 tests/vectors/make_vectors.py --force

RUN THIS ONLY WHEN A NEW SCHEME IS ADDED (a new block cut, profile or code label), and then
only to ADD that scheme's values; never to "fix" a failing vector. A failing vector means that
today's code signs or reads a logged message differently from the release that logged it:
every copy of every message already sent would then decode against the wrong bits. Check with
`git diff tests/vectors/codes.json` that no existing value changed before committing.

What is fixed: the key bytes, the envelope sender, the recipients, two messages (a text/plain
+ text/html alternative with quoted-printable HTML, and a plain-only one; written here as .eml
files once and read back from them), and a list of words. What is recorded (tests/test_vectors.py
compares today's code against it): the message identity, every document's word hashes
(hashes.word_hashes), shingles, carrier keys (hex) and gap classes, each recipient's CodeBook
seed, and for every code scheme a message can have been logged with (code version 2:
independent bits, block = 0; blocks cut EVEN; blocks cut UNITS; code version 3: blocks cut
UNITS) the block layout, every recipient's bits and the
SHA-256 of every rendered copy (fingerprint.Prepared.copy_for).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import quopri
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from relay import codes, fingerprint  # noqa: E402
from relay.hashes import carrier_keys, word_hashes  # noqa: E402
from relay.scheme import BLOCK, EVEN, UNITS, V2, V3, Scheme  # noqa: E402

KEY_HEX = "7e57" * 16  # TEST-ONLY key ("test"), never used for real mail
KEY_ID = "vectors"
SENDER = "ceo@example.com"
WORD_RATE = 1 / 6  # the standard profile
RECIPIENTS = ["alice@example.com", "Bob.Martin@Example.COM", "carol+news@example.org",
              "dmitri@example.net", "eve@example.com"]
WORDS = ["the", "The", "café", "naïve", "e.g.", "2026", "l'été", "x" * 40, "ß", "東京"]
# (name, code version, block, cut): every code a logged message can carry
SCHEMES = [("independent", V2, 0, EVEN), ("even", V2, BLOCK, EVEN),
           ("units", V2, BLOCK, UNITS),
           ("v3", V3, BLOCK, UNITS)]

PARAGRAPHS = (
    "The quarterly review is scheduled for next Thursday in the main hall. Every team lead "
    "should bring a short summary of the work done since the last meeting. We will discuss "
    "the budget for the coming year and the plans for the new office.",
    "Please remember that the parking lot will be closed for repairs during the whole week. "
    "The city has promised that the work will be finished before the end of the month. Staff "
    "who usually drive are asked to use public transport or to share a ride with colleagues.",
    "Dr. Moreau from the café downstairs, e.g. the one near the station, has offered a "
    "discount to staff: show your badge at the counter. Details are on "
    "https://intranet.example.com/cafe and questions go to office@example.com as usual.",
    "The new expense policy comes into force on the first day of next month. Receipts must be "
    "scanned and attached to each claim, and claims older than sixty days will no longer be "
    "accepted. The finance team will hold two short sessions to explain the new form.",
    "Finally, the annual staff party will take place on the last Friday of the month. Food and "
    "drinks will be provided by the usual caterer. Partners are welcome, but please tell the "
    "office by the end of next week so that we can plan the seating and the menu.",
)

HEAD = ("From: The Boss <ceo@example.com>\r\nTo: all-staff@example.com\r\n"
        "Subject: {subject}\r\nMessage-ID: <{mid}@example.com>\r\n"
        "Date: Mon, 24 Nov 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n")


def plain_text() -> str:
    return "\r\n\r\n".join("\r\n".join(textwrap.wrap(p, 72)) for p in PARAGRAPHS) + "\r\n"


def mixed_message() -> bytes:
    html = ("<html><body>\n" + "\n".join(f"<p>{p}</p>" for p in PARAGRAPHS)
            + "\n</body></html>\n").replace("\n", "\r\n")
    qp = quopri.encodestring(html.encode("utf-8")).decode("ascii").replace("\r\n", "\n")
    qp = qp.replace("=\n", "=\r\n").replace("\n", "\r\n").replace("\r\r\n", "\r\n")
    return (HEAD.format(subject="Announcements", mid="vectors-mixed")
            + 'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
            + "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + "Content-Transfer-Encoding: 8bit\r\n\r\n" + plain_text()
            + "--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
            + "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp
            + "--b1--\r\n").encode("utf-8")


def plain_message() -> bytes:
    return (HEAD.format(subject="Parking", mid="vectors-plain")
            + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            + "\r\n" + plain_text()).encode("utf-8")


def vectors_of(raw: bytes, key: bytes) -> dict:
    out: dict = {}
    for name, version, block, cut in SCHEMES:
        p = fingerprint.prepare(raw, SENDER, KEY_ID, key,
                                Scheme(version, WORD_RATE, block, cut))
        if not out:
            out["identity"] = p.identity
            out["documents"] = [{
                "part": d.part, "kind": d.kind, "hashes": list(d.hashes),
                "shingles": d.shingles(),
                "carrier_keys": [c.hex() for c in carrier_keys(d.hashes)],
                "classes": d.classes.hex()} for d in p.documents]
            book = codes.CodeBook(key, p.identity)
            out["seeds"] = {r: book.seed(r).hex() for r in RECIPIENTS}
            out["schemes"] = {}
        code = p._code
        assert code is not None
        blocks = code.blocks
        out["schemes"][name] = {
            # the version is written for V3 on: the V2 entries were written before it existed
            **({"version": version} if version != V2 else {}),
            "block": block, "cut": int(cut),
            "blocks": None if blocks is None else [[len(m), k] for m, k in
                                                     zip(blocks.members, blocks.ones,
                                                         strict=True)],
            "bits": {r: "".join(map(str, p.bits_for(r))) for r in RECIPIENTS},
            "copy_sha256": {r: hashlib.sha256(p.copy_for(r)).hexdigest() for r in RECIPIENTS},
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="overwrite codes.json")
    args = ap.parse_args()
    target = HERE / "codes.json"
    if target.exists() and not args.force:
        print(f"{target} exists: read this script's docstring before using --force",
              file=sys.stderr)
        return 2
    key = bytes.fromhex(KEY_HEX)
    messages = {"mixed": mixed_message(), "plain": plain_message()}
    data: dict = {
        "note": "known answers of the keyed code; made by make_vectors.py, never edited to "
                "make a test pass. The key is for tests only.",
        "key_hex": KEY_HEX, "key_id": KEY_ID, "sender": SENDER, "word_rate": WORD_RATE,
        "recipients": RECIPIENTS,
        "words": {"words": WORDS, "hashes": word_hashes(key, WORDS)},
        "messages": {},
    }
    for name, raw in messages.items():
        eml = HERE / f"{name}.eml"
        if not eml.exists() or args.force:
            eml.write_bytes(raw)
        data["messages"][name] = {"file": eml.name, **vectors_of(eml.read_bytes(), key)}
    target.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
