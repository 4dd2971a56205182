"""relay.textpart: the TextPart value and the errors of reading and rewriting one."""

from __future__ import annotations

from relay.textpart import Skip, TextPart, TooLarge, UnsafeEdit, label


def test_parts_compare_by_what_they_say_not_where_they_are() -> None:
    a = TextPart("1", "plain", "ascii", "7bit", False, False, "hi", start=5, end=7, body=b"hi")
    b = TextPart("1", "plain", "ascii", "7bit", False, False, "hi", start=50, end=52, body=b"hi")
    assert a == b and hash(a) == hash(b)
    assert "start" not in repr(a) and "'hi'" in repr(a)
    assert a != TextPart("1", "html", "ascii", "7bit", False, False, "hi")


def test_label() -> None:
    assert [label(p) for p in ("", "1", "2.1")] == ["1", "1", "2.1"]


def test_errors() -> None:
    assert issubclass(UnsafeEdit, ValueError)  # callers catch a bad edit as a bad value
    assert not issubclass(TooLarge, Skip)  # a part too large leaves the whole message alone
