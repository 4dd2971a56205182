"""HTML tokens in linear time: the same tokens and attribute test as the regular expressions
they replace (which backtracked on hostile markup)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.htmltokens import Tokens, excluded_attr

# the expressions analyse_html used until they were found to backtrack (issue 15): the
# references the linear scanner must agree with
REFERENCE_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<!\[CDATA\[.*?(?:\]\]>|\Z)"
    r"|<[!?][^>]*>?"
    r"|</?[A-Za-z][^\s/>]*(?:[^>\"']|\"[^\"]*\"|'[^']*')*>",
    re.S,
)
REFERENCE_ATTR = re.compile(r"""(?:class|id)\s*=\s*["']?[^"'>]*(?:quote|signature)""", re.I)


def scanner_tokens(text: str) -> list[tuple[int, int]]:
    tokens = Tokens(text)
    out: list[tuple[int, int]] = []
    pos = 0
    while (t := tokens.next(pos)) is not None:
        out.append(t)
        pos = t[1]
    return out


HTML_ALPHABET = "<<<>>\"\"''a/b !?-=\n [CDATA]é"


@given(st.text(alphabet=HTML_ALPHABET, max_size=60))
@settings(max_examples=3000, deadline=None)
def test_html_tokens_agree_with_the_reference_expression(text: str) -> None:
    assert scanner_tokens(text) == [m.span() for m in REFERENCE_TOKEN.finditer(text)]


@pytest.mark.parametrize("text", [
    '<a"b c" d>', "<a'x y' z>", '<a"<b">', "<a b='>'>", '<a "x" <b "y">', "<a <b>",
    '<p title="a>b">x</p>', "<!-->x-->", "<![CDATA[a]]>b", "<?xml a>", "</ a>", "</a b>",
    "<a\n>", '<a"\'">', "<a'\"'\"'>", "<!x", "<a" * 5 + ">",
])
def test_html_tokens_agree_on_corner_cases(text: str) -> None:
    assert scanner_tokens(text) == [m.span() for m in REFERENCE_TOKEN.finditer(text)]


@given(st.text(alphabet="classid= \t\"'>quotesignatureQUOTEſı", max_size=60))
@settings(max_examples=3000, deadline=None)
def test_excluded_attr_agrees_with_the_reference_expression(tag: str) -> None:
    assert excluded_attr("<div " + tag) == bool(REFERENCE_ATTR.search("<div " + tag))
