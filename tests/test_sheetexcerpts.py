"""Each excerpt on the evidence sheet with the gaps read marked (relay.sheetexcerpts), on inputs
built by hand: the text as given, what the OCR read, the marks over the screenshot."""

from __future__ import annotations

import html
import re

from pngs import encode_png
from sheetreports import sample_report

from relay.carriers import SENTENCE, WORD
from relay.decoding import GapRead
from relay.ocrgaps import OcrWord
from relay.sheetexcerpts import section_excerpt
from relay.sheetinputs import image_source, text_source

TEXT = "one  two. three four"
GAPS = {0: GapRead(0, 0, WORD, 1, 1, True, ("one", "two")),  # agrees
        1: GapRead(0, 1, SENTENCE, 0, 1, True, ("two", "three")),  # disagrees
        2: GapRead(0, 2, WORD, 0, None, True, ("three", "four"))}  # not scored


def shown(page: str) -> str:
    m = re.search(r"<div class='excerpt[^']*'>(.*?)</div>", page, re.S)
    assert m is not None
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1)))


def test_text_excerpt_marks_each_gap_read_and_keeps_every_space() -> None:
    src = text_source("leak.txt", TEXT.encode(), TEXT)
    page = section_excerpt(0, src, GAPS, sample_report(), True)
    assert re.findall(r"class='gap (\w+)' data-gap='0:(\d)'", page) == [
        ("ok", "0"), ("bad", "1"), ("nc", "2")]
    assert "disagrees: alice@example.com&#x27;s copy has a doubled space" in page
    assert shown(page) == TEXT
    assert "3 gaps read; of the 3 counted, 1 agree with <b>alice@example.com</b>" in page


def test_excerpt_without_gaps_says_so() -> None:
    src = text_source("leak.txt", TEXT.encode(), TEXT)
    page = section_excerpt(0, src, {}, sample_report(message=None), False)
    assert "No gap of this excerpt was read against the message (no logged message" in page
    assert "class='gap" not in page and shown(page) == TEXT


def word(text: str, left: int, line: int) -> OcrWord:
    return OcrWord(text, left, 10 + 40 * line, 20 * len(text), 20, (1, 1, 1, line), 95.0)


def test_screenshot_excerpt_draws_the_marks_and_writes_what_the_ocr_read() -> None:
    words = [word("one", 10, 1), word("two.", 100, 1), word("three", 10, 2), word("four", 130, 2)]
    src = image_source("shot.png", encode_png(300, 120, 0, bytes(300 * 120)), words)
    page = section_excerpt(0, src, GAPS, sample_report(), True)
    assert re.findall(r"<g class='gap (\w+)' data-gap='0:(\d)'", page) == [
        ("ok", "0"), ("bad", "1"), ("nc", "2")]
    assert "href='data:image/png;base64," in page and "<svg viewBox='0 0 300 120'" in page
    assert shown(page) == "one  two.\nthree four"  # a doubled gap read shows as two spaces
    broken = image_source("shot.png", b"\x89PNG\r\n\x1a\n broken", words)
    page = section_excerpt(0, broken, GAPS, sample_report(), True)
    assert "could not be decoded for display" in page and "<svg" not in page
