"""The evidence sheet's written sections (relay.sheetsections) on a decode result built by hand;
the whole sheet, from the real CLI in Chromium, is tests/test_evidence.py."""

from __future__ import annotations

import pytest
from sheetreports import sample_report

from relay.sheetinputs import Custody, text_source
from relay.sheetsections import (
    section_candidates,
    section_custody,
    section_provenance,
    section_verdict,
    section_why,
)

SRC = text_source("leak.txt", b"one  two. three four", "one  two. three four")


def test_provenance_in_words() -> None:
    prov = [{"message": {"subject": "Fwd: S", "date": "D2", "message_id": "<f@x>"},
             "sender": "alice@example.com", "contains": {"subject": "S", "date": "D",
                                                         "message_id": "<m@x>"},
             "from_copy_of": "alice@example.com", "explains_top_candidate": True}]
    report = sample_report(provenance=prov)
    page = section_provenance(report)
    assert "Text that reached all staff twice" in page
    assert "&ldquo;Fwd: S&rdquo; (D2, sent by alice@example.com) carries the text of " \
           "&ldquo;S&rdquo;, made from the copy of <b>alice@example.com</b>" in page
    assert "<b>alice@example.com sent this text on to all staff</b>" in page
    why = section_why(report, [SRC])
    assert "forwarded this text to all staff" in why  # the why section says it first
    assert "Too few gaps" not in why
    plain = sample_report()
    assert section_provenance(plain) == ""
    assert "The closest copy agrees at 3 of 3" in section_why(plain, [SRC])  # yet no verdict


@pytest.mark.parametrize("verdict,word,named", [
    ("identified", "IDENTIFIED", "<b>alice@example.com</b>"),
    ("inconclusive", "INCONCLUSIVE", "Nobody is named"),
    ("no_match", "NO MATCH", "Nobody is named"),
])
def test_verdict_words(verdict: str, word: str, named: str) -> None:
    out = section_verdict(sample_report(verdict=verdict))
    assert f"class='verdict v-{verdict}'" in out and word in out and named in out
    assert "False-match probability: 0.2</b> (about 1 in 5)" in out


@pytest.mark.parametrize("verdict,heading", [
    ("identified", False), ("inconclusive", True), ("no_match", True)])
def test_why_only_when_no_one_is_named(verdict: str, heading: bool) -> None:
    assert ("Why no one is named" in section_why(sample_report(verdict=verdict), [SRC])) \
        is heading


def test_candidates_and_custody_tables() -> None:
    report = sample_report()
    cands = section_candidates(report)
    assert cands.count("<tr class=") == 2 and "<tr class='top'>" in cands
    assert "3 of 3" in cands and "bob@example.com" in cands
    custody = section_custody(report, [SRC], Custody("0.1.0", "/db", "T"))
    assert SRC.sha256 in custody and "k1" in custody and "(text, 20 bytes)" in custody
