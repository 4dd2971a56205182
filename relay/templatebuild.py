"""A message's copy template, made and checked once per message: `build()`.

`build()` checks the template once per message, instead of decoding every copy again: the copies
with every carrier single, every one doubled and CHECK_PATTERNS fixed random patterns must
decode to the expected text, stay within the line limits, keep every byte outside the text
bodies, and (7bit/8bit) equal the reference's bytes. tests/test_template.py proves the rest.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import mime, splice
from .qp import QP_LINE_MAX
from .template import Fallback, MessageTemplate, assemble
from .templatepart import Carrier, Mark, NoTemplate, PartBase, part_base
from .textpart import LINE_MAX, TextPart

CHECK_PATTERNS = 1  # random bit patterns checked at build, besides all-single and all-doubled


def expected_text(part: TextPart, carriers: Sequence[Carrier], marks: Sequence[Mark],
                  bits: np.ndarray) -> str:
    """The part's text in a copy with these bits (the reference's edits, applied)."""
    edits = list(marks)
    edits += [(s, e, ins + single if b else single)
              for (s, e, single, ins), b in zip(carriers, bits.tolist(), strict=True)]
    edits.sort()
    return splice.apply(part.text, edits)


def _long_lines(body: bytes, limit: int) -> set[bytes]:
    return {line for line in body.replace(b"\r\n", b"\n").split(b"\n") if len(line) > limit}


def _check_part(part: TextPart, got: TextPart, carriers: Sequence[Carrier],
                marks: Sequence[Mark], bits: np.ndarray) -> str | None:
    """Why the template's copy of a part is wrong (None when it is right)."""
    if got.cte != part.cte or got.charset != part.charset or got.subtype != part.subtype:
        return "another part"
    want = expected_text(part, carriers, marks, bits)
    if got.text != want:
        return "another text"
    body = got.body
    if part.cte == "quoted-printable":
        if not _long_lines(body, QP_LINE_MAX) <= _long_lines(part.body, QP_LINE_MAX):
            return "a quoted-printable line over 76 octets"
    elif part.cte == "base64":
        a, b = got.b64_span
        lines = body[a:b].replace(b"\r\n", b"\n").split(b"\n")
        if any(len(x) != part.b64_width for x in lines[:-1]) or len(lines[-1]) > \
                part.b64_width:
            return "base64 lines of another width"
    else:
        if not _long_lines(body, LINE_MAX) <= _long_lines(part.body, LINE_MAX):
            return f"a line over {LINE_MAX} octets"
        edits = sorted([*marks, *((s, e, ins + single if b else single) for (s, e, single, ins), b
                                  in zip(carriers, bits.tolist(), strict=True))])
        ref = splice.apply(part.body, splice.byte_edits(part, splice.check_edits(part, edits)))
        if body != ref:
            return "other bytes than the reference"
    return None


def check(tmpl: MessageTemplate, parts: Sequence[TextPart],
          carriers: Sequence[Sequence[Carrier]], marks: Sequence[Sequence[Mark]],
          bits: np.ndarray) -> dict[int, str]:
    """Per templated part, why its copy with these bits is wrong (empty: all right). Also
    checks that every byte outside the text bodies is the original's."""
    copy = tmpl.copy(bits)
    found = mime.analyse(copy, strict=False)
    by_path = {p.path: p for p in found.parts}
    firsts = [0]
    for c in carriers:
        firsts.append(firsts[-1] + len(c))
    bad: dict[int, str] = {}
    spans: list[tuple[int, TextPart]] = []
    for i, part in enumerate(parts):
        got = by_path.get(part.path)
        if got is None:
            bad[i] = "part not found in the copy"
            continue
        spans.append((i, got))
        if not tmpl.templated[i]:
            continue
        why = _check_part(part, got, carriers[i], marks[i], bits[firsts[i]:firsts[i + 1]])
        if why is not None:
            bad[i] = why
    if not bad:
        spans.sort(key=lambda t: parts[t[0]].start)
        o = c = 0
        for i, got in spans:
            if tmpl.raw[o:parts[i].start] != copy[c:got.start]:
                bad[i] = "bytes outside the text bodies"
            o, c = parts[i].end, got.end
        if tmpl.raw[o:] != copy[c:] and spans:
            bad[spans[-1][0]] = "bytes outside the text bodies"
    return bad


def build(raw: bytes, parts: Sequence[TextPart], carriers: Sequence[Sequence[Carrier]],
          marks: Sequence[Sequence[Mark]], fallback: Fallback, seed: int = 0
          ) -> MessageTemplate:
    """The message's template, checked: every carrier single, every one doubled and
    CHECK_PATTERNS random patterns (fixed seed) must make copies whose templated parts decode
    to the expected text within the line limits (7bit/8bit: the reference's bytes), and keep
    every other byte. A part that fails any of it is made by `fallback`. Raises NoTemplate
    when the copies cannot be read back at all."""
    counts = [len(c) for c in carriers]
    bases: list[PartBase | None] = []
    why: list[str] = []
    for part, cs, ms in zip(parts, carriers, marks, strict=True):
        try:
            bases.append(part_base(part, cs, ms))
            why.append("")
        except NoTemplate as e:
            bases.append(None)
            why.append(str(e))
    n = sum(counts)
    rng = np.random.default_rng(seed)
    patterns = [np.zeros(n, np.uint8), np.ones(n, np.uint8)]
    patterns += [rng.integers(0, 2, n, dtype=np.uint8) for _ in range(CHECK_PATTERNS)]
    while True:
        tmpl = assemble(raw, parts, bases, counts, fallback)
        bad: dict[int, str] = {}
        for bits in patterns:
            bad = check(tmpl, parts, carriers, marks, bits)
            if bad:
                break
        if not bad:
            tmpl.why = why
            return tmpl
        for i, reason in bad.items():
            if bases[i] is None:
                raise NoTemplate(f"part {parts[i].path or '1'}: {reason}")
            bases[i] = None
            why[i] = reason
