"""relay.mimewalk (through relay.mime.text_parts): the text parts of raw messages, their byte
spans and decoded texts, and the reasons a part is skipped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mimesamples import (
    B64_TEXT,
    FLOWED_TEXT,
    LATIN1_TEXT,
    QP_TEXT,
    SAMPLES,
    UTF8_TEXT,
    UTF16_TEXT,
    doubling_edits,
    email_text,
)

from relay.mime import text_parts
from relay.splice import render
from relay.textpart import UnsafeEdit

# path -> (subtype, charset, cte, flowed, delsp)
EXPECTED: dict[str, dict[str, tuple[str, str, str, bool, bool]]] = {
    "qp": {"": ("plain", "utf-8", "quoted-printable", False, False)},
    "base64": {"": ("plain", "utf-8", "base64", False, False)},
    "latin1": {"": ("plain", "iso8859-1", "8bit", False, False)},
    "utf8": {"": ("plain", "utf-8", "8bit", False, False)},
    "flowed": {"": ("plain", "ascii", "7bit", True, True)},
    "nested": {"1.1": ("plain", "ascii", "7bit", False, False),
               "1.2.1": ("html", "utf-8", "quoted-printable", False, False)},
    "signed": {},
    "no_ctype": {"": ("plain", "ascii", "7bit", False, False)},
    "lf_only": {"1": ("plain", "utf-8", "8bit", False, False),
                "2": ("html", "utf-8", "quoted-printable", False, False)},
    "attached_msg": {"1": ("plain", "ascii", "7bit", False, False)},
    "skips": {"4": ("plain", "utf-16", "base64", False, False),
              "9": ("plain", "utf-8", "7bit", False, False)},
    "no_body": {},
    "empty_body": {"": ("plain", "ascii", "7bit", False, False)},
}

# reasons: (label, words that must appear)
EXPECTED_SKIPS: dict[str, list[tuple[str, str]]] = {
    "nested": [("3", "attachment")],
    "signed": [("1", "multipart/signed")],
    "attached_msg": [("2.1", "attached message")],
    "skips": [("1", "unknown charset"), ("2", "no charset"), ("3", "iso-2022-jp"),
              ("5", "x-uuencode"), ("6", "escape"), ("7", "Content-Type"),
              ("8", "text/calendar"), ("10", "decode")],
    "no_body": [("1", "no body")],
}

TEXTS: dict[tuple[str, str], str] = {
    ("qp", ""): QP_TEXT,
    ("base64", ""): B64_TEXT,
    ("latin1", ""): LATIN1_TEXT,
    ("utf8", ""): UTF8_TEXT,
    ("flowed", ""): FLOWED_TEXT,
    ("nested", "1.1"): "Hello team, the meeting is at noon. Bring your notes.",
    ("nested", "1.2.1"): '<html><body><p>Hello team, the meeting is at noon. Bring your notes.'
                         '</p><img src="cid:logo"></body></html>',
    ("no_ctype", ""): "Just some text without any MIME header. Nothing fancy here.\r\n",
    ("lf_only", "1"): "Line endings are LF only. Caf\u00e9 time.\nSecond line of the plain part.",
    ("lf_only", "2"): "<p>Line endings are LF only. Caf\u00e9 time.</p>\n"
                      "<p>Second line of the html part.</p>",
    ("skips", "4"): UTF16_TEXT,
    ("skips", "9"): "RFC 2231 charset parameter, fine.",
    ("empty_body", ""): "",
}


# --- text_parts -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
def test_text_parts_finds_the_right_parts(name: str) -> None:
    parts, reasons = text_parts(SAMPLES[name])
    got = {p.path: (p.subtype, p.charset, p.cte, p.flowed, p.delsp) for p in parts}
    assert got == EXPECTED[name], reasons
    labels = {r.split(":", 1)[0] for r in reasons}
    for label, word in EXPECTED_SKIPS.get(name, []):
        matching = [r for r in reasons if r.startswith(f"part {label} ") or
                    r.startswith(f"part {label}:")]
        assert matching, (label, reasons)
        assert any(word.lower() in r.lower() for r in matching), (word, matching)
    assert len(reasons) == len(EXPECTED_SKIPS.get(name, [])), (labels, reasons)


@pytest.mark.parametrize("name", SAMPLES)
def test_text_parts_decode_like_the_email_package(name: str) -> None:
    raw = SAMPLES[name]
    parts, _ = text_parts(raw)
    for p in parts:
        if (name, p.path) in TEXTS:
            assert p.text == TEXTS[(name, p.path)]
        assert p.text == email_text(raw, p.path)
        assert raw[p.start:p.end] == p.body


def test_text_parts_never_raises_on_garbage() -> None:
    for raw in [b"", b"\r\n", b"\n\n\n", b":", b"no header line\r\n\r\nbody", b"\x00\xff" * 50,
                b"Content-Type: multipart/mixed\r\n\r\n--x\r\n",
                b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno boundary lines",
                b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x--\r\n--x\r\n",
                b"Content-Type: text/plain; charset=base64\r\n\r\nhi",
                b"Content-Type: text/plain; charset=unicode_escape\r\n\r\nhi",
                b"Content-Type: text/\xff\r\n\r\nhi",
                b"Content-Type: text/plain; charset=\"\xc3\xa9\"\r\n\r\nhi",
                b"X: a\r\n \r\n\r\nwhitespace-only continuation"]:
        parts, reasons = text_parts(raw)
        assert isinstance(parts, list) and isinstance(reasons, list)
        assert render(raw, parts, {}) == raw
    assert text_parts("not bytes")[0] == []  # type: ignore[arg-type]


def test_truncated_samples_never_raise() -> None:
    for raw in SAMPLES.values():
        for cut in range(0, len(raw), 7):
            parts, _ = text_parts(raw[:cut])
            assert render(raw[:cut], parts, {}) == raw[:cut]


def test_deep_nesting_is_cut_off() -> None:
    depth = 60
    head = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                    for i in range(depth))
    raw = (b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + head +
           b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep text\r\n" % depth)
    parts, reasons = text_parts(raw)
    assert parts == [] and any("deep" in r for r in reasons)


def test_header_oddities() -> None:
    raw = (b"content-TYPE: Multipart/Mixed;\r\n boundary*0=\"ab\";\r\n\tboundary*1=\"cd\"\r\n"
           b"\r\n--abcd\r\n"
           b"Content-Type: text/plain; CHARSET=\"UTF-8\"\r\n"
           b"Content-Disposition: inline; filename=\"r\xc3\xa9sum\xc3\xa9.txt\"\r\n"
           b"\r\nhello there, all\r\n--abcd--\r\n")
    parts, reasons = text_parts(bytearray(raw))  # type: ignore[arg-type]
    assert [(p.path, p.charset, p.text) for p in parts] == [("1", "utf-8", "hello there, all")]
    assert not reasons
    hash(parts[0])
    out = render(raw, parts, {"1": doubling_edits(parts[0], 1)})
    assert b"hello  there,  all\r\n--abcd--" in out


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_property_garbage_never_raises(blob: bytes) -> None:
    raw = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n" + blob
    for candidate in (blob, raw):
        parts, _ = text_parts(candidate)
        assert render(candidate, parts, {}) == candidate
        for p in parts:
            try:
                render(candidate, parts, {p.path: doubling_edits(p, 1)})
            except UnsafeEdit:
                pass
