"""relay.charsets: which charsets a part can be rewritten in, and their characters' bytes."""

from __future__ import annotations

import pytest
from mimesamples import b64_lines, doubling_edits

from relay import charsets
from relay.mime import text_parts
from relay.splice import render
from relay.textpart import Skip


def test_ebcdic_and_stateful_charsets_only_with_base64() -> None:
    raw = b"Content-Type: text/plain; charset=cp037\r\n\r\n" + "Hello world".encode("cp037")
    assert text_parts(raw)[0] == []
    text = "Hello world, EBCDIC."
    raw = (b"Content-Type: text/plain; charset=cp037\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + b64_lines(text.encode("cp037")))
    parts, _ = text_parts(raw)
    assert [p.text for p in parts] == [text]
    out = render(raw, parts, {"": doubling_edits(parts[0], 1)})
    assert text_parts(out)[0][0].text == "Hello  world,  EBCDIC."


@pytest.mark.parametrize("name, cte, want", [
    (None, "7bit", ("ascii", True)),
    ("UTF8", "8bit", ("utf-8", True)),
    ("ISO-8859-1", "quoted-printable", ("iso8859-1", True)),
    ("shift_jis", "8bit", ("shift_jis", True)),
    ("utf-16", "base64", ("utf-16", False)),
    ("cp037", "base64", ("cp037", False)),
])
def test_codec_for(name: str | None, cte: str, want: tuple[str, bool]) -> None:
    assert charsets.codec_for(name, cte) == want


@pytest.mark.parametrize("name, cte", [
    ("x-unknown", "7bit"), ("base64", "7bit"), ("unicode_escape", "8bit"), ("utf-8-sig", "8bit"),
    ("utf-16", "8bit"), ("iso-2022-jp", "7bit"), ("cp037", "quoted-printable"),
])
def test_codec_for_refuses(name: str, cte: str) -> None:
    with pytest.raises(Skip):
        charsets.codec_for(name, cte)


def test_char_offsets_every_checkpoint() -> None:
    text = "\u00e9" * 100 + "a" * 30
    assert list(charsets.char_offsets(text, text.encode("utf-8"), "utf-8")) == [0, 128, 228, 230]
    with pytest.raises(Skip):
        charsets.char_offsets("abc", b"abd", "utf-8")

