"""How the recipients compare, on the evidence sheet (pure): every scored recipient's number of
agreeing gaps as an SVG histogram, the named recipient and the runner-up marked."""

from __future__ import annotations

from collections import Counter

from .decoding import Report
from .sheetwords import esc, plural


def section_chart(report: Report) -> str:
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
            f"font-weight='bold'>{esc(label)}: {m} of {n}</text>")
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
           f"{plural(rest, 'other recipient')} by how many gaps their copy agrees at (median "
           f"{median}{unit}). An innocent copy agrees at many gaps by chance, since most gaps are "
           "single spaces in every copy; what names a leaker is standing clear of the crowd, "
           "as the false-match probability measures.")
    return (f"<h2>How the recipients compare</h2><figure>{svg}<figcaption>{cap}</figcaption>"
            "</figure>")
