"""Text from mail made safe to print on a terminal or write to a log. Pure.

A Subject, an address or a recipient name comes from whoever sent the mail. Printed raw, a
control character can move the cursor, rewrite earlier lines or change the terminal's settings
(C0 such as ESC, DEL, and C1 such as U+009B, the one-character CSI), and a bidirectional
override (U+202A-U+202E, U+2066-U+2069) can make text read differently from what it is (an
address shown reversed). `escape` writes each such character as a visible Python-style escape
(`\\x1b`, `\\x9b`, `\\u202e`) and leaves every other character, accents and scripts included,
as it is. The report is for people (`--json` is for programs: `escape_json` keeps it valid
JSON with the same values).
"""

from __future__ import annotations

import re

# C0, DEL, C1; bidi embeddings/overrides/isolates; line and paragraph separators
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _esc(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text: str) -> str:
    """`text` with every character of UNSAFE written as a visible escape."""
    return UNSAFE.sub(_esc, text)


def has_unsafe(text: str) -> bool:
    return UNSAFE.search(text) is not None


def escape_json(doc: str) -> str:
    """A compact JSON document (json.dumps without indent) with the UNSAFE characters
    json.dumps leaves raw (DEL, C1, bidi controls, separators) written as \\uXXXX: the same
    values, safe to print."""
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", doc)
