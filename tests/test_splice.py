"""relay.splice: byte-exact splicing of whitespace edits into text parts (`render`)."""

from __future__ import annotations

from email import quoprimime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mimesamples import (
    LATIN1,
    LF_ONLY,
    NESTED,
    QP,
    SAMPLES,
    SINGLE_GAP,
    UTF8,
    apply,
    b64_lines,
    body,
    check_line_endings,
    doubling_edits,
    email_text,
    outside_spans,
)

from relay.mime import text_parts
from relay.splice import render
from relay.textpart import UnsafeEdit


def test_render_raises_only_unsafe_edit() -> None:
    parts, _ = text_parts(QP)
    for edits in (None, {"": None}, {"": [None]}, {"": "  "}, {None: []}):
        with pytest.raises(UnsafeEdit):
            render(QP, parts, edits)  # type: ignore[arg-type]
    with pytest.raises(UnsafeEdit):
        render(QP, [None], {"": []})  # type: ignore[list-item]


# --- render ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_render_without_edits_is_byte_identical(name: str) -> None:
    raw = SAMPLES[name]
    parts, _ = text_parts(raw)
    assert render(raw, parts, {}) == raw
    assert render(raw, parts, {p.path: [] for p in parts}) == raw
    # replacing a gap by itself is no edit either
    same = {p.path: [(m.start(), m.end(), " ") for m in SINGLE_GAP.finditer(p.text)]
            for p in parts}
    assert render(raw, parts, same) == raw


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("every", [1, 2, 3])
def test_render_doubles_spaces_only_in_edited_bodies(name: str, every: int) -> None:
    raw = SAMPLES[name]
    parts, reasons = text_parts(raw)
    for k, edited_part in enumerate(parts):  # one part edited at a time, then all of them
        for chosen in ([edited_part], parts) if k == 0 else ([edited_part],):
            edits = {p.path: doubling_edits(p, every) for p in chosen}
            out = render(raw, parts, edits)
            new_parts, new_reasons = text_parts(out)
            assert new_reasons == reasons
            assert [p.path for p in new_parts] == [p.path for p in parts]
            for old, new in zip(parts, new_parts, strict=True):
                want = apply(old.text, edits.get(old.path, []))
                assert new.text == want
                assert email_text(out, old.path) == want
                if not edits.get(old.path):
                    assert body(out, new) == body(raw, old)
            assert outside_spans(out, new_parts) == outside_spans(raw, parts)
            check_line_endings(out, b"\n" if b"\r" not in raw else b"\r\n")


def test_nbsp_in_html() -> None:
    parts, _ = text_parts(NESTED)
    html = next(p for p in parts if p.subtype == "html")
    edits = doubling_edits(html, 1, "&nbsp; ")
    out = render(NESTED, parts, {html.path: edits})
    assert email_text(out, html.path) == apply(html.text, edits)
    assert b"Hello&nbsp; team," in out


def test_lf_only_stays_lf_only() -> None:
    parts, _ = text_parts(LF_ONLY)
    edits = {p.path: doubling_edits(p, 1) for p in parts}
    out = render(LF_ONLY, parts, edits)
    assert b"\r" not in out
    long = "x " * 60
    raw = (b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n" +
           quoprimime.body_encode(long.strip() + "\n", eol="\n").encode())
    parts, _ = text_parts(raw)
    out = render(raw, parts, {"": doubling_edits(parts[0], 1)})
    assert b"\r" not in out and all(len(line) <= 76 for line in out.split(b"\n"))


# --- refusals -------------------------------------------------------------------------------


def test_unsafe_edits_are_refused() -> None:
    parts, _ = text_parts(LATIN1)
    (p,) = parts
    eol = p.text.index("\r\n")
    bad: list[list[tuple[int, int, str]]] = [
        [(eol - 1, eol + 1, " ")],  # swallows a line end
        [(eol, eol, " ")],  # whitespace at a line end
        [(5, 6, "\u00a0")],  # non-ASCII
        [(5, 6, " \n ")],  # a line break
        [(6, 7, " "), (5, 6, " ")],  # unsorted
        [(5, 7, " "), (6, 8, " ")],  # overlapping
        [(len(p.text) + 1, len(p.text) + 2, " ")],  # out of range
        [(2, 3, 42)],  # type: ignore[list-item]
        [(2,)],  # type: ignore[list-item]
    ]
    for edits in bad:
        with pytest.raises(UnsafeEdit):
            render(LATIN1, parts, {"": edits})
    with pytest.raises(UnsafeEdit):
        render(LATIN1, parts, {"9": []})
    with pytest.raises(UnsafeEdit):  # parts of another message
        render(UTF8, parts, {"": [(2, 3, "  ")]})
    assert issubclass(UnsafeEdit, ValueError)


def test_line_limit_is_enforced() -> None:
    text = ("w " * 497 + "end").encode()  # 997 octets
    raw = b"Content-Type: text/plain\r\n\r\n" + text + b"\r\nnext line\r\n"
    parts, _ = text_parts(raw)
    (p,) = parts
    ok = render(raw, parts, {"": [(1, 2, "  ")]})
    assert max(len(line) for line in ok.split(b"\r\n")) == 998
    with pytest.raises(UnsafeEdit):
        render(raw, parts, {"": [(1, 2, "  "), (3, 4, "  ")]})


def test_flowed_line_start_is_refused() -> None:
    raw = b"Content-Type: text/plain; format=flowed\r\n\r\n stuffed line\r\n"
    parts, _ = text_parts(raw)
    with pytest.raises(UnsafeEdit):
        render(raw, parts, {"": [(0, 1, "  ")]})


def test_render_subset_of_parts() -> None:
    parts, _ = text_parts(NESTED)
    html = next(p for p in parts if p.subtype == "html")
    out = render(NESTED, [html], {html.path: doubling_edits(html, 1)})
    new = {p.path: p for p in text_parts(out)[0]}
    assert new["1.1"].text == parts[0].text
    assert new[html.path].text == apply(html.text, doubling_edits(html, 1))


# --- property test --------------------------------------------------------------------------

WORDS = {
    "ascii": ["alpha", "beta", "gamma", "delta", "x", "Hello,", "world.", "(ok)", "=", "==",
              "a=b", "From", ".", "tab\tbed", "50%", "3.14"],
    "latin": ["caf\u00e9", "na\u00efve", "\u00dcber", "fa\u00e7ade", "\u00e0"],
    "cjk": ["\u65e5\u672c\u8a9e", "\u30c6\u30b9\u30c8", "\u4e2d\u6587"],
}
COMBOS = [  # (declared charset or None, codec, cte, word pools)
    (None, "ascii", "7bit", ("ascii",)),
    ("us-ascii", "ascii", "quoted-printable", ("ascii",)),
    ("utf-8", "utf-8", "8bit", ("ascii", "latin", "cjk")),
    ("utf-8", "utf-8", "quoted-printable", ("ascii", "latin", "cjk")),
    ("utf-8", "utf-8", "base64", ("ascii", "latin", "cjk")),
    ("iso-8859-1", "latin-1", "8bit", ("ascii", "latin")),
    ("windows-1252", "cp1252", "quoted-printable", ("ascii", "latin")),
    ("iso-8859-15", "iso8859-15", "base64", ("ascii", "latin")),
    ("utf-16", "utf-16", "base64", ("ascii", "latin", "cjk")),
    ("shift_jis", "shift_jis", "8bit", ("ascii", "cjk")),
    ("utf-8", "utf-8", "binary", ("ascii", "latin")),
]


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, str, str, bool]:
    charset, codec, cte, pools = draw(st.sampled_from(COMBOS))
    vocab = [w for pool in pools for w in WORDS[pool]]
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    lines = draw(st.lists(st.lists(st.sampled_from(vocab), min_size=1, max_size=40),
                          min_size=1, max_size=8))
    text = eol.join(" ".join(line) for line in lines) + draw(st.sampled_from(["", eol]))
    data = text.encode(codec)
    if cte == "quoted-printable":
        encoded = quoprimime.body_encode(data.decode("latin-1"), maxlinelen=76, eol=eol).encode()
        if text.endswith(eol) and not encoded.endswith(eol.encode()):
            encoded += eol.encode()
    elif cte == "base64":
        width = draw(st.sampled_from([76, 64, 72]))
        encoded = b64_lines(data, width, eol.encode())
    else:
        encoded = data
    subtype = draw(st.sampled_from(["plain", "html"]))
    ctype = f"text/{subtype}" + (f"; charset={charset}" if charset else "")
    head = f"Content-Type: {ctype}{eol}"
    if cte != "7bit" or draw(st.booleans()):
        head += f"Content-Transfer-Encoding: {cte}{eol}"
    e = eol.encode()
    if draw(st.booleans()):
        raw = (f"From: a@example.com{eol}Subject: t{eol}".encode() + head.encode() + e + encoded)
        path = ""
    else:
        raw = (f"From: a@example.com{eol}Content-Type: multipart/mixed; boundary=zz{eol}{eol}"
               f"--zz{eol}Content-Type: text/plain{eol}{eol}first part{eol}--zz{eol}").encode()
        # the line ending before a boundary line belongs to the boundary
        raw += head.encode() + e + encoded + e + f"--zz--{eol}".encode()
        path = "2"
    return raw, path, text, subtype == "html"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_property_inserted_spaces_round_trip(msg: tuple[bytes, str, str, bool],
                                             data: st.DataObject) -> None:
    raw, path, text, html = msg
    parts, reasons = text_parts(raw)
    assert not reasons, reasons
    (p,) = [q for q in parts if q.path == path]
    assert p.text == text
    assert render(raw, parts, {}) == raw
    gaps = [m.start() for m in SINGLE_GAP.finditer(p.text)]
    assume(gaps)
    chosen = sorted(data.draw(st.sets(st.sampled_from(gaps), min_size=1)))
    new = "&nbsp; " if html and data.draw(st.booleans()) else "  "
    edits = [(g, g + 1, new) for g in chosen]
    out = render(raw, parts, {path: edits})
    want = apply(text, edits)
    (q,) = [r for r in text_parts(out)[0] if r.path == path]
    assert q.text == want
    assert email_text(out, path) == want
    check_line_endings(out, b"\r\n" if b"\r\n" in raw else b"\n")
    assert out[:p.start] == raw[:p.start]
    assert out[len(out) - (len(raw) - p.end):] == raw[p.end:]
    if p.cte == "quoted-printable":
        assert all(len(line) <= 76 for line in body(out, q).splitlines())
    if p.cte == "base64":
        old_lines, new_lines = body(raw, p).splitlines(), body(out, q).splitlines()
        if len(old_lines) > 1 and len(new_lines) > 1:
            assert len(new_lines[0]) == len(old_lines[0])
