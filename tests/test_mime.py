"""relay.mime: finding text parts in raw messages and splicing whitespace edits into them."""

from __future__ import annotations

import base64
import email
import email.message
import re
from email import quoprimime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from relay import mime
from relay.mime import TextPart, UnsafeEdit, render, text_parts


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def b64_lines(data: bytes, width: int = 76, eol: bytes = b"\r\n") -> bytes:
    enc = base64.b64encode(data)
    return eol.join(enc[i:i + width] for i in range(0, len(enc), width)) + eol


# --- the sample set ----------------------------------------------------------------------

QP = crlf(
    b"From: Alice <alice@example.com>\n"
    b"To: all@example.com\n"
    b"Subject: Cafe closed\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=\"utf-8\"\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Dear all, the caf=C3=A9 on the ground floor will be closed on Friday for a=\n"
    b" deep clean.=20\n"
    b"Please use the one on the third floor.=20=\n"
    b"Thanks for your understanding and patience, see you all next week.\n"
)
QP_TEXT = ("Dear all, the caf\u00e9 on the ground floor will be closed on Friday for a deep "
           "clean. \r\nPlease use the one on the third floor. Thanks for your understanding and "
           "patience, see you all next week.\r\n")

B64_TEXT = ("Bonjour \u00e0 tous. La r\u00e9union de lundi est d\u00e9plac\u00e9e \u00e0 "
            "mardi, m\u00eame heure, m\u00eame salle. Merci de pr\u00e9venir vos \u00e9quipes "
            "et de confirmer votre pr\u00e9sence.\r\nBonne semaine.\r\n")
B64 = crlf(
    b"From: rh@example.com\n"
    b"Subject: =?utf-8?q?R=C3=A9union?=\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
) + b64_lines(B64_TEXT.encode("utf-8"), 64)

LATIN1_TEXT = ("Le caf\u00e9 est ferm\u00e9 vendredi. Merci de votre compr\u00e9hension.\r\n"
               "\u00c0 bient\u00f4t, la direction.\r\n")
LATIN1 = crlf(
    b"From: direction@example.com\n"
    b"Content-Type: text/plain; charset=ISO-8859-1\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
) + LATIN1_TEXT.encode("latin-1")

UTF8_TEXT = ("Gr\u00fc\u00dfe aus K\u00f6ln. Das Treffen ist am Montag um zehn Uhr.\r\n"
             "\u65e5\u672c\u8a9e\u306e \u30c6\u30b9\u30c8 and an \u00e9mile here.\r\n")
UTF8 = crlf(
    b"From: koeln@example.com\n"
    b"Mime-Version: 1.0\n"
    b"content-type: TEXT/Plain; CharSet=UTF8\n"
    b"content-transfer-encoding: 8BIT\n"
    b"\n"
) + UTF8_TEXT.encode("utf-8")

FLOWED_TEXT = ("This is a long paragraph that a mail client wrapped with soft line breaks, \r\n"
               "so that it can be reflowed by the reader. It ends here.\r\n"
               "\r\n"
               "> A quoted line.\r\n")
FLOWED = crlf(
    b"From: flow@example.com\n"
    b"CONTENT-TYPE: text/plain;\n"
    b"\tcharset=\"us-ascii\";\n"
    b" format=flowed; DelSp=Yes\n"
    b"\n"
) + FLOWED_TEXT.encode("ascii")

NESTED = crlf(
    b"From: boss@example.com\n"
    b"To: staff@example.com\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"==outer==\"\n"
    b"\n"
    b"This is a multi-part message in MIME format.\n"
    b"--==outer==\n"
    b"Content-Type: multipart/alternative; boundary=alt\n"
    b"\n"
    b"--alt\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"\n"
    b"Hello team, the meeting is at noon. Bring your notes.\n"
    b"--alt\n"
    b"Content-Type: multipart/related; boundary=\"rel\"; type=\"text/html\"\n"
    b"\n"
    b"--rel\n"
    b"Content-Type: text/html; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"<html><body><p>Hello team, the meeting is at noon. Bring your notes.</p><im=\n"
    b"g src=3D\"cid:logo\"></body></html>\n"
    b"--rel\n"
    b"Content-Type: image/png\n"
    b"Content-Transfer-Encoding: base64\n"
    b"Content-ID: <logo>\n"
    b"\n"
    b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ\n"
    b"RU5ErkJggg==\n"
    b"--rel--\n"
    b"--alt--\n"
    b"--==outer==\n"
    b"Content-Type: application/pdf; name=\"report.pdf\"\n"
    b"Content-Disposition: attachment; filename=\"report.pdf\"\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==\n"
    b"--==outer==\n"
    b"Content-Type: text/plain; charset=utf-8; name=\"notes.txt\"\n"
    b"Content-Disposition: attachment; filename=\"notes.txt\"\n"
    b"\n"
    b"These notes are an attachment and stay as they are.\n"
    b"--==outer==--\n"
    b"Epilogue that nobody reads.\n"
)

SIGNED = crlf(
    b"From: signer@example.com\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\";\n"
    b" micalg=pgp-sha256; boundary=\"sig\"\n"
    b"\n"
    b"--sig\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"This text is signed. Do not touch it.\n"
    b"--sig\n"
    b"Content-Type: application/pgp-signature; name=\"signature.asc\"\n"
    b"\n"
    b"-----BEGIN PGP SIGNATURE-----\n"
    b"iQEzBAEBCAAdFiEE\n"
    b"-----END PGP SIGNATURE-----\n"
    b"--sig--\n"
)

NO_CTYPE = crlf(
    b"From: plain@example.com\n"
    b"To: all@example.com\n"
    b"Subject: no MIME at all\n"
    b"\n"
    b"Just some text without any MIME header. Nothing fancy here.\n"
)

LF_ONLY = (
    b"From: unix@example.com\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/alternative;\n"
    b"    boundary=\"b1 quoted\"\n"
    b"\n"
    b"--b1 quoted  \n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Line endings are LF only. Caf\xc3\xa9 time.\n"
    b"Second line of the plain part.\n"
    b"--b1 quoted\t\n"
    b"Content-Type: text/html; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"<p>Line endings are LF only. Caf=C3=A9 time.</p>\n"
    b"<p>Second line of the html part.</p>\n"
    # no closing boundary: the last part runs to the end of the message
)

ATTACHED_MSG = crlf(
    b"From: fwd@example.com\n"
    b"Content-Type: multipart/mixed; boundary=m\n"
    b"\n"
    b"--m\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"See the forwarded message below. Thanks.\n"
    b"--m\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: other@example.com\n"
    b"Subject: inner\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"\n"
    b"Inner text must stay as it is.\n"
    b"--m--\n"
)

UTF16_TEXT = "Unicode text in UTF-16. Two words here.\r\n"
SKIPS = crlf(
    b"From: odd@example.com\n"
    b"Content-Type: multipart/mixed; boundary=s\n"
    b"\n"
    b"--s\n"
    b"Content-Type: text/plain; charset=x-unknown\n"
    b"\n"
    b"unknown charset\n"
    b"--s\n"
    b"Content-Type: text/plain\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"eight bit \xe9 without a charset\n"
    b"--s\n"
    b"Content-Type: text/plain; charset=iso-2022-jp\n"
    b"\n"
    b"\x1b$B$3$s$K$A$O\x1b(B and more\n"
    b"--s\n"
    b"Content-Type: text/plain; charset=utf-16\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
) + b64_lines(UTF16_TEXT.encode("utf-16")) + crlf(
    b"--s\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"Content-Transfer-Encoding: x-uuencode\n"
    b"\n"
    b"begin 644 x\n"
    b"--s\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"a broken =ZZ escape\n"
    b"--s\n"
    b"Content-Type: text/plain\n"
    b"Content-Type: text/html\n"
    b"\n"
    b"two content types\n"
    b"--s\n"
    b"Content-Type: text/calendar; method=REQUEST\n"
    b"\n"
    b"BEGIN:VCALENDAR\n"
    b"--s\n"
    b"Content-Type: text/plain; charset*=us-ascii'en'utf-8\n"
    b"\n"
    b"RFC 2231 charset parameter, fine.\n"
    b"--s\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"\n"
    b"ascii label, but 8-bit \xc3\xa9 inside\n"
    b"--s--\n"
)

NO_BODY = crlf(b"From: a@example.com\nSubject: headers only\n")
EMPTY_BODY = crlf(b"From: a@example.com\nSubject: empty\n\n")

SAMPLES: dict[str, bytes] = {
    "qp": QP, "base64": B64, "latin1": LATIN1, "utf8": UTF8, "flowed": FLOWED,
    "nested": NESTED, "signed": SIGNED, "no_ctype": NO_CTYPE, "lf_only": LF_ONLY,
    "attached_msg": ATTACHED_MSG, "skips": SKIPS, "no_body": NO_BODY,
    "empty_body": EMPTY_BODY,
}

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


# --- helpers --------------------------------------------------------------------------------


def email_leaves(msg: email.message.Message, prefix: str = "") -> dict[str, email.message.Message]:
    """Leaf parts by path, numbered like relay.mime (the email package as the reference)."""
    if msg.get_content_maintype() == "message":
        return {}
    if msg.is_multipart():
        out: dict[str, email.message.Message] = {}
        for i, sub in enumerate(msg.get_payload(), 1):
            out.update(email_leaves(sub, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: msg}


def email_text(raw: bytes, path: str) -> str:
    leaf = email_leaves(email.message_from_bytes(raw))[path]
    data = leaf.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data.decode(leaf.get_content_charset() or "us-ascii")


SINGLE_GAP = re.compile(r"(?<=[^\s]) (?=[^\s])")


def doubling_edits(part: TextPart, every: int = 2, new: str = "  ") -> list[tuple[int, int, str]]:
    gaps = [m.start() for m in SINGLE_GAP.finditer(part.text)]
    return [(g, g + 1, new) for g in gaps[::every]]


def apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in reversed(edits):
        text = text[:start] + new + text[end:]
    return text


def outside_spans(data: bytes, parts: list[TextPart]) -> list[bytes]:
    spans = sorted((p._start, p._end) for p in parts)
    out, pos = [], 0
    for a, b in spans:
        out.append(data[pos:a])
        pos = b
    out.append(data[pos:])
    return out


def body(data: bytes, part: TextPart) -> bytes:
    return data[part._start:part._end]


def check_line_endings(data: bytes, eol: bytes) -> None:
    if eol == b"\n":
        assert b"\r" not in data
    else:
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None
    for line in data.splitlines():
        assert len(line) <= 998


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
        assert raw[p._start:p._end] == p._body


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


def test_quoted_printable_trailing_whitespace_is_skipped() -> None:
    raw = crlf(b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
               b"padded line  \nnext\n")
    parts, reasons = text_parts(raw)
    assert parts == [] and "trailing whitespace" in reasons[0]


def test_ebcdic_and_stateful_charsets_only_with_base64() -> None:
    raw = b"Content-Type: text/plain; charset=cp037\r\n\r\n" + "Hello world".encode("cp037")
    assert text_parts(raw)[0] == []
    text = "Hello world, EBCDIC."
    raw = (b"Content-Type: text/plain; charset=cp037\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + b64_lines(text.encode("cp037")))
    parts, _ = text_parts(raw)
    assert [p.text for p in parts] == [text]
    out = render(raw, parts, {"": doubling_edits(parts[0], 1)})
    assert text_parts(out)[0][0].text == "Hello  world,  EBCDIC."


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


def test_lowercase_qp_hex_is_read() -> None:
    raw = (b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: Quoted-Printable\r\n\r\ncaf=c3=a9 au lait\r\n")
    parts, _ = text_parts(raw)
    assert parts[0].text == "caf\u00e9 au lait\r\n"
    out = render(raw, parts, {"": doubling_edits(parts[0], 1)})
    assert out.endswith(b"caf=c3=a9  au  lait\r\n")


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


def test_quoted_printable_lines_stay_short_and_untouched_lines_stay() -> None:
    text = " ".join(f"word{i}" for i in range(200)) + "\r\nlast line, not edited.\r\n"
    enc = quoprimime.body_encode(text, maxlinelen=76, eol="\r\n").encode()
    raw = (b"Content-Type: text/plain; charset=us-ascii\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + enc)
    parts, _ = text_parts(raw)
    (p,) = parts
    assert p.text == text
    first_line = p.text.index("\r\n")
    edits = [e for e in doubling_edits(p, 1) if e[0] < first_line]
    out = render(raw, parts, {"": edits})
    new_body = body(out, text_parts(out)[0][0])
    lines = new_body.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert lines[-2:] == enc.split(b"\r\n")[-2:]  # the unedited line (and the final "")
    assert text_parts(out)[0][0].text == apply(text, edits)
    # editing only one gap changes only the encoded line(s) around it
    out1 = render(raw, parts, {"": edits[100:101]})
    old_lines, new_lines = enc.split(b"\r\n"), out1[p._start:].split(b"\r\n")
    changed = [line for line in new_lines if line not in old_lines]
    assert 1 <= len(changed) <= 2
    assert len(new_lines) - len(old_lines) in (0, 1)


def test_quoted_printable_space_before_soft_break() -> None:
    parts, _ = text_parts(QP)
    (p,) = parts
    # the gap after "floor." is written "=20" just before a soft break
    g = p.text.index("floor. Thanks") + len("floor.")
    out = render(QP, parts, {"": [(g, g + 1, "  ")]})
    assert b"third floor.  =\r\nThanks" in out
    assert text_parts(out)[0][0].text == p.text[:g] + "  " + p.text[g + 1:]
    # the gap at the start of an encoded line (after a soft break)
    g = p.text.index("a deep") + 1
    out = render(QP, parts, {"": [(g, g + 1, "   ")]})
    assert text_parts(out)[0][0].text == p.text[:g] + "   " + p.text[g + 1:]
    assert all(len(line) <= 76 for line in out.split(b"\r\n"))


def test_quoted_printable_run_across_a_soft_break() -> None:
    raw = crlf(b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
               b"two spaces =\n across a soft break\n")
    parts, _ = text_parts(raw)
    (p,) = parts
    g = p.text.index("  across")
    for new in (" ", "   ", "&nbsp; "):
        out = render(raw, parts, {"": [(g, g + 2, new)]})
        assert text_parts(out)[0][0].text == p.text[:g] + new + p.text[g + 2:]
        assert email_text(out, "") == p.text[:g] + new + p.text[g + 2:]


def test_base64_line_length_and_ending_are_kept() -> None:
    parts, _ = text_parts(B64)
    (p,) = parts
    out = render(B64, parts, {"": doubling_edits(p, 1)})
    new = text_parts(out)[0][0]
    lines = body(out, new).split(b"\r\n")
    assert lines[-1] == b""  # the body still ends with its line ending
    assert all(len(line) == 64 for line in lines[:-2]) and 0 < len(lines[-2]) <= 64
    assert b"\n" not in body(out, new).replace(b"\r\n", b"")


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
    assert out[:p._start] == raw[:p._start]
    assert out[len(out) - (len(raw) - p._end):] == raw[p._end:]
    if p.cte == "quoted-printable":
        assert all(len(line) <= 76 for line in body(out, q).splitlines())
    if p.cte == "base64":
        old_lines, new_lines = body(raw, p).splitlines(), body(out, q).splitlines()
        if len(old_lines) > 1 and len(new_lines) > 1:
            assert len(new_lines[0]) == len(old_lines[0])


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


def test_module_exports() -> None:
    assert set(mime.__all__) == {"TextPart", "UnsafeEdit", "render", "text_parts", "analyse",
                                 "Analysis", "Ambiguity", "BoundaryLikeLine",
                                 "MalformedHeaderLine", "OtherStructure", "ParserDefect",
                                 "TooLarge", "decoded_size"}


# --- messages readers could read differently: left whole, with a typed reason -------------

_TEXT = b"Hello there, this is a perfectly ordinary sentence of the message body.\r\n"


def _multipart(inner: bytes, outer_head: bytes = b"") -> bytes:
    return (b"From: a@example.com\r\nTo: all-staff@example.com\r\nMIME-Version: 1.0\r\n"
            + outer_head + b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
            + b"--XYZ\r\n" + inner + b"\r\n--XYZ--\r\n")


AMBIGUOUS = {
    # the email package records a defect: the closing delimiter is missing
    "parser-defect": (mime.ParserDefect, _multipart(b"Content-Type: text/plain\r\n\r\n" + _TEXT)
                      [:-len(b"\r\n--XYZ--\r\n")] + b"\r\n"),
    # "Name :" is a header field to relay.mime, the end of the header block to the email package
    "header-name-space": (mime.ParserDefect, b"From: a@example.com\r\nSubject : hi\r\n"
                          b"Content-Type: text/plain\r\n\r\n" + _TEXT),
    # a part's header block holds a line that is no header field (CPython's msg_38 shape)
    "malformed-header-line": (mime.MalformedHeaderLine, _multipart(
        b"Content-Type: text/plain\r\n\r\n" + _TEXT + b"\r\n--XYZ\r\n"
        b"Content-Type: text/plain\r\nthis line is no header\r\n\r\n" + _TEXT)),
    # a line inside the text that starts like the enclosing delimiter (a prefix-matching reader
    # ends the part there)
    "boundary-like-line": (mime.BoundaryLikeLine, _multipart(
        b"Content-Type: text/plain\r\n\r\n" + _TEXT + b"--XYZ is what the boundary is called\r\n"
        + _TEXT)),
    # the delimiter inside a quoted-printable line: a soft break in a copy could start a line
    "boundary-inside-qp": (mime.BoundaryLikeLine, _multipart(
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + _TEXT.rstrip() + b" and --XYZ inside a line\r\n")),
    # repeated parameters: the email package takes the first, other readers the last
    "repeated-charset": (mime.OtherStructure, b"From: a@example.com\r\nContent-Type: text/plain;"
                         b" charset=us-ascii; charset=iso-8859-1\r\n\r\n" + _TEXT),
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_ambiguous_structure_leaves_the_message_whole(name: str) -> None:
    cls, raw = AMBIGUOUS[name]
    loose = mime.analyse(raw, strict=False)
    assert loose.parts, "relay.mime alone would rewrite this message"
    found = mime.analyse(raw)
    assert found.parts == [] and type(found.ambiguity) is cls
    assert isinstance(found.ambiguity, mime.Ambiguity)
    assert found.skipped[-1] == f"message: {found.ambiguity}"
    assert str(found.ambiguity).startswith(cls.__name__ + " (")
    assert mime.text_parts(raw) == (loose.parts, loose.skipped)  # the old reader, unchanged


def test_cpython_corpus_msg_38_is_left_whole() -> None:
    """CPython's msg_38: outer delimiters inside a text part; the email package sees another
    tree (and defects) where relay.mime alone found two text parts."""
    from test_corpus import CORPUS

    path = CORPUS / "msg_38.txt"
    if not path.exists():
        pytest.skip("CPython's email test corpus is not installed")
    raw = re.sub(rb"\r?\n", b"\r\n", path.read_bytes())
    assert len(mime.analyse(raw, strict=False).parts) == 2
    found = mime.analyse(raw)
    assert found.parts == [] and isinstance(found.ambiguity, mime.Ambiguity)


def test_ordinary_messages_are_not_ambiguous() -> None:
    """Every sample the email package reads without a defect is read the same by both."""
    for name, raw in SAMPLES.items():
        msg = email.message_from_bytes(raw)
        if any(p.defects for p in msg.walk()):
            assert mime.analyse(raw).ambiguity is not None  # e.g. no closing delimiter
            continue
        found = mime.analyse(raw)
        assert found.ambiguity is None, (name, found.ambiguity)
        assert [p.path for p in found.parts] == [p.path for p in text_parts(raw)[0]]


