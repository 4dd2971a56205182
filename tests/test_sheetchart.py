"""How the recipients compare (relay.sheetchart): the histogram of every scored recipient's
agreeing gaps, the named recipient and the runner-up marked."""

from __future__ import annotations

import re

from sheetreports import sample_report

from relay.decoding import Detail
from relay.sheetchart import section_chart


def test_counts_when_every_recipient_saw_the_same_gaps() -> None:
    spread = [(20, 20), (20, 12)] + [(20, 10)] * 7 + [(20, 11)] * 3
    out = section_chart(sample_report(detail=Detail(spread, 1e-6, "ceo@x", "k1")))
    assert "alice@example.com: 20 of 20" in out and "bob@example.com (runner-up): 12 of 20" in out
    assert "gaps agreeing with the excerpt (of 20 read)" in out
    assert "11 other recipients" in out and "(median 10)" in out
    heights = sorted(float(h) for h in re.findall(r"height='([\d.]+)' fill='#8c959f'", out))
    assert len(heights) == 3 and heights[-1] > heights[0]  # bars at 10, 11 and 12 gaps


def test_shares_when_pooled_messages_differ_in_gaps_seen() -> None:
    spread = [(10, 10), (20, 10), (20, 5)]
    out = section_chart(sample_report(detail=Detail(spread, 1e-6, "ceo@x", "k1")))
    assert "share of the gaps read that agree" in out and "100%" in out
    assert "(median 50%)" in out  # the crowd: 50% and 25%
