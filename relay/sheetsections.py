"""The evidence sheet's written sections (pure: report in, HTML out): the verdict, the message,
why no one is named, text that reached all staff twice, the top candidates, and custody."""

from __future__ import annotations

from collections.abc import Sequence

from .decoding import Report
from .sheetinputs import Custody, Source
from .sheetwords import esc, fmt_p, one_in, plural, thousands


def section_verdict(report: Report) -> str:
    v = report.verdict
    top = report.candidates[0] if report.candidates else None
    out = [f"<section class='verdict v-{esc(v)}'>"]
    if v == "identified" and top:
        out.append(f"<div class='word'>IDENTIFIED</div><p>The text comes from the copy sent to "
                   f"<b>{esc(top.recipient)}</b>.</p>")
    elif v == "inconclusive":
        out.append("<div class='word'>INCONCLUSIVE</div><p>The message was found, but the "
                   "evidence does not single out one recipient. Nobody is named.</p>")
    else:
        out.append("<div class='word'>NO MATCH</div><p>The text does not come from any "
                   "all-staff message in the relay's log. Nobody is named.</p>")
    if top:
        p = top.false_match_probability
        whose = (f"{esc(top.recipient)}&rsquo;s copy" if v == "identified"
                 else f"the closest copy ({esc(top.recipient)}&rsquo;s)")
        out.append(
            f"<p><b>False-match probability: {fmt_p(p)}</b> ({one_in(p)}). This is the chance "
            f"that some recipient who did not leak the text would, by coincidence, have a copy "
            f"agreeing with the excerpt at least as well as {whose} does, counting all "
            f"{plural(report.recipients, 'recipient')} scored.</p>")
    out.append(f"<p>Threshold: a recipient is named only when this probability is at or below "
               f"{fmt_p(report.threshold)} ({one_in(report.threshold)}).</p></section>")
    return "".join(out)


def section_message(report: Report, sources: Sequence[Source]) -> str:
    rows = []
    if report.message:
        m = report.message
        rows += [("Subject", esc(m.get("subject") or "(no subject)")),
                 ("Date", esc(m.get("date") or "(no date)")),
                 ("Sender", esc(report.detail.sender or "(unknown)")),
                 ("Message-ID",
                  f"<span class='mono'>{esc(m.get('message_id') or '(none)')}</span>"),
                 ("Recipients scored", thousands(report.recipients))]
        for o in report.others:
            rows.append(("Also matches", f"{esc(o.get('subject') or '(no subject)')}, "
                         f"{esc(o.get('date'))}, <span class='mono'>{esc(o.get('message_id'))}"
                         "</span>"))
    for i, ex in enumerate(report.excerpts):
        name = sources[i].name if i < len(sources) else f"excerpt {i + 1}"
        label = f"Excerpt {i + 1}" if len(report.excerpts) > 1 else "Excerpt"
        rows.append((label, f"{esc(name)}: {plural(ex['words'], 'word')}, "
                     f"{thousands(ex['words_aligned'])} aligned with the message, "
                     f"{plural(ex['bits_observed'], 'signature gap')} read"))
    if len(report.excerpts) > 1:
        rows.append(("Pooled", "the excerpts' evidence is added up per recipient; a gap read "
                     "in two excerpts counts once, and not at all if they read it differently"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>The message</h2><table class='kv'>{body}</table>"


def section_why(report: Report, sources: Sequence[Source]) -> str:
    v = report.verdict
    if v == "identified":
        return ""
    shots = any(s.kind == "screenshot" for s in sources)
    words = sum(ex["words"] for ex in report.excerpts)
    why: list[str] = []
    helps: list[str] = []
    if v == "no_match":
        why.append(f"No logged all-staff message shares enough of the text: "
                   f"{plural(words, 'word')} were read, and a message is found when a quarter "
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
            why.append(f"{esc(who)}&rsquo;s copy matches best, but {esc(who)} forwarded this text "
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
            why.append(f"Too few gaps were read: {plural(read, 'gap')}. Even a copy agreeing "
                       "at every one of them would have a false-match probability of "
                       f"{fmt_p(report.detail.perfect or 1.0)}, above the threshold of "
                       f"{fmt_p(report.threshold)}.")
        elif not explained:
            d = top.bits_observed - top.bits_matching
            why.append(f"The closest copy agrees at {top.bits_matching} of {read} gaps read; with "
                       f"{plural(d, 'disagreement')}, a match this close could happen by chance "
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


def section_provenance(report: Report) -> str:
    if not report.provenance:
        return ""
    out = ["<h2>Text that reached all staff twice</h2>"]
    for pv in report.provenance:
        later, earlier = pv.get("message") or {}, pv.get("contains") or {}
        who = pv.get("from_copy_of")
        src = (f"made from the copy of <b>{esc(who)}</b>" if who
               else "from a copy that could not be told")
        text = (f"&ldquo;{esc(later.get('subject') or '(no subject)')}&rdquo; ("
                f"{esc(later.get('date') or 'no date')}, sent by {esc(pv.get('sender'))}) carries "
                f"the text of &ldquo;{esc(earlier.get('subject') or '(no subject)')}&rdquo;, "
                f"{src}.")
        if pv.get("explains_top_candidate"):
            out.append(f"<div class='note'><p>{text}</p><p><b>{esc(who)} sent this text on to all "
                       f"staff</b>, so everyone who received that message had {esc(who)}&rsquo;s "
                       "marks: a match with their copy does not show that they leaked it, and "
                       "they are not named.</p></div>")
        else:
            out.append(f"<p>{text}</p>")
    return "".join(out)



def section_candidates(report: Report) -> str:
    rows = []
    for i, c in enumerate(report.candidates, 1):
        rows.append(f"<tr class='{'top' if i == 1 else ''}'><td class='num'>{i}</td>"
                    f"<td>{esc(c.recipient)}</td><td class='num'>{c.bits_matching} of "
                    f"{c.bits_observed}</td><td class='num'>{fmt_p(c.false_match_probability)}"
                    "</td></tr>")
    return ("<h2>Top candidates</h2><table class='cands'><colgroup><col style='width:9mm'>"
            "<col><col style='width:32mm'><col style='width:42mm'></colgroup>"
            "<tr><th class='num'>#</th><th>recipient</th><th class='num'>gaps agreeing</th>"
            "<th class='num'>false-match probability</th></tr>" + "".join(rows) + "</table>")


def section_custody(report: Report, sources: Sequence[Source], custody: Custody) -> str:
    rows = [("Decoded at", esc(custody.decoded_at)),
            ("relay version", esc(custody.version)),
            ("Key id", "<span class='mono'>"
             f"{esc(report.detail.key_id or '(none: no message matched)')}</span>"),
            ("Database", f"<span class='mono'>{esc(custody.db_path)}</span>"),
            ("Threshold", fmt_p(report.threshold))]
    for i, s in enumerate(sources):
        rows.append((f"Input {i + 1}" if len(sources) > 1 else "Input",
                     f"{esc(s.name)} ({esc(s.kind)}, {plural(s.size, 'byte')})<br>SHA-256 "
                     f"<span class='hash'>{s.sha256}</span>"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>Custody</h2><table class='kv'>{body}</table>"
