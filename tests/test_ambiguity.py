"""relay.ambiguity: messages readers could read differently are left whole, with a typed
reason."""

from __future__ import annotations

import re

import pytest

from relay import mime
from relay.ambiguity import (
    Ambiguity,
    BoundaryLikeLine,
    MalformedHeaderLine,
    OtherStructure,
    ParserDefect,
)

_TEXT = b"Hello there, this is a perfectly ordinary sentence of the message body.\r\n"


def _multipart(inner: bytes, outer_head: bytes = b"") -> bytes:
    return (b"From: a@example.com\r\nTo: all-staff@example.com\r\nMIME-Version: 1.0\r\n"
            + outer_head + b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
            + b"--XYZ\r\n" + inner + b"\r\n--XYZ--\r\n")


AMBIGUOUS = {
    # the email package records a defect: the closing delimiter is missing
    "parser-defect": (ParserDefect, _multipart(b"Content-Type: text/plain\r\n\r\n" + _TEXT)
                      [:-len(b"\r\n--XYZ--\r\n")] + b"\r\n"),
    # "Name :" is a header field to relay.mime, the end of the header block to the email package
    "header-name-space": (ParserDefect, b"From: a@example.com\r\nSubject : hi\r\n"
                          b"Content-Type: text/plain\r\n\r\n" + _TEXT),
    # a part's header block holds a line that is no header field (CPython's msg_38 shape)
    "malformed-header-line": (MalformedHeaderLine, _multipart(
        b"Content-Type: text/plain\r\n\r\n" + _TEXT + b"\r\n--XYZ\r\n"
        b"Content-Type: text/plain\r\nthis line is no header\r\n\r\n" + _TEXT)),
    # a line inside the text that starts like the enclosing delimiter (a prefix-matching reader
    # ends the part there)
    "boundary-like-line": (BoundaryLikeLine, _multipart(
        b"Content-Type: text/plain\r\n\r\n" + _TEXT + b"--XYZ is what the boundary is called\r\n"
        + _TEXT)),
    # the delimiter inside a quoted-printable line: a soft break in a copy could start a line
    "boundary-inside-qp": (BoundaryLikeLine, _multipart(
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + _TEXT.rstrip() + b" and --XYZ inside a line\r\n")),
    # repeated parameters: the email package takes the first, other readers the last
    "repeated-charset": (OtherStructure, b"From: a@example.com\r\nContent-Type: text/plain;"
                         b" charset=us-ascii; charset=iso-8859-1\r\n\r\n" + _TEXT),
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS))
def test_ambiguous_structure_leaves_the_message_whole(name: str) -> None:
    cls, raw = AMBIGUOUS[name]
    loose = mime.analyse(raw, strict=False)
    assert loose.parts, "relay.mime alone would rewrite this message"
    found = mime.analyse(raw)
    assert found.parts == [] and type(found.ambiguity) is cls
    assert isinstance(found.ambiguity, Ambiguity)
    assert found.skipped[-1] == f"message: {found.ambiguity}"
    assert str(found.ambiguity).startswith(cls.__name__ + " (")
    assert mime.text_parts(raw) == (loose.parts, loose.skipped)  # the old reader, unchanged


def test_cpython_corpus_msg_38_is_left_whole() -> None:
    """CPython's msg_38: outer delimiters inside a text part; the email package sees another
    tree (and defects) where relay.mime alone found two text parts."""
    from test_corpus import CORPUS

    path = CORPUS / "msg_38.txt"
    if not path.exists():
        pytest.skip("CPython's email test corpus is not installed")
    raw = re.sub(rb"\r?\n", b"\r\n", path.read_bytes())
    assert len(mime.analyse(raw, strict=False).parts) == 2
    found = mime.analyse(raw)
    assert found.parts == [] and isinstance(found.ambiguity, Ambiguity)
