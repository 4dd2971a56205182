"""The text parts of a raw message that can be rewritten: `analyse()`.

relay.mimewalk walks the MIME tree of the raw bytes (exact byte spans, each text/plain and
text/html body decoded into a relay.textpart.TextPart, with relay.qp and relay.b64);
in `analyse(strict=True)` relay.ambiguity reads the whole message a second time with the email
package: where it or any other reader could see another structure, the message is ambiguous (a
typed Ambiguity) and nothing in it is rewritten. relay.splice puts edits of the decoded texts
back. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ambiguity
from .ambiguity import Ambiguity, ParserDefect
from .mimewalk import Walker
from .textpart import TextPart, TooLarge

__all__ = ["Analysis", "analyse", "text_parts"]


@dataclass(frozen=True)
class Analysis:
    parts: list[TextPart]  # the text parts that can be rewritten ([] when ambiguous)
    skipped: list[str]  # one human-readable reason per text part left as it is
    ambiguity: Ambiguity | None = None  # why the whole message is left as it is


def analyse(raw: bytes, strict: bool = True, max_text: int | None = None) -> Analysis:
    """Every text/plain and text/html leaf part of the message (any nesting of multiparts) that
    can be rewritten safely, and one human-readable reason per text part that was skipped.
    `strict`: a message whose MIME structure readers could disagree about (see Ambiguity) has
    no parts to rewrite, and says why. Raises TooLarge, before decoding it, on a text part
    whose decoded body has more than `max_text` bytes."""
    try:
        if isinstance(raw, bytearray | memoryview):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            return Analysis([], [f"message is {type(raw).__name__}, not bytes"])
        walker = Walker(raw, max_text)
        walker.walk(0, len(raw), "", "", "text/plain", None, (), 0)
        if strict:
            try:
                why = ambiguity.find(raw, walker)
            except Exception as e:  # a reader that fails is a reader that disagrees
                why = ParserDefect(f"email package raised {type(e).__name__}")
            if why is not None:
                return Analysis([], [*walker.reasons, f"message: {why}"], why)
        return Analysis(walker.parts, walker.reasons)
    except TooLarge:
        raise
    except Exception as e:  # pragma: no cover - belt and braces
        return Analysis([], [f"message could not be parsed ({type(e).__name__})"])


def text_parts(raw: bytes, max_text: int | None = None) -> tuple[list[TextPart], list[str]]:
    """analyse(raw, strict=False): the parts relay.mimewalk alone finds, and the reasons."""
    found = analyse(raw, strict=False, max_text=max_text)
    return found.parts, found.skipped
