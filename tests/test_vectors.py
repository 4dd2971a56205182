"""Known answers of the keyed code: today's code must sign and read a logged message exactly as
the release that logged it did. The expected values in tests/vectors/codes.json were written
once by tests/vectors/make_vectors.py (read its docstring: it is run only to add a new scheme,
never to make a failing vector pass). A failure here means every copy already sent would be
decoded against the wrong bits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from relay import codes, fingerprint, mime
from relay.hashes import carrier_keys, message_identity, word_hashes
from relay.scheme import BLOCK, EVEN, SCHEME, UNITS, V2, V3, Scheme

HERE = Path(__file__).resolve().parent / "vectors"
V = json.loads((HERE / "codes.json").read_text())
KEY = bytes.fromhex(V["key_hex"])
MESSAGES = sorted(V["messages"])
SCHEMES = [(m, s) for m in MESSAGES for s in V["messages"][m]["schemes"]]


def raw(message: str) -> bytes:
    return (HERE / V["messages"][message]["file"]).read_bytes()


def prepared(message: str, scheme: str) -> fingerprint.Prepared:
    s = V["messages"][message]["schemes"][scheme]
    return fingerprint.prepare(raw(message), V["sender"], V["key_id"], KEY,
                               Scheme(s.get("version", V2), V["word_rate"], s["block"], s["cut"]))


def test_every_scheme_has_vectors() -> None:
    # code v2: independent bits (block 0) and every block cut; v3 (new mail); a new scheme
    # gets its vectors (make_vectors.py SCHEMES), an old one keeps them
    for m in MESSAGES:
        schemes = {(s.get("version", V2), s["block"], s["cut"])
                   for s in V["messages"][m]["schemes"].values()}
        assert schemes == {(V2, 0, EVEN), (V2, BLOCK, EVEN),
                           (V2, BLOCK, UNITS),
                           (V3, BLOCK, UNITS)}
        s = SCHEME
        assert (s.version, s.block, s.cut) in schemes


def test_word_hashes() -> None:
    assert word_hashes(KEY, V["words"]["words"]) == V["words"]["hashes"]


@pytest.mark.parametrize("message", MESSAGES)
def test_identity(message: str) -> None:
    assert message_identity(raw(message), V["sender"]) == V["messages"][message]["identity"]


@pytest.mark.parametrize("message", MESSAGES)
def test_documents_hashes_shingles_carrier_keys(message: str) -> None:
    want = V["messages"][message]["documents"]
    got = prepared(message, "units").documents
    assert [(d.part, d.kind) for d in got] == [(d["part"], d["kind"]) for d in want]
    for d, w in zip(got, want, strict=True):
        assert list(d.hashes) == w["hashes"], d.part
        assert d.shingles() == w["shingles"], d.part
        assert [c.hex() for c in carrier_keys(d.hashes)] == w["carrier_keys"], d.part
        assert d.classes.hex() == w["classes"], d.part


@pytest.mark.parametrize("message", MESSAGES)
def test_codebook_seeds(message: str) -> None:
    m = V["messages"][message]
    book = codes.CodeBook(KEY, m["identity"])
    assert {r: book.seed(r).hex() for r in V["recipients"]} == m["seeds"]


@pytest.mark.parametrize(("message", "scheme"), SCHEMES)
def test_block_layout(message: str, scheme: str) -> None:
    want = V["messages"][message]["schemes"][scheme]["blocks"]
    blocks = prepared(message, scheme)._code.blocks  # type: ignore[union-attr]
    got = None if blocks is None else [[len(m), k] for m, k in
                                       zip(blocks.members, blocks.ones, strict=True)]
    assert got == want


@pytest.mark.parametrize(("message", "scheme"), SCHEMES)
def test_bits(message: str, scheme: str) -> None:
    p = prepared(message, scheme)
    want = V["messages"][message]["schemes"][scheme]["bits"]
    assert {r: "".join(map(str, p.bits_for(r))) for r in V["recipients"]} == want


@pytest.mark.parametrize(("message", "scheme"), SCHEMES)
def test_copies(message: str, scheme: str) -> None:
    p = prepared(message, scheme)
    want = V["messages"][message]["schemes"][scheme]["copy_sha256"]
    # the reference rendering (relay.splice.render) makes exactly the pinned copies
    ref = {r: p._render(p.bits_for(r)) for r in V["recipients"]}
    assert {r: hashlib.sha256(c).hexdigest() for r, c in ref.items()} == want
    # copies as the relay makes them (relay.template): the same bytes, except where a
    # quoted-printable line that could pass 76 octets is soft-broken elsewhere (same text)
    for r, c in ref.items():
        got = p.copy_for(r)
        if hashlib.sha256(got).hexdigest() == want[r]:
            continue
        mine, theirs = mime.analyse(got).parts, mime.analyse(c).parts
        assert [(q.path, q.text) for q in mine] == [(q.path, q.text) for q in theirs]
        for q, t in zip(mine, theirs, strict=True):
            assert q.body == t.body or q.cte == "quoted-printable"
            assert all(len(x) <= 76 for x in q.body.split(b"\r\n")) or q.cte != \
                "quoted-printable"
        assert got[:mine[0].start] == c[:theirs[0].start]
        assert got[mine[-1].end:] == c[theirs[-1].end:]
