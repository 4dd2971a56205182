"""Where a text may carry bits: the gaps between words that a copy can double safely.

`analyse_plain` and `analyse_html` take the decoded text of one MIME part and return a Layout:
its units (normalised words, for alignment) and, for each gap between consecutive units, whether
it is a carrier and of which class. Rules (see README, "How it works"):
- a carrier is a run of one or two ASCII spaces between two words on the same line;
- never at a line end, never next to a URL or e-mail address, never between two number groups;
- none in quoted lines ('>') or after a signature separator ('-- '); long lines carry like any
  other (fingerprint keeps a 7bit/8bit line under 998 octets; QP and base64 re-wrap);
- in HTML, a gap whose spaces come from two text nodes around inline markup (`foo <b> bar`)
  renders as one word gap and carries in its first space; a line end of the HTML source
  inside a paragraph carries as a zero-width gap just before it (an insertion of `&nbsp;`);
- in HTML: only in text nodes outside pre, code, tt, kbd, samp, textarea, script, style, head,
  title, blockquote and elements whose class or id names a quote or signature.
"""

from __future__ import annotations

import html
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from .htmltokens import Tokens, excluded_attr
from .tokens import (
    RAW_TOKEN,
    group_units,
    is_address_like,
    is_numeric_group,
    is_sentence_gap,
)

NONE, SENTENCE, WORD = 0, 1, 2
SIG_LINE = re.compile(r"(?m)^[ \t\u00a0]*--[ \u00a0]?\r?$")
MAX_CARRIER_LINE = 900  # characters: the longest carrier line under the rules before RULES 1
# Carrier rules a message was signed with (logged with it, so a retry re-prepares it the same
# way): 0 = lines over MAX_CARRIER_LINE never carry, a gap split by inline HTML markup never
# carries, MIME read as relay.mime alone reads it; 1 = long lines carry, split gaps carry, and a
# message whose MIME structure readers could disagree about is left whole (mime.analyse).
RULES = 1


@dataclass(frozen=True)
class Gap:
    start: int  # offsets of the whitespace run in the part's decoded text
    end: int
    cls: int  # NONE, SENTENCE or WORD


# how a gap looked when the message arrived (Layout.arrived): one space, doubled (two spaces in
# plain text, a no-break space and a space in either), or neither (a line end, a tab, markup)
SINGLE, DOUBLED, OTHER = 0, 1, 2
MARK_FORMS = ("  ", "\u00a0 ", " \u00a0")  # what a doubled gap of some earlier pass looks like


@dataclass(frozen=True)
class Layout:
    kind: str  # "plain" or "html"
    words: tuple[str, ...]  # normalised units
    gaps: tuple[Gap, ...]  # len(words) - 1 entries (cls NONE where no carrier)
    # gaps that are not carriers but look like the doubled gap of an earlier pass (a copy
    # forwarded or quoted back to all staff, a second filter): (start, end, replacement) source
    # edits every copy makes, so no earlier recipient's marks travel on (carriers get the
    # copy's own): a doubled gap becomes one space; a no-break space an earlier pass put
    # before a line end of the HTML source goes
    marks: tuple[tuple[int, int, str], ...] = ()
    arrived: bytes = b""  # per gap: SINGLE, DOUBLED or OTHER, as the message arrived

    def carriers(self) -> list[tuple[int, Gap]]:
        return [(i, g) for i, g in enumerate(self.gaps) if g.cls != NONE]


def _split_spaces(ws: str, offsets: Sequence[int], a: int, source: str) -> bool:
    """Rendered whitespace of spaces only, each from a source space, not contiguous in the
    source (text nodes around inline markup: `foo <b> bar`): HTML renders it as one gap."""
    return (len(ws) <= 4 and ws == " " * len(ws)
            and all(offsets[i] >= 0 and source[offsets[i]] == " " for i in range(a, a + len(ws)))
            and offsets[a + 1] != offsets[a] + 1)


_SOURCE_LINE_END = re.compile(r"\r?\n[ \t]*")


def _source_line_end(ws: str, offsets: Sequence[int], a: int, source: str) -> bool:
    """Rendered whitespace that is one line end of the HTML source (then indentation), all
    from the source, contiguous: `word\n    next` inside a paragraph (Thunderbird, Word)."""
    if not _SOURCE_LINE_END.fullmatch(ws):
        return False
    start = offsets[a]
    return start >= 0 and all(offsets[a + i] == start + i for i in range(len(ws))) \
        and source[start:start + len(ws)] == ws


def _layout(kind: str, rendered: str, offsets: Sequence[int], source: str,
            no_carry: bytearray, split: bool = False) -> Layout:
    """Units and carriers of a rendered text whose character i came from source[offsets[i]]
    (-1: synthetic line break); no_carry[i] marks characters in excluded regions."""
    sig = SIG_LINE.search(rendered)
    if sig:
        no_carry[sig.start():] = b"\x01" * (len(rendered) - sig.start())
    matches = list(RAW_TOKEN.finditer(rendered))
    raw = [m.group() for m in matches]
    units = group_units(raw)
    gaps: list[Gap] = []
    marks: list[tuple[int, int, str]] = []
    arrived = bytearray()
    for k in range(len(units) - 1):
        left, right = units[k], units[k + 1]
        a, b = matches[left.last].end(), matches[right.first].start()
        cls = NONE
        ltok, rtok = raw[left.last], raw[right.first]
        ws = rendered[a:b]
        src_a = offsets[a]
        arrived.append(_arrived(kind, ws))
        if split and len(ws) > 1 and _split_spaces(ws, offsets, a, source):
            ws = " "  # the first space carries; the browser collapses the others into it
        if split and _source_line_end(ws, offsets, a, source):
            # a line end of the HTML source inside a paragraph renders as one word gap: it
            # carries as an insertion before the line end (`&nbsp;` there renders NBSP + space)
            ws = ""
        if (
            right.first == left.last + 1
            and ws in ("", " ", "  ")
            and src_a >= 0
            and offsets[a + max(len(ws), 1) - 1] == src_a + max(len(ws), 1) - 1
            and source[src_a:src_a + len(ws)] == ws
            and not any(no_carry[matches[left.last].start():matches[right.first].end()])
            and not is_address_like(ltok) and not is_address_like(rtok)
            and not (is_numeric_group(ltok) and is_numeric_group(rtok))
        ):
            cls = SENTENCE if is_sentence_gap(ltok, rtok) else WORD
        if cls != NONE:
            gaps.append(Gap(src_a, src_a + len(ws), cls))
        else:
            gaps.append(Gap(offsets[a] if offsets[a] >= 0 else 0,
                            offsets[a] if offsets[a] >= 0 else 0, NONE))
            if (_arrived(kind, ws) == DOUBLED
                    and right.first == left.last + 1 and offsets[a - 1] >= 0 and offsets[b] >= 0
                    and not is_address_like(ltok) and not is_address_like(rtok)
                    and not (is_numeric_group(ltok) and is_numeric_group(rtok))):
                mark = _mark(ws, source, offsets[a - 1] + 1, offsets[b])
                if mark:
                    marks.append(mark)
    return Layout(kind, tuple(u.norm for u in units), tuple(gaps), tuple(marks), bytes(arrived))


# between two words: tags, the whitespace itself (with entities), tags ("you&nbsp; <b>today")
_MARK_SOURCE = re.compile(r"(?:<[^<>\n]*>)*(?P<ws>[^<]*)(?:<[^<>\n]*>)*")


def _arrived(kind: str, ws: str) -> int:
    """How a gap's whitespace (as rendered) shows a mark: in HTML a browser collapses plain
    spaces and line ends into one space, so only a no-break space makes a doubled gap there
    (`&nbsp; `, or `&nbsp;` before a line end of the source)."""
    if ws == " " or (kind == "html" and ws and not ws.strip(" \t\r\n")):
        return SINGLE
    if ws in MARK_FORMS and (kind == "plain" or ws != "  "):
        return DOUBLED
    if kind == "html" and ws[:1] == "\u00a0" and _SOURCE_LINE_END.fullmatch(ws[1:]):
        return DOUBLED
    return OTHER


def _mark(ws: str, source: str, start: int, end: int) -> tuple[int, int, str] | None:
    """The edit that sheds an earlier pass's doubled gap `ws` (as rendered), whose source runs
    from `start` to `end` (tags may stand on either side of the whitespace)."""
    m = _MARK_SOURCE.fullmatch(source, start, end)
    if m is None:
        return None
    src = m.group("ws")
    if ws in MARK_FORMS:
        return (m.start("ws"), m.end("ws"), " ") if html.unescape(src) == ws else None
    tail = ws[1:]  # a no-break space before a line end of the HTML source: it goes, the line
    if src.endswith(tail) and html.unescape(src[:-len(tail)]) == "\u00a0":  # end stays
        return m.start("ws"), m.end("ws") - len(tail), ""
    return None




QUOTED = re.compile(r"^[ \t]*>")


def analyse_plain(text: str, rules: int = RULES) -> Layout:
    """Layout of a text/plain body (format=flowed or fixed; the rules are the same, since a
    carrier never touches a line end). `rules` 0: lines over MAX_CARRIER_LINE never carry."""
    no_carry = bytearray(len(text))
    longest = MAX_CARRIER_LINE if rules < 1 else len(text)
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if QUOTED.match(body) or len(body) > longest:
            no_carry[pos:pos + len(line)] = b"\x01" * len(line)
        pos += len(line)
    return _layout("plain", text, range(len(text)), text, no_carry)


# --- HTML -----------------------------------------------------------------------------------

TAG_NAME = re.compile(r"</?([A-Za-z][^\s/>]*)")
ENTITY = re.compile(r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};?)")
RAWTEXT = {"script", "style", "textarea", "title", "xmp"}
EXCLUDED = {"pre", "code", "tt", "kbd", "samp", "textarea", "script", "style", "head", "title",
            "blockquote", "xmp", "listing", "plaintext"}
BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "tr", "td", "th", "table", "tbody", "thead",
              "h1", "h2", "h3", "h4", "h5", "h6", "hr", "blockquote", "section", "article",
              "header", "footer", "pre", "dd", "dt", "dl", "center", "form", "nav", "aside",
              "address", "figure", "figcaption", "main", "body", "html", "head", "title"}
VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "param",
        "source", "track", "wbr"}


def analyse_html(text: str, rules: int = RULES) -> Layout:
    """Layout of a text/html body: rendered text of the text nodes, carriers written so that a
    browser shows them (see embed: NBSP + space). Time and memory linear in the text. `rules`
    0: a gap whose spaces come from two text nodes never carries."""
    rendered: list[str] = []  # pieces of the rendered text
    offsets = array("q")  # per rendered character: its offset in text, -1 if synthetic
    no_carry = bytearray()  # per rendered character: 1 in an excluded region
    stack: list[tuple[str, bool]] = []  # open elements and whether they exclude their content
    open_names: dict[str, int] = {}  # how many of each name are on the stack
    depth_excluded = 0

    def emit_text(start: int, end: int) -> None:
        ex = b"\x01" if depth_excluded > 0 else b"\x00"
        pos = start
        for m in ENTITY.finditer(text, start, end):
            if m.start() > pos:
                rendered.append(text[pos:m.start()])
                offsets.extend(range(pos, m.start()))
                no_carry.extend(ex * (m.start() - pos))
            ch = html.unescape(m.group())
            rendered.append(ch)
            offsets.extend([-1] * len(ch))  # entity: never part of a carrier gap
            no_carry.extend(ex * len(ch))
            pos = m.end()
        if end > pos:
            rendered.append(text[pos:end])
            offsets.extend(range(pos, end))
            no_carry.extend(ex * (end - pos))

    def emit_break() -> None:
        rendered.append("\n")
        offsets.append(-1)
        no_carry.append(1)

    tokens = Tokens(text)
    pos = 0
    n = len(text)
    while pos < n:
        found = tokens.next(pos)
        if found is None:
            emit_text(pos, n)
            break
        start, end = found
        if start > pos:
            emit_text(pos, start)
        tag = text[start:end]
        pos = end
        nm = TAG_NAME.match(tag)
        if not nm:
            continue
        name = nm.group(1).lower()
        closing = tag.startswith("</")
        if name in BLOCK_TAGS:
            emit_break()
        if closing:
            if open_names.get(name):
                while True:
                    top, ex = stack.pop()
                    depth_excluded -= ex
                    open_names[top] -= 1
                    if top == name:
                        break
            continue
        if name in VOID or tag.endswith("/>"):
            continue
        excluded = name in EXCLUDED or excluded_attr(tag)
        if name in RAWTEXT:
            end = re.compile(rf"</{name}\b", re.I).search(text, pos)
            stop = end.start() if end else n
            if name == "textarea":
                depth_excluded += 1
                emit_text(pos, stop)
                depth_excluded -= 1
            pos = stop
            continue
        stack.append((name, excluded))
        open_names[name] = open_names.get(name, 0) + 1
        depth_excluded += excluded
    return _layout("html", "".join(rendered), offsets, text, no_carry, split=rules >= 1)
