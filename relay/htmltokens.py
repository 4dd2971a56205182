"""HTML tokens found in time linear in the text: the tags, comments and declarations that
relay.carriers walks to find the rendered text, and the quote/signature attribute test.

Regular expressions did this before and backtracked on hostile markup (an unclosed `<a `, a
quote that never closes, a tag with many `class=`): quadratic time, held under the GIL.
tests/test_htmltokens.py checks both against the expressions they replace.
"""

from __future__ import annotations

import re
from bisect import bisect_left


class Tokens:
    """The HTML tokens of a text, found left to right in time linear in its length.

    A token is what this regular expression finds, searched from where the last token ended:

        <!--.*?(?:-->|\\Z) | <!\\[CDATA\\[.*?(?:\\]\\]>|\\Z) | <[!?][^>]*>?
        | </?[A-Za-z][^\\s/>]*(?:[^>"']|"[^"]*"|'[^']*')*>        (re.S)

    but the expression backtracks: every '<' of an unclosed tag ("<a " without '>', or a quote
    that never closes) scans to the end of the text again, so hostile mail took quadratic time
    (12 KB: 1.6 s, 188 KB: 325 s). Here each scan of a tag's attributes remembers where it failed:
    a tag fails when, from the end of its name (or from a quote inside the name, which the
    expression may give back), no '>' is reachable outside quotes; the first such scan marks
    every quote and '>' it visited as failing, and later scans stop as soon as they reach one.
    tests/test_carriers.py checks the tokens against the expression on random texts."""

    _SPECIAL = re.compile(r"[>\"']")
    _NAME_END = re.compile(r"[\s/>]")

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self._fail: bytearray | None = None  # 1 at a quote or '>' from which no tag can end
        self._name = (-1, -1)  # (from, end): the first name end at or after any i in range
        self._special = (-1, -1)  # the same for the next special character after a name
        self._failed_name_end = -1  # a tag whose name ended here could not end

    def next(self, pos: int) -> tuple[int, int] | None:
        """(start, end) of the first token at or after pos, or None."""
        text, n = self.text, self.n
        i = text.find("<", pos)
        while i >= 0:
            nxt = text[i + 1:i + 2]
            if text.startswith("<!--", i):
                j = text.find("-->", i + 4)
                return i, n if j < 0 else j + 3
            if text.startswith("<![CDATA[", i):
                j = text.find("]]>", i + 9)
                return i, n if j < 0 else j + 3
            if nxt in ("!", "?"):
                j = text.find(">", i + 2)
                return i, n if j < 0 else j + 1
            first = i + 2 if nxt == "/" else i + 1
            if first < n and text[first] in _ASCII_LETTERS:
                end = self._tag_end(first + 1)
                if end >= 0:
                    return i, end + 1
            i = text.find("<", i + 1)
        return None

    def _tag_end(self, name_from: int) -> int:
        """Position of the '>' ending a tag whose name (after its first letter) starts at
        name_from, or -1."""
        lo, name_end = self._name
        if not lo <= name_from <= name_end:
            m = self._NAME_END.search(self.text, name_from)
            name_end = m.start() if m else self.n
            self._name = (name_from, name_end)
        if name_end == self._failed_name_end:
            # an earlier tag with the same name end failed from every start this one has
            return -1
        lo, c = self._special
        if not lo <= name_end <= c:
            m = self._SPECIAL.search(self.text, name_end)
            c = m.start() if m else self.n
            self._special = (name_end, c)
        end = self._scan(c)
        if end < 0:
            # the expression gives back name characters: a quote inside the name may open a
            # quoted value that reaches a '>'; the last such quote that works wins
            quotes = [m.start() for m in _QUOTE.finditer(self.text, name_from, name_end)]
            while end < 0 and quotes:
                end = self._scan(quotes.pop())
            if end < 0:
                self._failed_name_end = name_end
        return end

    def _scan(self, c: int) -> int:
        """From special character (or the end) c, outside quotes: the '>' reached, or -1."""
        text, n = self.text, self.n
        fail = self._fail
        visited: list[int] = []
        end = -1
        while c < n:
            if fail is not None and fail[c]:
                break
            ch = text[c]
            if ch == ">":
                end = c
                break
            visited.append(c)
            close = text.find(ch, c + 1)
            if close < 0:
                break
            m = self._SPECIAL.search(text, close + 1)
            c = m.start() if m else n
        if end < 0 and visited:
            if fail is None:
                fail = self._fail = bytearray(n)
            for v in visited:
                fail[v] = 1
        return end


_QUOTE = re.compile(r"[\"']")
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


_ATTR_NAME = re.compile(r"(?:class|id)\s*=\s*", re.I)
_ATTR_WORD = re.compile(r"quote|signature", re.I)
_ATTR_STOP = re.compile(r"[\"'>]")


def excluded_attr(tag: str) -> bool:
    """Whether a tag has a class or id naming a quote or signature: what
    `(?:class|id)\\s*=\\s*["']?[^"'>]*(?:quote|signature)` (re.I) finds in it, in linear
    time (the expression rescans the rest of the value from every `class=`)."""
    words = [m.start() for m in _ATTR_WORD.finditer(tag)]  # these never overlap
    if not words:
        return False
    stops = [m.start() for m in _ATTR_STOP.finditer(tag)]
    for m in _ATTR_NAME.finditer(tag):
        start = m.end()
        if tag[start:start + 1] in ('"', "'"):
            start += 1
        k = bisect_left(stops, start)
        stop = stops[k] if k < len(stops) else len(tag)
        w = bisect_left(words, start)
        if w < len(words) and words[w] < stop:  # a word has no quote or '>': fully inside
            return True
    return False
