"""Each excerpt on the evidence sheet with the gaps read marked (pure): in the text as given, in
what the OCR read, and drawn over the screenshot (SVG), each mark saying whether the named
recipient's copy agrees there."""

from __future__ import annotations

import base64

from .decoding import GapRead, Report
from .sheetinputs import Source
from .sheetwords import esc, plural, thousands
from .tokens import JOIN_MARK


def _named(report: Report) -> str | None:
    return report.candidates[0].recipient if report.candidates else None


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
            f"data-counted='{int(g.counted)}' title='{esc(shows)} space; {esc(why)}'>"
            f"{esc(ws)}</span>")


def _text_marked(src: Source, gaps: dict[int, GapRead], named: str | None) -> str:
    t, spans = src.text, src.spans
    out = [esc(t[:spans[0][0]].replace(JOIN_MARK, "")) if spans else esc(t)]
    for k, (a, b) in enumerate(spans):
        out.append(esc(t[a:b].replace(JOIN_MARK, "")))
        end = spans[k + 1][0] if k + 1 < len(spans) else len(t)
        ws = t[b:end].replace(JOIN_MARK, "")
        out.append(_mark(gaps[k], named, ws) if k in gaps else esc(ws))
    return "".join(out)


def _ocr_marked(src: Source, gaps: dict[int, GapRead], named: str | None) -> str:
    out = []
    for k, (text, _first, last) in enumerate(src.boxes):
        out.append(esc(text))
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


def section_excerpt(i: int, src: Source, gaps: dict[int, GapRead], report: Report,
             scored: bool) -> str:
    named = _named(report)
    counted = sum(g.counted for g in gaps.values())
    n = len(report.excerpts)
    head = (f"<h2>{'Excerpt ' + str(i + 1) if n > 1 else 'The excerpt'}: {esc(src.name)} "
            f"<span class='sub'>({esc(src.kind)})</span></h2>")
    if not gaps:
        summary = ("<p>No gap of this excerpt was read against the message"
                   + (" (no logged message matches it)." if not report.message else ".") + "</p>")
    else:
        ok = sum(1 for g in gaps.values() if g.counted and g.named == g.observed)
        summary = (f"<p>{plural(len(gaps), 'gap')} read; "
                   + (f"of the {thousands(counted)} counted, {ok} agree with "
                      f"<b>{esc(named)}</b>&rsquo;s copy and {counted - ok} do not"
                      + ("." if report.verdict == "identified"
                         else " (the closest copy, not named).")
                      if scored and named else "none scored.") + "</p>")
    nc = any(not g.counted for g in gaps.values())
    legend = LEGEND.format(n=esc(named), nc="<span class='key'><span class='gap nc'></span>read, "
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
