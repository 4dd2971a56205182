"""relay.qp: strict quoted-printable decoding with offsets, encoding and soft line breaks, alone
and as the splicer uses them."""

from __future__ import annotations

import binascii
from email import quoprimime

import pytest
from mimesamples import QP, apply, body, crlf, doubling_edits, email_text

from relay import qp
from relay.mime import text_parts
from relay.splice import render
from relay.textpart import Skip, UnsafeEdit


def test_quoted_printable_trailing_whitespace_is_skipped() -> None:
    raw = crlf(b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
               b"padded line  \nnext\n")
    parts, reasons = text_parts(raw)
    assert parts == [] and "trailing whitespace" in reasons[0]


def test_lowercase_qp_hex_is_read() -> None:
    raw = (b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: Quoted-Printable\r\n\r\ncaf=c3=a9 au lait\r\n")
    parts, _ = text_parts(raw)
    assert parts[0].text == "caf\u00e9 au lait\r\n"
    out = render(raw, parts, {"": doubling_edits(parts[0], 1)})
    assert out.endswith(b"caf=c3=a9  au  lait\r\n")


def test_quoted_printable_lines_stay_short_and_untouched_lines_stay() -> None:
    text = " ".join(f"word{i}" for i in range(200)) + "\r\nlast line, not edited.\r\n"
    enc = quoprimime.body_encode(text, maxlinelen=76, eol="\r\n").encode()
    raw = (b"Content-Type: text/plain; charset=us-ascii\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + enc)
    parts, _ = text_parts(raw)
    (p,) = parts
    assert p.text == text
    first_line = p.text.index("\r\n")
    edits = [e for e in doubling_edits(p, 1) if e[0] < first_line]
    out = render(raw, parts, {"": edits})
    new_body = body(out, text_parts(out)[0][0])
    lines = new_body.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert lines[-2:] == enc.split(b"\r\n")[-2:]  # the unedited line (and the final "")
    assert text_parts(out)[0][0].text == apply(text, edits)
    # editing only one gap changes only the encoded line(s) around it
    out1 = render(raw, parts, {"": edits[100:101]})
    old_lines, new_lines = enc.split(b"\r\n"), out1[p.start:].split(b"\r\n")
    changed = [line for line in new_lines if line not in old_lines]
    assert 1 <= len(changed) <= 2
    assert len(new_lines) - len(old_lines) in (0, 1)


def test_quoted_printable_space_before_soft_break() -> None:
    parts, _ = text_parts(QP)
    (p,) = parts
    # the gap after "floor." is written "=20" just before a soft break
    g = p.text.index("floor. Thanks") + len("floor.")
    out = render(QP, parts, {"": [(g, g + 1, "  ")]})
    assert b"third floor.  =\r\nThanks" in out
    assert text_parts(out)[0][0].text == p.text[:g] + "  " + p.text[g + 1:]
    # the gap at the start of an encoded line (after a soft break)
    g = p.text.index("a deep") + 1
    out = render(QP, parts, {"": [(g, g + 1, "   ")]})
    assert text_parts(out)[0][0].text == p.text[:g] + "   " + p.text[g + 1:]
    assert all(len(line) <= 76 for line in out.split(b"\r\n"))


def test_quoted_printable_run_across_a_soft_break() -> None:
    raw = crlf(b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
               b"two spaces =\n across a soft break\n")
    parts, _ = text_parts(raw)
    (p,) = parts
    g = p.text.index("  across")
    for new in (" ", "   ", "&nbsp; "):
        out = render(raw, parts, {"": [(g, g + 2, new)]})
        assert text_parts(out)[0][0].text == p.text[:g] + new + p.text[g + 2:]
        assert email_text(out, "") == p.text[:g] + new + p.text[g + 2:]


# --- the codec alone ------------------------------------------------------------------------


def test_decode_keeps_where_each_byte_was_encoded() -> None:
    decoded, where, lines = qp.decode(b"caf=C3=A9 a=\r\nb\r\n")
    assert decoded == b"caf\xc3\xa9 ab\r\n"
    assert list(where) == [0, 1, 2, 3, 6, 9, 10, 14, 15, 16]  # the soft break decodes to nothing
    assert list(lines) == [0, 14]


@pytest.mark.parametrize("body, why", [
    (b"a broken =ZZ escape\r\n", "escape"),
    (b"padded line \r\n", "trailing whitespace"),
    (b"eight bit \xe9\r\n", "outside printable ASCII"),
    (b"bare\rCR\r\n", "bare CR"),
    (b"=4\r\n", "escape"),
])
def test_decode_refuses_what_readers_could_read_differently(body: bytes, why: str) -> None:
    with pytest.raises(Skip, match=why):
        qp.decode(body)


@pytest.mark.parametrize("data, at_line_end, want", [
    (b"  ", False, b"  "),
    (b"  ", True, b" =20"),
    (b"\t", True, b"=09"),
    (b"&nbsp; ", False, b"&nbsp; "),
    (b"a=b", False, b"a=3Db"),
    (b"\xc3\xa9", False, b"=C3=A9"),
])
def test_encode(data: bytes, at_line_end: bool, want: bytes) -> None:
    assert qp.encode(data, at_line_end) == want


@pytest.mark.parametrize("content", [
    b"x" * 76,
    b"a" * 100,
    b"a" * 73 + b"=C3=A9" + b"b" * 10,
    b"word " * 30 + b"end",
    b"ab From here .dot " * 12 + b"z",
    b"=C3=A9" * 40,
])
def test_wrap_keeps_lines_short_and_escapes_whole(content: bytes) -> None:
    out = qp.wrap(content, b"\r\n")
    lines = out.split(b"\r\n")
    assert all(len(line) <= qp.QP_LINE_MAX for line in lines)
    assert all(line.endswith(b"=") for line in lines[:-1])
    assert not any(line.startswith((b".", b"From ")) for line in lines[1:])
    assert binascii.a2b_qp(out) == binascii.a2b_qp(content)
    assert (out == content) == (len(content) <= qp.QP_LINE_MAX)



def test_encoded_run_and_line_of() -> None:
    body = b"ab=3Dc=\r\nde f\r\nlast"
    dec, where, lines = qp.decode(body)
    assert dec == b"ab=cde f\r\nlast"
    # "=c" (decoded 2..4) is "=3Dc" on the first line
    assert qp.encoded_run(body, where, 2, 4) == (2, 6, [], False)
    # "cd" crosses the soft line break: "c" ends line 1, "d" starts line 2
    assert qp.encoded_run(body, where, 3, 5) == (5, 6, [(9, 10)], False)
    # " f" ends its line
    assert qp.encoded_run(body, where, 6, 8) == (11, 13, [], True)
    assert qp.line_of(body, lines, 2) == (0, 0, 9, 7)
    assert qp.line_of(body, lines, 11) == (1, 9, 15, 13)
    assert qp.line_of(body, lines, 16) == (2, 15, 19, 19)


def test_edited_lines_groups_edits_per_encoded_line() -> None:
    body = b"one two=\r\nthree\r\nfour five\r\n"
    lines = [0, 10, 17]
    ops = [(3, 4, b"  ", 0), (8, 8, b"", -1), (21, 22, b"=20 ", 1)]
    got = list(qp.edited_lines(body, lines, ops))
    assert got == [(0, 10, 8, b"one  two=", [(0, 3), (-1, 9)]),
                   (17, 28, 26, b"four=20 five", [(1, 4)])]
    for bad, why in [([(21, 22, b" ", 0), (3, 4, b" ", 1)], "overlap"),  # out of order
                     ([(3, 5, b" ", 0), (4, 5, b" ", 1)], "overlap"),
                     ([(3, 9, b" ", 0)], "line end"),
                     ([(4, 8, b" ", 0)], "end in whitespace")]:
        with pytest.raises(UnsafeEdit, match=why):
            list(qp.edited_lines(body, lines, bad))
