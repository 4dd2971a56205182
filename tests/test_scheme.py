"""The signing scheme as one checked value, and the bias of each class of gap."""

from __future__ import annotations

import pytest

from relay.carriers import SENTENCE, WORD
from relay.scheme import BLOCK, EVEN, SCHEME, UNITS, V2, V3, Scheme, bias


def test_bias() -> None:
    assert bias(SENTENCE, 0.16) == 0.5
    assert bias(WORD, 0.16) == 0.16
    assert bias(WORD, 0.0) == 0.0
    assert bias(0, 0.3) == 0.0


def test_scheme_is_one_checked_value() -> None:
    s = SCHEME.with_rate(0.3)
    assert (s.version, s.word_rate, s.block, s.cut) == (V3, 0.3, BLOCK, UNITS)
    assert Scheme(2, 0.16, 0, 0, 0).cut is EVEN and Scheme(2, 0.16, 0, 0, 0) == Scheme(
        V2, 0.16, 0, EVEN, 0)
    with pytest.raises(ValueError):
        Scheme(4, 1 / 6)
    with pytest.raises(ValueError):
        Scheme(V3, 1 / 6, 48, 7)
