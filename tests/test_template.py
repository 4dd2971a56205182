"""relay.template: a copy made from the message's template is the copy `Prepared._render` (the
reference, relay.splice.render) makes, as every reader decodes it: the same text in every text
part, byte-identical 7bit/8bit bodies and every byte outside the text bodies, quoted-printable
lines within 76 octets, base64 lines at the part's width, no line over 998 octets. Over the
repository's MIME sample set (tests/mimesamples.py: tests/clients.py, CPython's email corpus,
the hand-made MIME shapes, the announcements, the known-answer vectors) and hypothesis-drawn
bit patterns."""

from __future__ import annotations

import binascii
import textwrap

import clients
import mimesamples
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import mime, template, templatebuild
from relay.fingerprint import Prepared, prepare
from relay.scheme import SCHEME
from relay.textpart import IDENTITY_CTES, LINE_MAX

KEY = bytes(range(32))
SENDER = "ceo@example.com"

SAMPLES = mimesamples.sample_set()
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
    for q in sorted(p._parts, key=lambda q: q.start):
        a = gp[q.path]
        if got[c:a.start] != p.raw[o:q.start]:
            out.append(f"bytes outside the text bodies before part {q.path}")
        c, o = a.end, q.end
    if got[c:] != p.raw[o:]:
        out.append("bytes outside the text bodies at the end")
    for path in sorted(gp):
        a, b = gp[path], rp[path]
        if a.text != b.text:
            out.append(f"part {path}: another text")
        if a.cte in (*IDENTITY_CTES, "base64") and a.body != b.body:
            out.append(f"part {path}: a {a.cte} body with other bytes")
        if a.cte == "quoted-printable":
            if a.body != b.body:
                before = set(_lines(orig[path].body)) if path in orig else set()
                if [x for x in _lines(a.body) if len(x) > 76 and x not in before]:
                    out.append(f"part {path}: a quoted-printable line over 76 octets")
                if binascii.a2b_qp(a.body) != binascii.a2b_qp(b.body):
                    out.append(f"part {path}: decodes to other bytes")
        if a.cte == "base64":
            s, e = a.b64_span
            lines = _lines(a.body[s:e])
            w = orig[path].b64_width if path in orig else a.b64_width
            if any(len(x) != w for x in lines[:-1]) or len(lines[-1]) > w:
                out.append(f"part {path}: base64 lines of another width")
        if any(len(x) > LINE_MAX for x in _lines(a.body)):
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
                 if all(pt.cte in IDENTITY_CTES for pt in prepared(n)._parts)]


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
    assert templatebuild.check(p._template, p._parts, [
        [(g.start, g.end, " " if pt.subtype == "plain" or g.start < g.end else "",
          " " if pt.subtype == "plain" else "&nbsp;") for _, g in gaps]
        for pt, gaps in zip(p._parts, p._gaps, strict=True)], p._marks,
        np.ones(p.carriers, np.uint8))


# --- the pieces -------------------------------------------------------------------------------


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
