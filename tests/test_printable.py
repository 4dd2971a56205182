"""relay.printable: what mail-borne text looks like on a terminal, as a table."""

from __future__ import annotations

import json

import pytest

from relay.printable import escape, escape_json, has_unsafe


@pytest.mark.parametrize("raw,shown", [
    ("Quarterly review", "Quarterly review"),
    ("Zoë, Jürgen, 東京, مرحبا", "Zoë, Jürgen, 東京, مرحبا"),  # scripts are not escaped
    ("\x1b[2J\x1b[Hpwned", "\\x1b[2J\\x1b[Hpwned"),  # clear screen
    ("a\x9b31mred", "a\\x9b31mred"),  # C1 CSI
    ("bell\x07 nul\x00 del\x7f", "bell\\x07 nul\\x00 del\\x7f"),
    ("line\r\nbreak\ttab", "line\\x0d\\x0abreak\\x09tab"),
    ("invoice\u202efdp.exe", "invoice\\u202efdp.exe"),  # right-to-left override
    ("\u2066x\u2069 \u202a\u202b\u202c\u202d", "\\u2066x\\u2069 \\u202a\\u202b\\u202c\\u202d"),
    ("a\u2028b", "a\\u2028b"),
    ("no\u00a0break, zero\u200bwidth", "no\u00a0break, zero\u200bwidth"),  # harmless: kept
])
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert has_unsafe(raw) == (raw != shown)
    assert not has_unsafe(escape(raw))


def test_escape_json_keeps_the_values() -> None:
    doc = {"subject": "a\x9bb\u202ec\x7fd\x1be", "n": [1, "x\u2069"]}
    out = escape_json(json.dumps(doc, ensure_ascii=False))
    assert not has_unsafe(out)
    assert json.loads(out) == doc
