"""Test helper: mail shaped as real clients write it, and how a reader sees it.

`build(shape, paragraphs, ...)` returns the raw bytes (CRLF) of an all-staff message written the
way that client writes it (headers, MIME tree, transfer encodings, line lengths, HTML dialect),
modelled on raw sources of each client found in public repositories' test corpora and mailing
list archives:

- `outlook`: Outlook / Exchange. multipart/alternative; text/plain quoted-printable with one line
  per paragraph (soft breaks after a space, at 76); Word HTML (`<p class=MsoNormal>`, `<span
  lang=EN-US>` runs, `<o:p></o:p>`, `<o:p>&nbsp;</o:p>` empty paragraphs, `.&nbsp; ` where the
  author typed two spaces after a full stop, `<b>` and link runs), windows-1252 or utf-8, curly
  quotes, NBSP before French double punctuation.
- `gmail`: text/plain hard-wrapped at 76 (7bit, or quoted-printable when not ASCII); HTML in
  `<div dir="ltr">` with `<div><br></div>` between paragraphs, quoted-printable broken anywhere.
- `apple`: text/plain quoted-printable, one line per paragraph; HTML with a `<div>` per line and
  `-webkit-` body styles, quoted-printable or base64 (French).
- `thunderbird`: text/plain format=flowed (DelSp=yes for French) wrapped at 72 with a `-- `
  signature; HTML with `<br>`, source lines wrapped and indented as Thunderbird's serializer
  does, a `moz-signature` block.
- `plain_b64`: a single text/plain part, base64, one line per paragraph.

`plain_rendering` / `html_rendering` give the text a reader sees of a copy (flowed text
reflowed; HTML with tags dropped, entities decoded, spaces collapsed, blocks on their own lines),
and `whitespace_only(orig, copy)` says whether a copy differs from the original only in
text-body whitespace as Python's email package reads both.

Prose: English from /usr/share/common-licenses (not GPL-3, which benchmarks use as unrelated
text), French from the Debian Reference (package debian-reference-fr).
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import html as htmlmod
import random
import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path

SHAPES = ("outlook", "gmail", "apple", "thunderbird", "plain_b64")
LONG_PARAGRAPHS = {"outlook": True, "apple": True, "plain_b64": True, "gmail": False,
                   "thunderbird": False}
LICENSES = Path("/usr/share/common-licenses")
EN_SOURCES = ("Apache-2.0", "MPL-2.0", "GFDL-1.3", "LGPL-2.1", "Artistic", "CC0-1.0")
DEBREF = Path("/usr/share/debian-reference")
SENDER = "ceo@example.com"

# --- prose ----------------------------------------------------------------------------------

_CODEY = re.compile(r"[/\\$={}<>_|~#@`*\[\]^]|\w\.\w|--|\(\)|\bhttps?\b")


class _Paras(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paras: list[str] = []
        self.cur: list[str] | None = None
        self.bad = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "p":
            self.cur, self.bad = [], False
        elif self.cur is not None and tag in ("code", "tt", "kbd", "samp", "pre", "var",
                                               "span", "a"):
            self.bad = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "p" and self.cur is not None:
            if not self.bad:
                self.paras.append(" ".join("".join(self.cur).split()))
            self.cur = None

    def handle_data(self, data: str) -> None:
        if self.cur is not None:
            self.cur.append(data)


def _english() -> list[str]:
    out = []
    for name in EN_SOURCES:
        text = (LICENSES / name).read_text(encoding="utf-8", errors="replace")
        for p in re.split(r"\n\s*\n", text):
            p = " ".join(p.split())
            if len(p.split()) >= 30 and not _CODEY.search(p) and not p.isupper() \
                    and p[:1].isalpha():
                out.append(p)
    return out


_FR_WORDS = frozenset("le la les des du de et est une un pour que qui dans sur par avec vous "
                      "ce cette sont pas au aux".split())


def _french() -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for f in sorted(DEBREF.glob("ch*.fr.html")):
        p = _Paras()
        p.feed(f.read_text(encoding="utf-8"))
        for t in p.paras:
            words = t.split()
            if len(words) < 30 or _CODEY.search(t) or t in seen:
                continue
            if sum(w.lower().strip(".,;:") in _FR_WORDS for w in words) < len(words) // 8:
                continue
            seen.add(t)
            out.append(t)
    if not out:
        raise FileNotFoundError(f"{DEBREF}: no French paragraphs (install debian-reference-fr)")
    return out


_POOLS: dict[str, list[str]] = {}


def pool(lang: str) -> list[str]:
    if lang not in _POOLS:
        _POOLS[lang] = _english() if lang == "en" else _french()
    return _POOLS[lang]


def take(lang: str, n: int, cursor: int = 0, long: bool = False) -> tuple[list[str], int]:
    """n paragraphs of real prose from source paragraph `cursor` on (cycling), and the cursor
    after them (so that several messages can be drawn without sharing a sentence); long: each
    of 900-2,000 characters (consecutive source paragraphs joined, as one typed paragraph)."""
    src = pool(lang)
    out: list[str] = []
    i = cursor
    while len(out) < n:
        p = src[i % len(src)]
        i += 1
        if long:
            while len(p) < 900:
                p = p + " " + src[i % len(src)]
                i += 1
            if len(p) > 2000:
                cut = p.rfind(". ", 900, 2000)
                p = p[:cut + 1] if cut > 0 else p[:2000].rsplit(" ", 1)[0]
        out.append(p)
    return out, i


def prose(lang: str, n: int, start: int = 0, long: bool = False) -> list[str]:
    return take(lang, n, start, long)[0]


# --- encodings --------------------------------------------------------------------------------

def qp(text: str, charset: str, after_space: bool = True, width: int = 76) -> bytes:
    """Quoted-printable as mail clients write it: hard line ends kept (CRLF), soft breaks at
    `width`, placed after a space where one is near (Outlook, Apple) or anywhere (Gmail)."""
    out: list[str] = []
    for line in text.split("\n"):
        enc: list[str] = []
        data = line.encode(charset)
        for k, b in enumerate(data):
            last = k == len(data) - 1
            if b == 0x3D or b > 0x7E or (b < 0x20 and b != 9) or (last and b in (9, 32)):
                enc.append(f"={b:02X}")
            else:
                enc.append(chr(b))
        cur = ""
        pieces: list[str] = []
        for tok in enc:
            if len(cur) + len(tok) > width - 1:
                if after_space and " " in cur[-20:]:
                    cut = cur.rfind(" ") + 1
                    pieces.append(cur[:cut] + "=")
                    cur = cur[cut:]
                else:
                    pieces.append(cur + "=")
                    cur = ""
            cur += tok
        pieces.append(cur)
        out.append("\r\n".join(pieces))
    return "\r\n".join(out).encode("ascii")


def b64(text: str, charset: str) -> bytes:
    data = base64.b64encode(text.replace("\n", "\r\n").encode(charset)).decode()
    return "\r\n".join(data[i:i + 76] for i in range(0, len(data), 76)).encode() + b"\r\n"


def flowed(paragraphs: list[str], width: int = 72, delsp: bool = False) -> str:
    """RFC 3676 text: each paragraph wrapped at `width`, every soft break a trailing space (with
    DelSp=yes a second one, deleted on reflow)."""
    out = []
    for p in paragraphs:
        lines = textwrap.wrap(p, width, break_long_words=False, break_on_hyphens=False)
        out.append("\n".join(ln + (" " if delsp else "") + " " for ln in lines[:-1])
                   + ("\n" if len(lines) > 1 else "") + lines[-1])
    return "\n\n".join(out)


def _curly(text: str) -> str:
    text = re.sub(r'"([^"]*)"', "\u201c\\1\u201d", text)
    return re.sub(r"(\w)'(\w)", "\\1\u2019\\2", text)


def _french_spaces(text: str) -> str:
    """Word's French autocorrect: NBSP before ; : ! ? and inside guillemets."""
    text = re.sub(r" ?([;:!?])(?=\s|$)", "\u00a0\\1", text)
    return text.replace("« ", "«\u00a0").replace(" »", "\u00a0»")


# --- the clients --------------------------------------------------------------------------------

def _headers(rows: list[tuple[str, str]]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in rows)


def _inline_runs(p: str, rng: random.Random, kind: str) -> str:
    """HTML of one paragraph with a few inline runs over whole words, as authors format text:
    a bold phrase, a link's text, and (Word) a run split where it was edited."""
    words = p.split(" ")
    esc = [htmlmod.escape(w, quote=False) for w in words]
    n = len(esc)
    if n >= 12:
        i = rng.randrange(1, n // 3)
        esc[i] = "<b>" + esc[i]
        esc[i + 1] = esc[i + 1] + "</b>"
        j = rng.randrange(n // 3 + 1, 2 * n // 3)
        esc[j] = '<a href="https://intranet.example.com/notes">' + esc[j]
        esc[j + 2] = esc[j + 2] + "</a>"
        if kind == "word":
            k = rng.randrange(2 * n // 3 + 1, n - 1)
            esc[k] = esc[k] + "</span><span lang=EN-US style='color:#1F497D'>"
    return " ".join(esc)


def _outlook(paras: list[str], lang: str, charset: str, subject: str, msgid: str,
             rng: random.Random, two_spaces: bool) -> bytes:
    paras = [_curly(p) for p in paras]
    if lang == "fr":
        paras = [_french_spaces(p) for p in paras]
    plain_paras = paras
    if two_spaces:  # the author types two spaces after a full stop
        plain_paras = [re.sub(r"\. (?=[A-Z])", ".  ", p) for p in paras]
    plain = "\n\n".join(plain_paras) + "\n"
    word_lang = "FR" if lang == "fr" else "EN-US"
    body = []
    for p in plain_paras:
        h = _inline_runs(p, rng, "word").replace("\u00a0", "&nbsp;")
        h = h.replace(".  ", ".&nbsp; ")
        body.append(f"<p class=MsoNormal><span lang={word_lang}>{h}<o:p></o:p></span></p>")
        body.append(f"<p class=MsoNormal><span lang={word_lang}><o:p>&nbsp;</o:p></span></p>")
    html_text = (
        '<html xmlns:v="urn:schemas-microsoft-com:vml" '
        'xmlns:o="urn:schemas-microsoft-com:office:office" '
        'xmlns:w="urn:schemas-microsoft-com:office:word" '
        'xmlns:m="http://schemas.microsoft.com/office/2004/12/omml" '
        'xmlns="http://www.w3.org/TR/REC-html40">\n<head>\n'
        f'<meta http-equiv="Content-Type" content="text/html; charset={charset}">\n'
        '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">\n'
        "<style><!--\n/* Font Definitions */\n@font-face\n\t{font-family:\"Cambria Math\";\n"
        "\tpanose-1:2 4 5 3 5 4 6 3 2 4;}\n@font-face\n\t{font-family:Calibri;\n"
        "\tpanose-1:2 15 5 2 2 2 4 3 2 4;}\n/* Style Definitions */\n"
        "p.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0cm;\n\tfont-size:11.0pt;\n"
        "\tfont-family:\"Calibri\",sans-serif;}\na:link, span.MsoHyperlink\n"
        "\t{mso-style-priority:99;\n\tcolor:#0563C1;\n\ttext-decoration:underline;}\n"
        ".MsoChpDefault\n\t{mso-style-type:export-only;}\n@page WordSection1\n"
        "\t{size:612.0pt 792.0pt;\n\tmargin:72.0pt 72.0pt 72.0pt 72.0pt;}\n"
        "div.WordSection1\n\t{page:WordSection1;}\n--></style><!--[if gte mso 9]><xml>\n"
        '<o:shapedefaults v:ext="edit" spidmax="1026" />\n</xml><![endif]-->'
        "<!--[if gte mso 9]><xml>\n<o:shapelayout v:ext=\"edit\">\n"
        '<o:idmap v:ext="edit" data="1" />\n</o:shapelayout></xml><![endif]-->\n</head>\n'
        f'<body lang={word_lang} link="#0563C1" vlink="#954F72" '
        "style='word-wrap:break-word'>\n<div class=WordSection1>\n"
        + "\n".join(body) + "\n</div>\n</body>\n</html>\n")
    boundary = "_000_DB9PR02MB7314C2A1E4F0B5D3A9C1E2F3DB9PR02MB7314eurp_"
    head = _headers([
        ("From", "\"Dupont, Marie\" <ceo@example.com>"),
        ("To", "All Staff <all-staff@example.com>"),
        ("Subject", subject),
        ("Thread-Topic", subject),
        ("Thread-Index", "AdqfK3m9c2VhbGVkQmVudGhhbUJveA=="),
        ("Date", "Mon, 6 May 2024 09:30:12 +0000"),
        ("Message-ID", msgid),
        ("Accept-Language", "fr-FR, en-US" if lang == "fr" else "en-US"),
        ("Content-Language", "fr-FR" if lang == "fr" else "en-US"),
        ("X-MS-Has-Attach", ""),
        ("X-MS-TNEF-Correlator", ""),
        ("Content-Type", f'multipart/alternative;\n\tboundary="{boundary}"'),
        ("MIME-Version", "1.0"),
    ])
    cs = "windows-1252" if charset == "windows-1252" else "utf-8"
    raw = (head + "\n" + f"--{boundary}\n"
           f'Content-Type: text/plain; charset="{cs}"\n'
           "Content-Transfer-Encoding: quoted-printable\n\n").encode("ascii")
    raw += qp(plain, cs) + b"\n"
    raw += (f"--{boundary}\nContent-Type: text/html; charset=\"{cs}\"\n"
            "Content-Transfer-Encoding: quoted-printable\n\n").encode("ascii")
    raw += qp(html_text, cs) + f"\n--{boundary}--\n".encode("ascii")
    return raw


def _gmail(paras: list[str], lang: str, subject: str, msgid: str, rng: random.Random) -> bytes:
    plain = "\n\n".join(textwrap.fill(p, 76, break_long_words=False, break_on_hyphens=False)
                        for p in paras) + "\n"
    ascii_only = plain.isascii()
    first, rest = paras[0], paras[1:]
    inner = _inline_runs(first, rng, "gmail") + "".join(
        f"<div><br></div><div>{_inline_runs(p, rng, 'gmail')}</div>" for p in rest)
    html_text = f'<div dir="ltr">{inner}</div>\n'
    boundary = "000000000000" + "".join(rng.choice("0123456789abcdef") for _ in range(16))
    head = _headers([
        ("MIME-Version", "1.0"),
        ("From", "Marie Dupont <ceo@example.com>"),
        ("Date", "Mon, 6 May 2024 11:30:12 +0200"),
        ("Message-ID", msgid),
        ("Subject", subject),
        ("To", "all-staff@example.com"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ])
    raw = (head + "\n" + f"--{boundary}\n" + 'Content-Type: text/plain; charset="UTF-8"\n'
           ).encode("ascii")
    if ascii_only:
        raw += b"\n" + plain.encode("ascii")
    else:
        raw += b"Content-Transfer-Encoding: quoted-printable\n\n" + qp(plain, "utf-8",
                                                                        after_space=False)
        raw += b"\n"
    raw += (f"\n--{boundary}\n" + 'Content-Type: text/html; charset="UTF-8"\n'
            "Content-Transfer-Encoding: quoted-printable\n\n").encode("ascii")
    raw += qp(html_text, "utf-8", after_space=False) + f"\n--{boundary}--\n".encode("ascii")
    return raw


def _apple(paras: list[str], lang: str, subject: str, msgid: str, rng: random.Random) -> bytes:
    plain = "\n\n".join(paras) + "\n"
    divs = "<div><br></div>".join(f"<div>{_inline_runs(p, rng, 'apple')}</div>" for p in paras)
    html_text = ('<html><head><meta http-equiv="content-type" content="text/html; '
                 'charset=utf-8"></head><body style="overflow-wrap: break-word; '
                 '-webkit-nbsp-mode: space; line-break: after-white-space;">'
                 f"{divs}<div><br></div></body></html>")
    boundary = "Apple-Mail=_5F1C2B7E-3A9D-4C2E-8B1F-7D6A0E9C4B21"
    head = _headers([
        ("From", "Marie Dupont <ceo@example.com>"),
        ("Content-Type", f'multipart/alternative;\n\tboundary="{boundary}"'),
        ("Mime-Version", "1.0 (Mac OS X Mail 16.0 \\(3774.500.171.1.1\\))"),
        ("Subject", subject),
        ("Message-Id", msgid),
        ("Date", "Mon, 6 May 2024 11:30:12 +0200"),
        ("To", "all-staff@example.com"),
        ("X-Mailer", "Apple Mail (2.3774.500.171.1.1)"),
    ])
    raw = (head + "\n\n" + f"--{boundary}\n" + "Content-Transfer-Encoding: quoted-printable\n"
           "Content-Type: text/plain;\n\tcharset=utf-8\n\n").encode("ascii")
    raw += qp(plain, "utf-8") + b"\n"
    if lang == "fr":
        raw += (f"--{boundary}\nContent-Transfer-Encoding: base64\n"
                "Content-Type: text/html;\n\tcharset=utf-8\n\n").encode("ascii")
        raw += b64(html_text, "utf-8")
    else:
        raw += (f"--{boundary}\nContent-Transfer-Encoding: quoted-printable\n"
                "Content-Type: text/html;\n\tcharset=utf-8\n\n").encode("ascii")
        raw += qp(html_text, "utf-8") + b"\n"
    raw += f"--{boundary}--\n".encode("ascii")
    return raw


def _tb_wrap(text: str, indent: str, width: int = 78) -> str:
    """Thunderbird's HTML serializer: long source lines wrapped at spaces, indented."""
    lines = textwrap.wrap(text, width - len(indent), break_long_words=False,
                          break_on_hyphens=False)
    return ("\n" + indent).join(lines)


def _thunderbird(paras: list[str], lang: str, subject: str, msgid: str,
                 rng: random.Random) -> bytes:
    delsp = lang == "fr"
    sig = "-- \nMarie Dupont\nDirection g\u00e9n\u00e9rale" if lang == "fr" else \
        "-- \nMarie Dupont\nChief Executive Officer"
    plain = flowed(paras, 72, delsp) + "\n\n" + sig + "\n"
    ind = "    "
    body = (ind + ("<br>\n" + ind + "<br>\n" + ind).join(
        _tb_wrap(htmlmod.escape(p, quote=False), ind) for p in paras) + "<br>\n")
    sig_html = htmlmod.escape(sig, quote=False).replace("\n", "<br>\n" + ind + "  ")
    html_text = ("<!DOCTYPE html>\n<html>\n  <head>\n\n"
                 '    <meta http-equiv="content-type" content="text/html; charset=UTF-8">\n'
                 "  </head>\n  <body>\n" + body + ind + "<br>\n"
                 f'{ind}<div class="moz-signature">{sig_html}</div>\n  </body>\n</html>\n')
    boundary = "------------" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl"
                                                    "mnopqrstuvwxyz0123456789") for _ in range(24))
    cte = "7bit" if (plain + html_text).isascii() else "8bit"
    head = _headers([
        ("Content-Type", f'multipart/alternative;\n boundary="{boundary}"'),
        ("Message-ID", msgid),
        ("Date", "Mon, 6 May 2024 11:30:12 +0200"),
        ("MIME-Version", "1.0"),
        ("User-Agent", "Mozilla Thunderbird"),
        ("Content-Language", "fr" if lang == "fr" else "en-US"),
        ("To", "all-staff@example.com"),
        ("From", "Marie Dupont <ceo@example.com>"),
        ("Subject", subject),
    ])
    params = "charset=UTF-8; format=flowed" + ("; delsp=yes" if delsp else "")
    text = (head + "\nThis is a multi-part message in MIME format.\n"
            f"--{boundary}\nContent-Type: text/plain; {params}\n"
            f"Content-Transfer-Encoding: {cte}\n\n{plain}\n"
            f"--{boundary}\nContent-Type: text/html; charset=UTF-8\n"
            f"Content-Transfer-Encoding: {cte}\n\n{html_text}\n--{boundary}--\n")
    return text.encode("utf-8")


def _plain_b64(paras: list[str], subject: str, msgid: str) -> bytes:
    head = _headers([
        ("From", "Marie Dupont <ceo@example.com>"),
        ("To", "all-staff@example.com"),
        ("Subject", subject),
        ("Date", "Mon, 6 May 2024 11:30:12 +0200"),
        ("Message-ID", msgid),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "base64"),
    ])
    return (head + "\n").encode("ascii") + b64("\n\n".join(paras) + "\n", "utf-8")


def build(shape: str, paragraphs: list[str], lang: str = "en", subject: str = "Staff notice",
          msgid: str = "<notice-1@example.com>", seed: int = 1,
          charset: str = "windows-1252", two_spaces: bool = False) -> bytes:
    """Raw bytes (CRLF line ends) of an all-staff message written by `shape` (see SHAPES).
    `charset` and `two_spaces` apply to Outlook."""
    rng = random.Random(f"{shape}/{seed}")
    if shape == "outlook":
        raw = _outlook(paragraphs, lang, charset, subject, msgid, rng, two_spaces)
    elif shape == "gmail":
        raw = _gmail(paragraphs, lang, subject, msgid, rng)
    elif shape == "apple":
        raw = _apple(paragraphs, lang, subject, msgid, rng)
    elif shape == "thunderbird":
        raw = _thunderbird(paragraphs, lang, subject, msgid, rng)
    elif shape == "plain_b64":
        raw = _plain_b64(paragraphs, subject, msgid)
    else:
        raise ValueError(f"unknown client shape {shape!r}")
    return re.sub(rb"\r?\n", b"\r\n", raw)


def samples() -> list[tuple[str, str, bytes]]:
    """The fixed sample set: (name, lang, raw) for every shape in English, and Outlook,
    Gmail, Apple Mail, Thunderbird and plain base64 in French."""
    out = []
    for k, shape in enumerate(SHAPES):
        for lang in ("en", "fr"):
            paras = prose(lang, 5, start=7 * k + (3 if lang == "fr" else 0),
                          long=LONG_PARAGRAPHS[shape])
            kw = {}
            if shape == "outlook":
                kw = {"charset": "windows-1252" if lang == "fr" else "utf-8",
                      "two_spaces": lang == "en"}
            raw = build(shape, paras, lang, f"{shape} notice ({lang})",
                        f"<{shape}-{lang}@example.com>", seed=k, **kw)
            out.append((f"{shape}-{lang}", lang, raw))
    return out


# --- what a reader sees -------------------------------------------------------------------------

def _part(raw: bytes, subtype: str) -> email.message.Message | None:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for p in msg.walk():
        if p.get_content_type() == f"text/{subtype}":
            return p
    return None


def _decoded(p: email.message.Message) -> str:
    data = p.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data.decode(p.get_content_charset() or "us-ascii").replace("\r\n", "\n")


def plain_rendering(raw: bytes) -> str | None:
    """The text/plain body as a mail reader shows it: decoded, format=flowed reflowed
    (RFC 3676: a line ending in a space joins the next; with DelSp=yes that space goes)."""
    p = _part(raw, "plain")
    if p is None:
        return None
    text = _decoded(p)
    if (p.get_param("format") or "").lower() != "flowed":
        return text
    delsp = (p.get_param("delsp") or "").lower() == "yes"
    out: list[str] = []
    cur = ""
    for line in text.split("\n"):
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and line != "-- ":
            cur += line[:-1] if delsp else line
        else:
            out.append(cur + line)
            cur = ""
    if cur:
        out.append(cur)
    return "\n".join(out)


_BLOCK = re.compile(r"</?(?:p|div|br|li|tr|h[1-6]|blockquote|pre|table|ul|ol)\b[^>]*>", re.I)


def html_rendering(raw: bytes, nbsp_as_space: bool = False) -> str | None:
    """The text/html body as a reader copies it out of the rendered mail: head, style and
    comments gone, block elements and <br> end lines, other tags dropped, entities decoded,
    runs of ASCII whitespace collapsed (CSS white-space: normal) with U+00A0 kept."""
    p = _part(raw, "html")
    if p is None:
        return None
    h = _decoded(p)
    h = re.sub(r"(?is)<!--.*?-->|<head\b.*?</head>|<style\b.*?</style>", "", h)
    h = _BLOCK.sub("\x00", h)
    h = re.sub(r"<[^>]*>", "", h)
    lines = []
    for seg in h.split("\x00"):
        t = htmlmod.unescape(re.sub(r"[ \t\r\n\f]+", " ", seg)).strip(" ")
        if t.strip():
            lines.append(t.replace("\u00a0", " ") if nbsp_as_space else t)
    return "\n".join(lines)


# --- checks -----------------------------------------------------------------------------------

_SQUASH = re.compile(r"(?:&nbsp;|[ \u00a0])+")
# HTML renders a line end of its source as a space (outside pre, which the relay never marks)
_SQUASH_HTML = re.compile(r"(?:&nbsp;|[ \t\r\n\u00a0])+")


def _leaves(raw: bytes) -> list[tuple[str, list[tuple[str, str]], str | None, str | None,
                                      bytes, str | None]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = []
    for p in msg.walk():
        heads = [(k, str(v)) for k, v in p.items()]
        if p.is_multipart():
            out.append((p.get_content_type(), heads, p.preamble, p.epilogue, b"", None))
            continue
        payload = p.get_payload(decode=True)
        body = payload if isinstance(payload, bytes) else b""
        text = None
        if p.get_content_type() in ("text/plain", "text/html"):
            text = body.decode(p.get_content_charset() or "us-ascii", "replace")
        out.append((p.get_content_type(), heads, p.preamble, p.epilogue, body, text))
    return out


def whitespace_only(orig: bytes, copy: bytes) -> str | None:
    """None when `copy` differs from `orig` only in the whitespace of text/plain and text/html
    bodies as Python's email package reads both (same tree, headers, preambles, epilogues and
    non-text payloads; text equal once runs of spaces, NBSP and `&nbsp;` are one space, in
    HTML with line ends, which HTML renders as spaces, too); else what differs."""
    a, b = _leaves(orig), _leaves(copy)
    if len(a) != len(b):
        return f"{len(a)} parts in the original, {len(b)} in the copy"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x[:4] != y[:4]:
            return f"part {i} ({x[0]}): type, headers, preamble or epilogue differ"
        if x[5] is None or y[5] is None:
            if x[4] != y[4]:
                return f"part {i} ({x[0]}, not text): payload differs"
        elif (sq := _SQUASH_HTML if x[0] == "text/html" else _SQUASH).sub(" ", x[5]) != \
                sq.sub(" ", y[5]):
            return f"part {i} ({x[0]}): text differs beyond whitespace"
    return None


def word_gap_share(orig: str, copy: str, sentence_gap) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(ordinary same-line word gaps, how many differ) between two renderings of the same
    words; `sentence_gap(left, right)` tells sentence gaps, which are not counted."""
    ot = list(re.finditer(r"\S+", orig))
    ct = list(re.finditer(r"\S+", copy))
    assert [m.group() for m in ot] == [m.group() for m in ct], "the words differ"
    gaps = changed = 0
    for k in range(len(ot) - 1):
        sep = orig[ot[k].end():ot[k + 1].start()]
        if "\n" in sep or sentence_gap(ot[k].group(), ot[k + 1].group()):
            continue
        gaps += 1
        changed += copy[ct[k].end():ct[k + 1].start()] != sep
    return gaps, changed
