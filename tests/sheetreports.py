"""A small decode result, built by hand, for the pure tests of the evidence sheet's parts
(tests/test_sheetsections.py, test_sheetexcerpts.py, test_sheetchart.py)."""

from __future__ import annotations

from relay.carriers import SENTENCE, WORD
from relay.decoding import Candidate, Detail, GapRead, Report


def sample_report(**kw: object) -> Report:
    cands = [Candidate("alice@example.com", 3, 3, 1e-3, 0.2),
             Candidate("bob@example.com", 3, 1, 0.5, 1.0)]
    gaps = [GapRead(0, 0, WORD, 1, 1, True, ("one", "two")),
            GapRead(0, 1, SENTENCE, 0, 0, True, ("two", "three")),
            GapRead(0, 2, WORD, 0, 0, True, ("three", "four"))]
    base: dict = dict(verdict="inconclusive", message={"message_id": "<m@x>", "subject": "S",
                                                        "date": "D"},
                      candidates=cands, excerpts=[{"words": 4, "messages_matched": 2,
                                                   "words_aligned": 4, "bits_observed": 3}],
                      recipients=2, threshold=1e-6, gaps=gaps,
                      detail=Detail([(3, 3), (3, 1)], 1e-6 / 2, "ceo@x", "k1"))
    base.update(kw)
    return Report(**base)
