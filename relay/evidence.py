"""The evidence sheet: one self-contained HTML page that shows a decode's verdict and why.

`render` takes the decoder's structured result (decoding.Report, with its per-gap list and
Detail) and the inputs as they were read (sheetinputs.text_source, image_source), and writes a
page with no network at all (inline CSS and SVG, the screenshot as a data: URL, a
Content-Security-Policy that forbids every fetch) that prints on A4 and Letter. It shows the
named recipient's bits only at the gaps the excerpt itself shows, and of every other recipient
only how many gaps agree. The sections are built in sheetsections, sheetexcerpts and sheetchart.
"""

from __future__ import annotations

from collections.abc import Sequence

from .decoding import GapRead, Report
from .sheetchart import section_chart
from .sheetexcerpts import section_excerpt
from .sheetinputs import Custody, Source
from .sheetsections import (
    section_candidates,
    section_custody,
    section_message,
    section_provenance,
    section_verdict,
    section_why,
)
from .sheetwords import esc

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
        f"<title>Leak evidence: {esc(report.verdict)}"
        f"{' - ' + esc(report.message.get('subject')) if report.message else ''}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>Leak evidence sheet</h1>",
        f"<p class='sub'>relay decode, {esc(custody.decoded_at)}. "
        "Generated from the relay's log; keep with the case file.</p>",
        section_verdict(report),
        section_message(report, sources),
        section_why(report, sources),
        section_provenance(report),
    ]
    for i, src in enumerate(sources):
        parts.append(section_excerpt(i, src, by_excerpt.get(i, {}), report, top is not None))
    if report.detail.spread:
        parts.append(section_chart(report))
    if report.candidates:
        parts.append(section_candidates(report))
    parts.append(section_custody(report, sources, custody))
    parts.append(
        "<footer>What this sheet shows of the recipients' codes: the named recipient's "
        "spacing only at the gaps the excerpt itself shows, and for every other recipient only "
        "how many of those gaps agree. The false-match probability counts every recipient "
        "scored. How it works: README, &ldquo;How it works&rdquo; and &ldquo;Decoding a "
        "leak&rdquo;.</footer></main></body></html>\n")
    return "".join(parts)
