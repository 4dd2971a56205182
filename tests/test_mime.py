"""relay.mime: `analyse()`, the walk and the second reader together."""

from __future__ import annotations

import email

import pytest
from mimesamples import QP, SAMPLES

from relay import mime
from relay.mime import text_parts
from relay.textpart import TooLarge


def test_module_exports() -> None:
    assert set(mime.__all__) == {"Analysis", "analyse", "text_parts"}


def test_ordinary_messages_are_not_ambiguous() -> None:
    """Every sample the email package reads without a defect is read the same by both."""
    for name, raw in SAMPLES.items():
        msg = email.message_from_bytes(raw)
        if any(p.defects for p in msg.walk()):
            assert mime.analyse(raw).ambiguity is not None  # e.g. no closing delimiter
            continue
        found = mime.analyse(raw)
        assert found.ambiguity is None, (name, found.ambiguity)
        assert [p.path for p in found.parts] == [p.path for p in text_parts(raw)[0]]


@pytest.mark.parametrize("strict", [True, False])
def test_a_text_part_over_max_text_raises_too_large(strict: bool) -> None:
    (part,), _ = text_parts(QP)
    size = len(part.text.encode("utf-8"))
    assert mime.analyse(QP, strict=strict, max_text=size).parts == [part]
    with pytest.raises(TooLarge, match=f"part 1 \\(text/plain\\) has {size} bytes"):
        mime.analyse(QP, strict=strict, max_text=size - 1)
