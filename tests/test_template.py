"""relay.template: a copy made from the message's template is the copy `Prepared._render` (the
reference, relay.mime.render) makes, as every reader decodes it: the same text in every text
part, byte-identical 7bit/8bit bodies and every byte outside the text bodies, quoted-printable
lines within 76 octets, base64 lines at the part's width, no line over 998 octets. Over the
repository's MIME sample set (tests/clients.py, CPython's email corpus, the messages
tests/test_mime.py and tests/test_fingerprint.py build, the known-answer vectors) and
hypothesis-drawn bit patterns."""

from __future__ import annotations

import binascii
import sysconfig
import textwrap
from pathlib import Path

import clients
import numpy as np
import pytest
import test_fingerprint as tfp  # the messages it builds (one sample set, not a copy of it)
import test_mime as tm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import mime, template
from relay.fingerprint import Prepared, prepare
from relay.policy import normalise_newlines
from relay.scheme import SCHEME

KEY = bytes(range(32))
SENDER = "ceo@example.com"
HERE = Path(__file__).resolve().parent
CORPUS = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"


def _long_qp_lines() -> bytes:
    """One-line paragraphs in quoted-printable full of escapes, with "From " and "." where a
    soft break could fall: the lines a template must break with room for every carrier."""
    words = " ".join(clients.prose("fr", 4, long=True)).split()
    paras = []
    for k in range(0, len(words) - 60, 60):
        chunk = words[k:k + 60]
        chunk[7] = "From"
        chunk[20] = ".dot"
        paras.append(" ".join(chunk) + " a=b. Fin.")
    text = "\n".join(paras) + "\n"
    return (b"From: ceo@example.com\r\nTo: all-staff@example.com\r\nSubject: x\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + clients.qp(text, "utf-8"))


def _html_source_ends(cte: str) -> bytes:
    words = " ".join(clients.prose("en", 2)).split()
    lines = [" ".join(words[i:i + 9]) for i in range(0, len(words), 9)]
    html_text = "<html><body><p>" + "\n".join(lines) + "</p></body></html>\n"
    body = {"quoted-printable": lambda: clients.qp(html_text, "utf-8"),
            "base64": lambda: clients.b64(html_text, "utf-8"),
            "7bit": lambda: html_text.replace("\n", "\r\n").encode()}[cte]()
    return (b"From: ceo@example.com\r\nTo: all-staff@example.com\r\nSubject: x\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body)


def _long_8bit(kind: str) -> bytes:
    line = " ".join(clients.prose("en", 3))[:950].rsplit(" ", 1)[0]
    body = f"<p>{line}</p>" if kind == "html" else line
    return (f"From: ceo@example.com\r\nTo: all-staff@example.com\r\nSubject: x\r\n"
            f"Content-Type: text/{kind}; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit"
            f"\r\n\r\n{body}\r\nshort second line with a few gaps\r\n").encode()


def _forwarded() -> bytes:
    """A fingerprinted copy forwarded back to all staff: its earlier marks are edits (marks)
    every copy of the forward makes."""
    first = prepare(tfp.build(tfp.prose()), SENDER, "k1", KEY, SCHEME.with_rate(1 / 6))
    return tfp._forward_of(first.copy_for("x@example.com"))


def sample_set() -> list[tuple[str, bytes]]:
    out = [(name, raw) for name, _, raw in clients.samples()]
    out += [(f"mime-{k}", v) for k, v in tm.SAMPLES.items()]
    for plain_cte, html_cte, charset in [("quoted-printable", "base64", "utf-8"),
                                         ("8bit", "quoted-printable", "utf-8"),
                                         ("7bit", "7bit", "us-ascii"),
                                         ("base64", "8bit", "iso-8859-1")]:
        out.append((f"fp-{plain_cte}-{html_cte}",
                    tfp.build(tfp.prose(), plain_cte, html_cte, charset)))
    out.append(("fp-forward-marks", _forwarded()))
    out += [(f"html-ends-{c}", _html_source_ends(c)) for c in ("quoted-printable", "base64",
                                                                 "7bit")]
    out += [(f"long-8bit-{k}", _long_8bit(k)) for k in ("plain", "html")]
    out.append(("long-qp-lines", _long_qp_lines()))
    out += [(f"vector-{f}", (HERE / "vectors" / f).read_bytes()) for f in ("mixed.eml",
                                                                              "plain.eml")]
    out += [(f"corpus-{p.name}", normalise_newlines(p.read_bytes()))
            for p in sorted(CORPUS.glob("msg_*.txt"))]
    return out


SAMPLES = sample_set()
_PREPARED: dict[str, Prepared] = {}


def prepared(name: str) -> Prepared:
    if name not in _PREPARED:
        raw = dict(SAMPLES)[name]
        _PREPARED[name] = prepare(raw, SENDER, "k1", KEY, SCHEME.with_rate(0.5))
    return _PREPARED[name]


WITH_CARRIERS = [n for n, _ in SAMPLES if prepared(n).carriers]


def _lines(body: bytes) -> list[bytes]:
    return body.replace(b"\r\n", b"\n").split(b"\n")


def differences(p: Prepared, bits: list[int]) -> list[str]:
    """Every way the template's copy with these bits differs from the reference's beyond what
    the template may change (where quoted-printable lines are soft-broken)."""
    got, ref = p.copy_with(bits), p._render(bits)
    if got == ref:
        return []
    out: list[str] = []
    g, r = mime.analyse(got, strict=False), mime.analyse(ref, strict=False)
    gp, rp = {q.path: q for q in g.parts}, {q.path: q for q in r.parts}
    if sorted(gp) != sorted(rp):
        return [f"text parts {sorted(gp)} != {sorted(rp)}"]
    orig = {q.path: q for q in p._parts}
    o = c = 0  # every byte outside the rewritten text bodies is the original message's
    for q in sorted(p._parts, key=lambda q: q._start):
        a = gp[q.path]
        if got[c:a._start] != p.raw[o:q._start]:
            out.append(f"bytes outside the text bodies before part {q.path}")
        c, o = a._end, q._end
    if got[c:] != p.raw[o:]:
        out.append("bytes outside the text bodies at the end")
    for path in sorted(gp):
        a, b = gp[path], rp[path]
        if a.text != b.text:
            out.append(f"part {path}: another text")
        if a.cte in (*mime.IDENTITY_CTES, "base64") and a._body != b._body:
            out.append(f"part {path}: a {a.cte} body with other bytes")
        if a.cte == "quoted-printable":
            if a._body != b._body:
                before = set(_lines(orig[path]._body)) if path in orig else set()
                if [x for x in _lines(a._body) if len(x) > 76 and x not in before]:
                    out.append(f"part {path}: a quoted-printable line over 76 octets")
                if binascii.a2b_qp(a._body) != binascii.a2b_qp(b._body):
                    out.append(f"part {path}: decodes to other bytes")
        if a.cte == "base64":
            s, e = a._b64_span
            lines = _lines(a._body[s:e])
            w = orig[path]._b64_width if path in orig else a._b64_width
            if any(len(x) != w for x in lines[:-1]) or len(lines[-1]) > w:
                out.append(f"part {path}: base64 lines of another width")
        if any(len(x) > mime.LINE_MAX for x in _lines(a._body)):
            out.append(f"part {path}: a line over 998 octets")
    return out


# --- the sample set ---------------------------------------------------------------------------


def test_sample_set_is_real_and_varied() -> None:
    assert len(SAMPLES) > 60 and len(WITH_CARRIERS) > 30 and len(IDENTITY_ONLY) > 10
    ctes = {pt.cte for n in WITH_CARRIERS for pt in prepared(n)._parts}
    assert {"7bit", "8bit", "quoted-printable", "base64"} <= ctes
    # every part got a template except the one it cannot make (UTF-16, not ASCII-compatible):
    # a template that fails its check at prepare falls back silently, and would show here
    for n in WITH_CARRIERS:
        t = prepared(n)._template
        assert t is not None, n
        for pt, ok in zip(prepared(n)._parts, t.templated, strict=True):
            assert ok == (pt.charset != "utf-16"), (n, pt.path)


@pytest.mark.parametrize("name", WITH_CARRIERS)
def test_all_single_and_all_doubled_match_the_reference(name: str) -> None:
    p = prepared(name)
    assert p._template is not None
    for bits in ([0] * p.carriers, [1] * p.carriers, [k % 2 for k in range(p.carriers)]):
        assert differences(p, bits) == []


@pytest.mark.parametrize("name", WITH_CARRIERS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(data=st.data())
def test_drawn_bits_match_the_reference(name: str, data: st.DataObject) -> None:
    p = prepared(name)
    n = p.carriers
    bits = data.draw(st.one_of(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.integers(0, 2 ** 32 - 1).map(
            lambda s: np.random.default_rng(s).integers(0, 2, n).tolist())))
    assert differences(p, bits) == []


@pytest.mark.parametrize("name", WITH_CARRIERS)
def test_copies_for_recipients_match_the_reference(name: str) -> None:
    p = prepared(name)
    for r in ("a@example.com", "Bob.Martin@Example.COM", "all-staff@example.com"):
        bits = p.bits_for(r)
        assert differences(p, bits) == []
        assert p.copy_for(r) == p.copy_with(bits)


IDENTITY_ONLY = [n for n in WITH_CARRIERS
                 if all(pt.cte in mime.IDENTITY_CTES for pt in prepared(n)._parts)]


@pytest.mark.parametrize("name", IDENTITY_ONLY)
def test_7bit_8bit_only_messages_are_byte_identical(name: str) -> None:
    p = prepared(name)
    rng = np.random.default_rng(7)
    for _ in range(5):
        bits = rng.integers(0, 2, p.carriers).tolist()
        assert p.copy_with(bits) == p._render(bits)


def test_qp_lines_that_fit_are_the_reference_lines() -> None:
    """A quoted-printable line that fits 76 with all its carriers doubled is exactly the line
    the reference makes; only lines that could pass 76 are broken elsewhere."""
    p = prepared("vector-mixed.eml")
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, p.carriers).tolist()
    got, ref = p.copy_with(bits), p._render(bits)
    assert got != ref and differences(p, bits) == []
    head = got.split(b"Content-Transfer-Encoding: quoted-printable")[0]
    assert ref.startswith(head)  # the 8bit text/plain part: byte-identical
    # lines with room for every carrier doubled: the copies are the reference's bytes
    text = "\n".join(textwrap.fill(para, 40) for para in clients.prose("fr", 4)) + "\n"
    raw = (b"From: ceo@example.com\r\nTo: all-staff@example.com\r\nSubject: x\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + clients.qp(text, "utf-8"))
    p2 = prepare(raw, SENDER, "k1", KEY, SCHEME.with_rate(0.5))
    assert p2.carriers > 50 and b"=C3=A9" in raw
    for bits in ([1] * p2.carriers, rng.integers(0, 2, p2.carriers).tolist()):
        assert p2.copy_with(bits) == p2._render(bits)


def test_bits_as_numpy_array_or_bytes() -> None:
    p = prepared("fp-quoted-printable-base64")
    bits = p.bits_for("a@example.com")
    want = p.copy_with(bits)
    assert p.copy_with(np.array(bits, dtype=np.uint8)) == want
    assert p.copy_with(np.array(bits, dtype=np.int64)) == want
    assert p.copy_with(bytes(bits)) == want
    with pytest.raises(ValueError):
        p.copy_with(bits[:-1])


# --- parts the template does not make ---------------------------------------------------------


def test_utf16_part_is_made_the_reference_way() -> None:
    """A UTF-16 base64 part (not ASCII-compatible) gets no template; its copies are made by
    relay.mime.render, the rest of the message by the template."""
    p = prepared("mime-skips")
    assert p._template is not None
    paths = {pt.path: ok for pt, ok in zip(p._parts, p._template.templated, strict=True)}
    assert paths.get("4") is False and paths.get("9") is True
    assert "utf-16" in p._template.why[[pt.path for pt in p._parts].index("4")]
    for r in ("a@example.com", "b@example.com"):
        bits = p.bits_for(r)
        assert p.copy_for(r) == p._render(bits)


def test_a_part_that_fails_its_check_is_made_the_reference_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A template that would skip an insertion is caught when the message is prepared, and the
    part falls back to the reference renderer: copies stay right."""
    real = template._FlatBuilder.add_part

    def lossy(self: template._FlatBuilder, pb: template._PartBase, first: int) -> None:
        if pb.at:
            pb = template._PartBase(pb.part, pb.body, pb.at[:-1], pb.insert[:-1])
        real(self, pb, first)

    monkeypatch.setattr(template._FlatBuilder, "add_part", lossy)
    p = prepare(dict(SAMPLES)["fp-8bit-quoted-printable"], SENDER, "k1", KEY, SCHEME.with_rate(0.5))
    assert p._template is None or not any(p._template.templated)
    bits = p.bits_for("a@example.com")
    assert p.copy_with(bits) == p._render(bits)


def test_a_broken_template_fails_the_comparison() -> None:
    """The comparison these tests make catches a template that skips one insertion (the test
    would fail if the template were wrong)."""
    p = prepare(dict(SAMPLES)["fp-8bit-quoted-printable"], SENDER, "k1", KEY, SCHEME.with_rate(0.5))
    assert p._template is not None
    flat = next(it for it in p._template.items if isinstance(it, template._Flat) and it.runs)
    run = flat.runs[-1]
    assert run.perm is None  # carriers in reading order insert in order
    run.pos, run.count = run.pos[:-1], run.count - 1  # the last carrier inserts nothing
    assert differences(p, [1] * p.carriers)
    assert template.check(p._template, p._parts, [
        [(g.start, g.end, " " if pt.subtype == "plain" or g.start < g.end else "",
          " " if pt.subtype == "plain" else "&nbsp;") for _, g in gaps]
        for pt, gaps in zip(p._parts, p._gaps, strict=True)], p._marks,
        np.ones(p.carriers, np.uint8))


# --- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("content, rel, grow", [
    (b"a" * 100, [10, 50, 99], [6, 6, 6]),
    (b"x=C3=A9" * 20, [7 * k for k in range(20)], [1] * 20),
    (b"word " * 30 + b"end=", [5 * k + 4 for k in range(30)], [6] * 30),
    (b"ab From here " * 10, [3, 8, 20, 60], [1, 1, 6, 6]),
    (b"one .two " * 15, [3, 12, 30], [6, 6, 6]),
    (b"a b c" * 30 + b"&", [150], [6]),  # an insertion at the end (before the line end)
])
def test_qp_break_leaves_room_for_every_insertion(content: bytes, rel: list[int],
                                                  grow: list[int]) -> None:
    line, moved = template._qp_break(content, rel, grow, b"\r\n")
    pieces = line.split(b"\r\n")
    assert b"".join(x[:-1] for x in pieces[:-1]) + pieces[-1] == content
    # every piece, with every insertion made, still fits 76 with its "="
    starts = np.cumsum([0] + [len(x) + 2 for x in pieces[:-1]])
    for k, x in enumerate(pieces):
        s, e = starts[k], starts[k] + len(x) + (1 if k == len(pieces) - 1 else 0)
        extra = sum(g for m, g in zip(moved, grow, strict=True) if s <= m < e)
        assert len(x) + extra <= 76
        if k:
            assert not x.startswith((b".", b"From "))
    assert binascii.a2b_qp(line) == binascii.a2b_qp(content)  # never inside an =XX escape
    for m, r in zip(moved, rel, strict=True):  # an insertion lands before the same byte
        shift = sum(1 for x in starts[1:] if x <= m) * 3
        assert m - shift == r
        assert line[m:m + 1] == content[r:r + 1] or r == len(content)


def test_qp_break_refuses_what_it_cannot_break() -> None:
    with pytest.raises(template.NoTemplate):
        template._qp_break(b"=C3" * 40, [0], [200], b"\r\n")


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 128, 129, 1000])
@pytest.mark.parametrize("width, eol", [(64, b"\r\n"), (76, b"\n"), (72, b"\r\n")])
def test_b64_wrap_cuts_lines_as_the_reference(n: int, width: int, eol: bytes) -> None:
    enc = binascii.b2a_base64(bytes(range(256)) * 4, newline=False)[:n]
    want = eol.join(enc[i:i + width] for i in range(0, len(enc), width))
    assert template._wrap(np.frombuffer(enc, np.uint8), width, eol) == want


def test_insert_keeps_ties_in_order() -> None:
    base = np.frombuffer(b"abc", np.uint8)
    out = template._insert(base, np.array([0, 0, 2, 3]), np.frombuffer(b"XYZW", np.uint8))
    assert out.tobytes() == b"XYabZcW"
