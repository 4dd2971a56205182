"""The evidence sheet: one self-contained HTML page that shows a decode's verdict and why.

`render` takes the decoder's structured result (decoding.Report, with its per-gap list and
Detail) and the inputs as they were read (`text_source`, `image_source`), and writes a page with
no network at all (inline CSS and SVG, the screenshot as a data: URL, a Content-Security-Policy
that forbids every fetch) that prints on A4 and Letter. It shows the named recipient's bits only
at the gaps the excerpt itself shows, and of every other recipient only how many gaps agree.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .decoding import GapRead, Report
from .ocr import OcrWord, unit_boxes
from .tokens import JOIN_MARK, excerpt_spans

SHOWN_AS_IS = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


@dataclass
class Source:
    """One input as decode read it: a text (its cleaned text and each unit's span) or a
    screenshot (the image to show and each unit's OCR boxes)."""

    name: str
    sha256: str
    size: int
    kind: str  # "text" or "screenshot"
    text: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    image: bytes | None = None  # what the page shows (PNG, JPEG, GIF or WebP)
    mime: str = ""
    width: int = 0
    height: int = 0
    boxes: list[tuple[str, OcrWord, OcrWord]] = field(default_factory=list)


@dataclass
class Custody:
    version: str
    db_path: str
    decoded_at: str  # UTC, ISO 8601


def _named_input(name: str) -> str:
    return "(standard input)" if name == "-" else name


def text_source(name: str, data: bytes, text: str) -> Source:
    """`text` is `data` decoded as decode decoded it; name "-" is standard input."""
    cleaned, spans = excerpt_spans(text)
    return Source(_named_input(name), hashlib.sha256(data).hexdigest(), len(data), "text",
                  cleaned, spans)


def image_source(name: str, data: bytes, words: Sequence[OcrWord]) -> Source:
    """`words`: the OCR words decode classified (ocr.run_tesseract of `data`)."""
    src = Source(_named_input(name), hashlib.sha256(data).hexdigest(), len(data), "screenshot",
                 boxes=unit_boxes(words))
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            src.width, src.height = im.size
            mime = next((m for magic, m in SHOWN_AS_IS.items() if data.startswith(magic)), "")
            if not mime and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
                mime = "image/webp"
            if mime:
                src.image, src.mime = data, mime
            else:  # TIFF, BMP, PNM: browsers do not show them
                out = io.BytesIO()
                im.convert("RGB").save(out, "PNG")
                src.image, src.mime = out.getvalue(), "image/png"
    except Exception:  # noqa: BLE001 - the sheet then shows the OCR text only, and says so
        src.image = None
    return src


# --- words -------------------------------------------------------------------------------

def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def one_in(p: float) -> str:
    """'about 1 in 32 billion' for p = 3.1e-11."""
    if p <= 0:
        return "less than 1 in 10<sup>300</sup>"
    n = 1 / p
    if n < 1.5:
        return "close to certain"
    for size, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if n >= size:
            if n >= 1000 * size and word == "trillion":
                e = math.floor(math.log10(n))
                return f"about 1 in {n / 10 ** e:.2g} &times; 10<sup>{e}</sup>"
            return f"about 1 in {_two_digits(n / size)} {word}"
    return f"about 1 in {_two_digits(n)}"


def _two_digits(x: float) -> str:
    """x to two significant digits, without an exponent: 3.4, 34, 340, 3,400."""
    if x < 10:
        return f"{x:.2g}"
    return _thousands(round(x, 1 - int(math.floor(math.log10(x)))))


def _thousands(x: float) -> str:
    return f"{int(x):,}"


def _e(s: Any) -> str:
    return html.escape("" if s is None else str(s))


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{_thousands(n)} {one if n == 1 else (many or one + 's')}"


# --- the page ----------------------------------------------------------------------------

CSS = """
@page { margin: 14mm 13mm; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: 'DejaVu Sans', 'Liberation Sans', Arial, sans-serif; font-size: 10.5pt;
  color: #1f2328; margin: 0; line-height: 1.4; overflow-wrap: anywhere; }
main { max-width: 184mm; margin: 0 auto; padding: 8mm 0; }
@media print { main { max-width: none; padding: 0; } }
h1 { font-size: 15pt; margin: 0 0 2mm; }
h2 { font-size: 11.5pt; margin: 6mm 0 2mm; border-bottom: 1px solid #d0d7de;
  break-after: avoid; }
h3 { font-size: 10.5pt; margin: 4mm 0 1mm; break-after: avoid; }
p { margin: 1.5mm 0; }
.sub { color: #57606a; font-size: 9pt; }
.verdict { border: 2px solid; border-radius: 2mm; padding: 3mm 4mm; margin: 3mm 0;
  break-inside: avoid; }
.verdict .word { font-size: 16pt; font-weight: bold; letter-spacing: 0.04em; }
.v-identified { border-color: #1a7f37; background: #eef8f0; }
.v-inconclusive { border-color: #9a6700; background: #fff8e5; }
.v-no_match { border-color: #57606a; background: #f4f5f7; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { text-align: left; vertical-align: top; padding: 0.8mm 2mm 0.8mm 0;
  border-bottom: 1px solid #eaeef2; }
th { color: #57606a; font-weight: normal; }
table.kv th { width: 34mm; }
table.cands td.num, table.cands th.num { text-align: right; }
table.cands tr.top td { font-weight: bold; }
.mono, .hash { font-family: 'DejaVu Sans Mono', 'Liberation Mono', monospace; font-size: 8.5pt; }
.hash { word-break: break-all; }
.excerpt { font-family: 'DejaVu Sans Mono', 'Liberation Mono', monospace; font-size: 9pt;
  white-space: pre-wrap; line-height: 1.75; border: 1px solid #d0d7de; padding: 2mm 3mm;
  margin: 1mm 0 2mm; }
.gap { border-radius: 1px; }
.gap.ok { background: #8fd19e; box-shadow: inset 0 -3px 0 #1a7f37; }
.gap.bad { background: #ffb3b8; box-shadow: inset 0 -3px 0 #cf222e;
  outline: 1px dashed #cf222e; }
.gap.nc { background: #e1e4e8; box-shadow: inset 0 -2px 0 #8c959f; }
.key span { display: inline-block; min-width: 1.6em; height: 1em; vertical-align: -0.15em;
  margin-right: 1mm; }
.key { margin-right: 5mm; white-space: nowrap; }
figure { margin: 2mm 0; break-inside: avoid; }
figure svg { display: block; width: 100%; height: auto; }
figure.shot svg { border: 1px solid #d0d7de; }
svg g.gap.ok .fill { fill: rgba(26, 127, 55, 0.35); }
svg g.gap.ok .bar { fill: #1a7f37; }
svg g.gap.bad .fill { fill: rgba(207, 34, 46, 0.45); }
svg g.gap.bad .bar { fill: #cf222e; }
svg g.gap.bad .x { stroke: #cf222e; stroke-width: 2; vector-effect: non-scaling-stroke; }
svg g.gap.nc .fill { fill: rgba(140, 149, 159, 0.35); }
svg g.gap.nc .bar { fill: #8c959f; }
.excerpt.ocr { font-size: 8pt; }
figcaption { font-size: 9pt; color: #57606a; }
.note { border-left: 3px solid #9a6700; padding: 1mm 3mm; background: #fff8e5; margin: 2mm 0;
  break-inside: avoid; }
ul { margin: 1mm 0; padding-left: 6mm; }
footer { margin-top: 6mm; font-size: 8.5pt; color: #57606a; border-top: 1px solid #d0d7de;
  padding-top: 2mm; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render(report: Report, sources: Sequence[Source], custody: Custody) -> str:
    """The evidence sheet of `report`, decoded from `sources`, as one HTML document."""
    by_excerpt: dict[int, dict[int, GapRead]] = {}
    for g in report.gaps:
        by_excerpt.setdefault(g.excerpt, {})[g.word] = g
    top = report.candidates[0] if report.candidates else None
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Leak evidence: {_e(report.verdict)}"
        f"{' - ' + _e(report.message.get('subject')) if report.message else ''}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>Leak evidence sheet</h1>",
        f"<p class='sub'>relay decode, {_e(custody.decoded_at)}. "
        "Generated from the relay's log; keep with the case file.</p>",
        _verdict(report),
        _message(report, sources),
        _why(report, sources),
        _provenance(report),
    ]
    for i, src in enumerate(sources):
        parts.append(_excerpt(i, src, by_excerpt.get(i, {}), report, top is not None))
    if report.detail.spread:
        parts.append(_picture(report))
    if report.candidates:
        parts.append(_candidates(report))
    parts.append(_custody(report, sources, custody))
    parts.append(
        "<footer>What this sheet shows of the recipients' codes: the named recipient's "
        "spacing only at the gaps the excerpt itself shows, and for every other recipient only "
        "how many of those gaps agree. The false-match probability counts every recipient "
        "scored. How it works: README, &ldquo;How it works&rdquo; and &ldquo;Decoding a "
        "leak&rdquo;.</footer></main></body></html>\n")
    return "".join(parts)


def _named(report: Report) -> str | None:
    return report.candidates[0].recipient if report.candidates else None


def _verdict(report: Report) -> str:
    v = report.verdict
    top = report.candidates[0] if report.candidates else None
    out = [f"<section class='verdict v-{_e(v)}'>"]
    if v == "identified" and top:
        out.append(f"<div class='word'>IDENTIFIED</div><p>The text comes from the copy sent to "
                   f"<b>{_e(top.recipient)}</b>.</p>")
    elif v == "inconclusive":
        out.append("<div class='word'>INCONCLUSIVE</div><p>The message was found, but the "
                   "evidence does not single out one recipient. Nobody is named.</p>")
    else:
        out.append("<div class='word'>NO MATCH</div><p>The text does not come from any "
                   "all-staff message in the relay's log. Nobody is named.</p>")
    if top:
        p = top.false_match_probability
        whose = (f"{_e(top.recipient)}&rsquo;s copy" if v == "identified"
                 else f"the closest copy ({_e(top.recipient)}&rsquo;s)")
        out.append(
            f"<p><b>False-match probability: {fmt_p(p)}</b> ({one_in(p)}). This is the chance "
            f"that some recipient who did not leak the text would, by coincidence, have a copy "
            f"agreeing with the excerpt at least as well as {whose} does, counting all "
            f"{_plural(report.recipients, 'recipient')} scored.</p>")
    out.append(f"<p>Threshold: a recipient is named only when this probability is at or below "
               f"{fmt_p(report.threshold)} ({one_in(report.threshold)}).</p></section>")
    return "".join(out)


def _message(report: Report, sources: Sequence[Source]) -> str:
    rows = []
    if report.message:
        m = report.message
        rows += [("Subject", _e(m.get("subject") or "(no subject)")),
                 ("Date", _e(m.get("date") or "(no date)")),
                 ("Sender", _e(report.detail.sender or "(unknown)")),
                 ("Message-ID", f"<span class='mono'>{_e(m.get('message_id') or '(none)')}</span>"),
                 ("Recipients scored", _thousands(report.recipients))]
        for o in report.others:
            rows.append(("Also matches", f"{_e(o.get('subject') or '(no subject)')}, "
                         f"{_e(o.get('date'))}, <span class='mono'>{_e(o.get('message_id'))}"
                         "</span>"))
    for i, ex in enumerate(report.excerpts):
        name = sources[i].name if i < len(sources) else f"excerpt {i + 1}"
        label = f"Excerpt {i + 1}" if len(report.excerpts) > 1 else "Excerpt"
        rows.append((label, f"{_e(name)}: {_plural(ex['words'], 'word')}, "
                     f"{_thousands(ex['words_aligned'])} aligned with the message, "
                     f"{_plural(ex['bits_observed'], 'signature gap')} read"))
    if len(report.excerpts) > 1:
        rows.append(("Pooled", "the excerpts' evidence is added up per recipient; a gap read "
                     "in two excerpts counts once, and not at all if they read it differently"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>The message</h2><table class='kv'>{body}</table>"


def _why(report: Report, sources: Sequence[Source]) -> str:
    v = report.verdict
    if v == "identified":
        return ""
    shots = any(s.kind == "screenshot" for s in sources)
    words = sum(ex["words"] for ex in report.excerpts)
    why: list[str] = []
    helps: list[str] = []
    if v == "no_match":
        why.append(f"No logged all-staff message shares enough of the text: "
                   f"{_plural(words, 'word')} were read, and a message is found when a quarter "
                   "of them (at least 6), or one stretch of 30, align with it.")
        why.append("Possible causes: the text was not sent to all staff through this relay; its "
                   "log entry was purged (<code>[store] keep_days</code>); it was logged under a "
                   "key no longer in the key file; or too little of it survives"
                   + (" (the OCR read few words of the screenshot)" if shots else "") + ".")
        helps += ["a longer excerpt, or the whole leaked text;",
                  "the original screenshot or file rather than a retyped or re-photographed copy;",
                  "<code>relay messages --since DATE</code> to check that the message is still "
                  "in the log."]
    else:
        explained = [p for p in report.provenance if p.get("explains_top_candidate")]
        top = report.candidates[0] if report.candidates else None
        read = top.bits_observed if top else 0
        if explained:
            who = explained[0].get("from_copy_of")
            why.append(f"{_e(who)}&rsquo;s copy matches best, but {_e(who)} forwarded this text "
                       "to all staff (see below). The marks of that copy then reached everyone "
                       "who received the forward, so a match with it does not show who leaked "
                       "it: it is not named.")
            helps.append("look for a leak of the later message instead (its copies carry their "
                         "own marks), or for a further excerpt of the same leak.")
        if top is None:
            why.append("No recipient of the message could be scored (the log lists none).")
        elif read == 0:
            why.append("No signature gap could be read. Retyped text loses doubled spaces, and "
                       "line breaks carry nothing.")
        elif (report.detail.perfect or 1.0) > report.threshold:
            why.append(f"Too few gaps were read: {_plural(read, 'gap')}. Even a copy agreeing "
                       "at every one of them would have a false-match probability of "
                       f"{fmt_p(report.detail.perfect or 1.0)}, above the threshold of "
                       f"{fmt_p(report.threshold)}.")
        elif not explained:
            d = top.bits_observed - top.bits_matching
            why.append(f"The closest copy agrees at {top.bits_matching} of {read} gaps read; with "
                       f"{_plural(d, 'disagreement')}, a match this close could happen by chance "
                       f"({fmt_p(top.false_match_probability)}). Doubled spaces lost in retyping, "
                       "gaps normalised or mixed from several copies, or OCR misreads all do this.")
        if not explained or top is None or read == 0:
            helps += ["a longer excerpt (about 100 words of running text are usually enough "
                      "among 1,000 recipients);",
                      "the original screenshot or file: a retyped, re-encoded or reformatted copy "
                      "loses the spacing;",
                      "further excerpts of the same leak, given together (their evidence is "
                      "pooled)."]
    items = "".join(f"<li>{h}</li>" for h in helps)
    return ("<h2>Why no one is named</h2>" + "".join(f"<p>{w}</p>" for w in why)
            + (f"<p>What would help:</p><ul>{items}</ul>" if items else ""))


def _provenance(report: Report) -> str:
    if not report.provenance:
        return ""
    out = ["<h2>Text that reached all staff twice</h2>"]
    for pv in report.provenance:
        later, earlier = pv.get("message") or {}, pv.get("contains") or {}
        who = pv.get("from_copy_of")
        src = (f"made from the copy of <b>{_e(who)}</b>" if who
               else "from a copy that could not be told")
        text = (f"&ldquo;{_e(later.get('subject') or '(no subject)')}&rdquo; ("
                f"{_e(later.get('date') or 'no date')}, sent by {_e(pv.get('sender'))}) carries "
                f"the text of &ldquo;{_e(earlier.get('subject') or '(no subject)')}&rdquo;, "
                f"{src}.")
        if pv.get("explains_top_candidate"):
            out.append(f"<div class='note'><p>{text}</p><p><b>{_e(who)} sent this text on to all "
                       f"staff</b>, so everyone who received that message had {_e(who)}&rsquo;s "
                       "marks: a match with their copy does not show that they leaked it, and "
                       "they are not named.</p></div>")
        else:
            out.append(f"<p>{text}</p>")
    return "".join(out)


def _mark(g: GapRead, named: str | None, ws: str) -> str:
    """A read gap in the excerpt text."""
    shows = "doubled" if g.observed else "single"
    if g.named is None:
        cls, why = "nc", "not scored: a message the named recipient did not receive"
    elif not g.counted:
        cls, why = "nc", "read in another excerpt too, or read differently there: counted once"
    elif g.named == g.observed:
        cls, why = "ok", f"agrees with {named}'s copy"
    else:
        cls, why = "bad", (f"disagrees: {named}'s copy has a "
                           f"{'doubled' if g.named else 'single'} space")
    return (f"<span class='gap {cls}' data-gap='{g.excerpt}:{g.word}' "
            f"data-counted='{int(g.counted)}' title='{_e(shows)} space; {_e(why)}'>"
            f"{_e(ws)}</span>")


def _text_marked(src: Source, gaps: dict[int, GapRead], named: str | None) -> str:
    t, spans = src.text, src.spans
    out = [_e(t[:spans[0][0]].replace(JOIN_MARK, "")) if spans else _e(t)]
    for k, (a, b) in enumerate(spans):
        out.append(_e(t[a:b].replace(JOIN_MARK, "")))
        end = spans[k + 1][0] if k + 1 < len(spans) else len(t)
        ws = t[b:end].replace(JOIN_MARK, "")
        out.append(_mark(gaps[k], named, ws) if k in gaps else _e(ws))
    return "".join(out)


def _ocr_marked(src: Source, gaps: dict[int, GapRead], named: str | None) -> str:
    out = []
    for k, (text, _first, last) in enumerate(src.boxes):
        out.append(_e(text))
        if k + 1 == len(src.boxes):
            break
        nxt = src.boxes[k + 1][1]
        if nxt.line[:3] != last.line[:3]:
            ws = "\n\n"
        elif nxt.line != last.line:
            ws = "\n"
        else:
            ws = "  " if k in gaps and gaps[k].observed else " "
        out.append(_mark(gaps[k], named, ws) if k in gaps else ws)
    return "".join(out)


def _shot(src: Source, gaps: dict[int, GapRead]) -> str:
    assert src.image is not None
    w, h = src.width, src.height
    rects = []
    for k, g in sorted(gaps.items()):
        if k + 1 >= len(src.boxes):
            continue
        a, b = src.boxes[k][2], src.boxes[k + 1][1]
        s = a.scale or 1
        x0, x1 = (a.left + a.width) / s, b.left / s
        if x1 - x0 < 4:
            mid = (x0 + x1) / 2
            x0, x1 = mid - 2, mid + 2
        y0 = min(a.top, b.top) / s - 1
        y1 = max(a.top + a.height, b.top + b.height) / s + 1
        bar = max(2.0, (y1 - y0) / 7)
        cls = ("nc" if g.named is None or not g.counted
               else "ok" if g.named == g.observed else "bad")
        cross = (f"<path class='x' d='M{x0:.1f} {y1 + bar:.1f}L{x1:.1f} {y0:.1f}'/>"
                 if cls == "bad" else "")
        rects.append(f"<g class='gap {cls}' data-gap='{g.excerpt}:{g.word}' "
                     f"data-counted='{int(g.counted)}'><rect class='fill' x='{x0:.1f}' "
                     f"y='{y0:.1f}' width='{x1 - x0:.1f}' height='{y1 - y0:.1f}'/>"
                     f"<rect class='bar' x='{x0 - 1:.1f}' y='{y1:.1f}' width='{x1 - x0 + 2:.1f}' "
                     f"height='{bar:.1f}'/>{cross}</g>")
    data = base64.b64encode(src.image).decode()
    return (f"<figure class='shot' style='max-width:{w}px'>"
            f"<svg viewBox='0 0 {w} {h}' xmlns='http://www.w3.org/2000/svg' role='img' "
            f"aria-label='the screenshot with the gaps read'>"
            f"<image href='data:{src.mime};base64,{data}' x='0' y='0' width='{w}' "
            f"height='{h}'/>{''.join(rects)}</svg>"
            "<figcaption>The screenshot as given, with each gap read drawn where the OCR found "
            "it.</figcaption></figure>")


LEGEND = ("<p class='sub'><span class='key'><span class='gap ok'></span>agrees with {n}'s copy"
          "</span><span class='key'><span class='gap bad'></span>disagrees</span>{nc}"
          " Unmarked gaps were not read (line ends, gaps that are no signature gap, unsure OCR). "
          "A wide mark is a doubled space, a narrow one a single space.</p>")


def _excerpt(i: int, src: Source, gaps: dict[int, GapRead], report: Report,
             scored: bool) -> str:
    named = _named(report)
    counted = sum(g.counted for g in gaps.values())
    n = len(report.excerpts)
    head = (f"<h2>{'Excerpt ' + str(i + 1) if n > 1 else 'The excerpt'}: {_e(src.name)} "
            f"<span class='sub'>({_e(src.kind)})</span></h2>")
    if not gaps:
        summary = ("<p>No gap of this excerpt was read against the message"
                   + (" (no logged message matches it)." if not report.message else ".") + "</p>")
    else:
        ok = sum(1 for g in gaps.values() if g.counted and g.named == g.observed)
        summary = (f"<p>{_plural(len(gaps), 'gap')} read; "
                   + (f"of the {_thousands(counted)} counted, {ok} agree with "
                      f"<b>{_e(named)}</b>&rsquo;s copy and {counted - ok} do not"
                      + ("." if report.verdict == "identified"
                         else " (the closest copy, not named).")
                      if scored and named else "none scored.") + "</p>")
    nc = any(not g.counted for g in gaps.values())
    legend = LEGEND.format(n=_e(named), nc="<span class='key'><span class='gap nc'></span>read, "
                           "not counted here</span>" if nc else "") if gaps else ""
    out = [head, summary, legend]
    if src.kind == "screenshot":
        if src.image is not None:
            out.append(_shot(src, gaps))
        else:
            out.append("<p>(The image could not be decoded for display; the OCR reading "
                       "follows.)</p>")
        out.append("<h3>What the OCR read</h3>")
        out.append(f"<div class='excerpt ocr'>{_ocr_marked(src, gaps, named)}</div>")
    else:
        out.append(f"<div class='excerpt'>{_text_marked(src, gaps, named)}</div>")
    return "".join(out)


def _picture(report: Report) -> str:
    """Every scored recipient's number of agreeing gaps: the crowd as a histogram, the named
    recipient and the runner-up marked."""
    spread = report.detail.spread
    observed = {n for n, _ in spread}
    share = len(observed) > 1  # pooled messages: recipients saw different numbers of gaps
    vals = [round(100 * m / n) if share and n else m for n, m in spread]
    top_n = max(observed) if observed else 0
    hi = 100 if share else max(top_n, 1)
    counts = Counter(vals[1:])
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000, 10 ** 9)
                if hi / s <= 10)
    lo = max(0, (min(vals) - 2) // step * step) if vals else 0
    W, H, L, R, T, B = 680, 230, 46, 14, 40, 38
    pw, ph = W - L - R, H - T - B
    peak = max(counts.values()) if counts else 1

    def x(v: float) -> float:
        return L + pw * (v - lo) / (hi - lo or 1)

    bw = max(1.5, pw / (hi - lo + 1) - 1)
    bars = "".join(
        f"<rect x='{x(v) - bw / 2:.1f}' y='{T + ph - max(1.5, ph * c / peak):.1f}' "
        f"width='{bw:.1f}' height='{max(1.5, ph * c / peak):.1f}' fill='#8c959f'/>"
        for v, c in sorted(counts.items()))
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000, 10 ** 9)
                if (hi - lo) / s <= 10)
    ticks = "".join(
        f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{T + ph}' y2='{T + ph + 4}' stroke='#57606a'/>"
        f"<text x='{x(t):.1f}' y='{T + ph + 16}' text-anchor='middle'>{t}"
        f"{'%' if share else ''}</text>" for t in range(-(-lo // step) * step, hi + 1, step))
    yt = "".join(
        f"<text x='{L - 6}' y='{T + ph - ph * c / peak + 4:.1f}' text-anchor='end'>{c}</text>"
        f"<line x1='{L - 3}' x2='{L + pw}' y1='{T + ph - ph * c / peak:.1f}' "
        f"y2='{T + ph - ph * c / peak:.1f}' stroke='#eaeef2'/>"
        for c in sorted({peak, max(1, peak // 2)}))
    cands = report.candidates
    marks = []
    named_color = "#1a7f37" if report.verdict == "identified" else "#9a6700"
    for idx, (color, dash, label) in enumerate(
            [(named_color, "", cands[0].recipient if cands else ""),
             ("#0969da", "5 3", (cands[1].recipient if len(cands) > 1 else "")
              + " (runner-up)")]):
        if idx >= len(vals):
            break
        v = vals[idx]
        n, m = spread[idx]
        width = 6.6 * len(f"{label}: {m} of {n}")  # bold 11 px DejaVu Sans, about
        anchor = "end" if x(v) + 5 + width > W - 2 else "start"
        dx = -5 if anchor == "end" else 5
        y = T - 24 + 13 * idx
        marks.append(
            f"<line x1='{x(v):.1f}' x2='{x(v):.1f}' y1='{y + 4}' y2='{T + ph}' stroke='{color}' "
            f"stroke-width='2.5' stroke-dasharray='{dash}'/>"
            f"<circle cx='{x(v):.1f}' cy='{T + ph - 4}' r='4' fill='{color}'/>"
            f"<text x='{x(v) + dx:.1f}' y='{y + 4}' text-anchor='{anchor}' fill='{color}' "
            f"font-weight='bold'>{_e(label)}: {m} of {n}</text>")
    axis = ("share of the gaps read that agree" if share
            else f"gaps agreeing with the excerpt (of {top_n} read)")
    svg = (f"<svg viewBox='0 0 {W} {H}' xmlns='http://www.w3.org/2000/svg' role='img' "
           "font-family='DejaVu Sans, Arial, sans-serif' font-size='11' fill='#1f2328' "
           f"aria-label='how the recipients compare'>{yt}{bars}"
           f"<line x1='{L}' x2='{L + pw}' y1='{T + ph}' y2='{T + ph}' stroke='#57606a'/>"
           f"{ticks}<text x='{L + pw / 2:.1f}' y='{H - 4}' text-anchor='middle'>{axis}</text>"
           f"<text x='12' y='{T + ph / 2:.1f}' text-anchor='middle' "
           f"transform='rotate(-90 12 {T + ph / 2:.1f})'>recipients</text>{''.join(marks)}</svg>")
    rest = len(spread) - 1
    crowd = sorted(vals[1:])
    median = crowd[len(crowd) // 2] if crowd else 0
    unit = "%" if share else ""
    cap = (f"Every scored recipient&rsquo;s copy compared with the gaps read: grey bars count the "
           f"{_plural(rest, 'other recipient')} by how many gaps their copy agrees at (median "
           f"{median}{unit}). An innocent copy agrees at many gaps by chance, since most gaps are "
           "single spaces in every copy; what names a leaker is standing clear of the crowd, "
           "as the false-match probability measures.")
    return (f"<h2>How the recipients compare</h2><figure>{svg}<figcaption>{cap}</figcaption>"
            "</figure>")


def _candidates(report: Report) -> str:
    rows = []
    for i, c in enumerate(report.candidates, 1):
        rows.append(f"<tr class='{'top' if i == 1 else ''}'><td class='num'>{i}</td>"
                    f"<td>{_e(c.recipient)}</td><td class='num'>{c.bits_matching} of "
                    f"{c.bits_observed}</td><td class='num'>{fmt_p(c.false_match_probability)}"
                    "</td></tr>")
    return ("<h2>Top candidates</h2><table class='cands'><colgroup><col style='width:9mm'>"
            "<col><col style='width:32mm'><col style='width:42mm'></colgroup>"
            "<tr><th class='num'>#</th><th>recipient</th><th class='num'>gaps agreeing</th>"
            "<th class='num'>false-match probability</th></tr>" + "".join(rows) + "</table>")


def _custody(report: Report, sources: Sequence[Source], custody: Custody) -> str:
    rows = [("Decoded at", _e(custody.decoded_at)),
            ("relay version", _e(custody.version)),
            ("Key id", "<span class='mono'>"
             f"{_e(report.detail.key_id or '(none: no message matched)')}</span>"),
            ("Database", f"<span class='mono'>{_e(custody.db_path)}</span>"),
            ("Threshold", fmt_p(report.threshold))]
    for i, s in enumerate(sources):
        rows.append((f"Input {i + 1}" if len(sources) > 1 else "Input",
                     f"{_e(s.name)} ({_e(s.kind)}, {_plural(s.size, 'byte')})<br>SHA-256 "
                     f"<span class='hash'>{s.sha256}</span>"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>Custody</h2><table class='kv'>{body}</table>"
