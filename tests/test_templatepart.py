"""relay.templatepart: one part's base (every carrier single, in the part's transfer encoding)
and where each carrier's doubling bytes go; quoted-printable lines broken with room for them."""

from __future__ import annotations

import binascii

import numpy as np
import pytest
from mimesamples import SKIPS

from relay import templatepart
from relay.mime import text_parts
from relay.templatepart import NoTemplate, part_base


def test_identity_base_is_the_all_single_part_with_an_offset_per_carrier() -> None:
    raw = b"Content-Type: text/plain\r\n\r\none two  three four\r\n"
    (part,), _ = text_parts(raw)
    pb = part_base(part, [(3, 4, " ", " "), (7, 9, " ", " "), (14, 15, " ", " ")], [])
    assert pb.body == b"one two three four\r\n"
    assert pb.at == [3, 7, 13] and pb.insert == [b" "] * 3


def test_part_base_refuses_what_it_cannot_make() -> None:
    parts = {p.path: p for p in text_parts(SKIPS)[0]}
    with pytest.raises(NoTemplate, match="utf-16 is stateful"):  # UTF-16 in base64
        part_base(parts["4"], [(7, 8, " ", " ")], [])
    with pytest.raises(NoTemplate, match="printable"):
        part_base(parts["9"], [(3, 4, " ", "\u00a0")], [])


@pytest.mark.parametrize("content, rel, grow", [
    (b"a" * 100, [10, 50, 99], [6, 6, 6]),
    (b"x=C3=A9" * 20, [7 * k for k in range(20)], [1] * 20),
    (b"word " * 30 + b"end=", [5 * k + 4 for k in range(30)], [6] * 30),
    (b"ab From here " * 10, [3, 8, 20, 60], [1, 1, 6, 6]),
    (b"one .two " * 15, [3, 12, 30], [6, 6, 6]),
    (b"a b c" * 30 + b"&", [150], [6]),  # an insertion at the end (before the line end)
])
def test_qp_break_leaves_room_for_every_insertion(content: bytes, rel: list[int],
                                                  grow: list[int]) -> None:
    line, moved = templatepart._qp_break(content, rel, grow, b"\r\n")
    pieces = line.split(b"\r\n")
    assert b"".join(x[:-1] for x in pieces[:-1]) + pieces[-1] == content
    # every piece, with every insertion made, still fits 76 with its "="
    starts = np.cumsum([0] + [len(x) + 2 for x in pieces[:-1]])
    for k, x in enumerate(pieces):
        s, e = starts[k], starts[k] + len(x) + (1 if k == len(pieces) - 1 else 0)
        extra = sum(g for m, g in zip(moved, grow, strict=True) if s <= m < e)
        assert len(x) + extra <= 76
        if k:
            assert not x.startswith((b".", b"From "))
    assert binascii.a2b_qp(line) == binascii.a2b_qp(content)  # never inside an =XX escape
    for m, r in zip(moved, rel, strict=True):  # an insertion lands before the same byte
        shift = sum(1 for x in starts[1:] if x <= m) * 3
        assert m - shift == r
        assert line[m:m + 1] == content[r:r + 1] or r == len(content)


def test_qp_break_refuses_what_it_cannot_break() -> None:
    with pytest.raises(NoTemplate):
        templatepart._qp_break(b"=C3" * 40, [0], [200], b"\r\n")
