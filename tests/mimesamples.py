"""The repository's MIME sample set and the helpers its tests share (relay.mimewalk, relay.qp,
relay.b64, relay.splice, relay.ambiguity, relay.template, relay.fingerprint tests, and
bench/copies_hash.py).

`SAMPLES`: hand-made messages, one MIME shape each (encodings, charsets, nesting, oddities).
`build()`/`prose()`: a text/plain + text/html + PDF announcement in any transfer encodings.
`sample_set()`: everything at once (tests/clients.py shapes, SAMPLES, announcements, a
fingerprinted copy forwarded back, long lines, the known-answer vectors, CPython's email corpus).
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import html
import re
import sysconfig
import textwrap
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import clients

from relay.fingerprint import prepare
from relay.policy import normalise_newlines
from relay.scheme import SCHEME

if TYPE_CHECKING:
    from relay.textpart import TextPart

HERE = Path(__file__).resolve().parent
CORPUS = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
KEY = bytes(range(32))
SENDER = "ceo@example.com"


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


# --- helpers --------------------------------------------------------------------------------


def email_leaves(msg: email.message.Message, prefix: str = "") -> dict[str, email.message.Message]:
    """Leaf parts by path, numbered like relay.mimewalk (the email package as the reference)."""
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
    spans = sorted((p.start, p.end) for p in parts)
    out, pos = [], 0
    for a, b in spans:
        out.append(data[pos:a])
        pos = b
    out.append(data[pos:])
    return out


def body(data: bytes, part: TextPart) -> bytes:
    return data[part.start:part.end]


def check_line_endings(data: bytes, eol: bytes) -> None:
    if eol == b"\n":
        assert b"\r" not in data
    else:
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None
    for line in data.splitlines():
        assert len(line) <= 998


# --- announcements (relay.fingerprint's tests) ----------------------------------------------


def prose(n_paras: int = 6) -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 30][3:3 + n_paras]


def build(paras: list[str], plain_cte: str = "quoted-printable", html_cte: str = "base64",
          charset: str = "utf-8", message_id: bool = True) -> bytes:
    m = EmailMessage()
    m["From"] = "boss@example.com"
    m["To"] = "all-staff@example.com"
    m["Subject"] = "Quarterly plans"
    if message_id:
        m["Message-ID"] = "<plans@example.com>"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras), cte=plain_cte,
                  charset=charset)
    m.add_alternative("<html><body>" + "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
                      + "<pre>keep  this   as is</pre></body></html>", subtype="html",
                      cte=html_cte, charset=charset)
    m.add_attachment(b"%PDF-1.4 not really\x00\xff", maintype="application", subtype="pdf",
                     filename="plan.pdf")
    return m.as_bytes()


def text_of(raw: bytes, subtype: str) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return msg.get_body((subtype,)).get_content()


def forward_of(copy: bytes) -> bytes:
    """Recipient X forwards their copy to all staff inline (Outlook's shape: a header block,
    then the original text and HTML, whitespace untouched)."""
    m = EmailMessage()
    m["From"] = "x@example.com"
    m["To"] = "all-staff@example.com"
    m["Subject"] = "FW: Quarterly plans"
    m.set_content("FYI.\n\nFrom: The Boss\nSent: Monday\n\n" + text_of(copy, "plain"),
                  cte="quoted-printable")
    m.add_alternative("<html><body><div>FYI.</div><div><b>From:</b> The Boss</div>"
                      + text_of(copy, "html") + "</body></html>", subtype="html", cte="base64")
    return m.as_bytes()


# --- the whole set --------------------------------------------------------------------------


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
    first = prepare(build(prose()), SENDER, "k1", KEY, SCHEME.with_rate(1 / 6))
    return forward_of(first.copy_for("x@example.com"))


def sample_set() -> list[tuple[str, bytes]]:
    """(name, raw) for every message of the sample set, in a fixed order."""
    out = [(name, raw) for name, _, raw in clients.samples()]
    out += [(f"mime-{k}", v) for k, v in SAMPLES.items()]
    for plain_cte, html_cte, charset in [("quoted-printable", "base64", "utf-8"),
                                         ("8bit", "quoted-printable", "utf-8"),
                                         ("7bit", "7bit", "us-ascii"),
                                         ("base64", "8bit", "iso-8859-1")]:
        out.append((f"fp-{plain_cte}-{html_cte}",
                    build(prose(), plain_cte, html_cte, charset)))
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
