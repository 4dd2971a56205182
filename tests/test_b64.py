"""relay.b64: strict base64 decoding that keeps the encoded lines' span and width."""

from __future__ import annotations

import base64

import pytest
from mimesamples import B64, b64_lines, body, doubling_edits

from relay import b64
from relay.mime import text_parts
from relay.splice import render
from relay.textpart import B64_DEFAULT, Skip


def test_base64_line_length_and_ending_are_kept() -> None:
    parts, _ = text_parts(B64)
    (p,) = parts
    out = render(B64, parts, {"": doubling_edits(p, 1)})
    new = text_parts(out)[0][0]
    lines = body(out, new).split(b"\r\n")
    assert lines[-1] == b""  # the body still ends with its line ending
    assert all(len(line) == 64 for line in lines[:-2]) and 0 < len(lines[-2]) <= 64
    assert b"\n" not in body(out, new).replace(b"\r\n", b"")


# --- the codec alone ------------------------------------------------------------------------


def test_decode_keeps_the_span_and_width() -> None:
    data = bytes(range(200))
    body = b"\r\n" + b64_lines(data, 64) + b"\r\n"
    decoded, (a, b), width = b64.decode(body)
    assert decoded == data and width == 64
    assert body[a:b] == b64_lines(data, 64).rstrip(b"\r\n")
    assert b64.decode(base64.b64encode(b"hi") + b"\r\n")[2] == B64_DEFAULT  # one line


@pytest.mark.parametrize("body, why", [
    (b"not*base64\r\n", "alphabet"),
    (b"aGk\r\n", "invalid"),
    (b"aGk=\r\naGk=\r\n", "invalid"),
    (b64_lines(bytes(1500), 1000), "line length"),
])
def test_decode_refuses_what_readers_could_read_differently(body: bytes, why: str) -> None:
    with pytest.raises(Skip, match=why):
        b64.decode(body)

