"""Why a whole message is left as it is: a MIME structure that readers could disagree about.

relay.mimewalk's walk is one reader; Python's email package (compat32, as most Python mail
tools use it) is another, and a line that starts like a delimiter is read as one by lenient
parsers. `find()` compares them and returns a typed reason (like email.errors.MessageDefect),
or None. Pure: no I/O.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re

from .mimewalk import Walker
from .textpart import IDENTITY_CTES, label


class Ambiguity:
    """A MIME structure that readers could disagree about: the message is delivered as it is,
    since a copy must differ only in text whitespace as every reader sees it."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail

    def __str__(self) -> str:
        what = (self.__doc__ or "").strip().split("\n")[0].rstrip(".")
        return f"{type(self).__name__} ({what}{': ' + self.detail if self.detail else ''})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.detail == self.detail  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.detail))


class ParserDefect(Ambiguity):
    """Python's email package records defects."""


class OtherStructure(Ambiguity):
    """Readers see another MIME tree, text body or parameter.

    The email package reads another tree or body than relay.mimewalk, or a parameter is repeated
    (the email package takes the first, other readers the last)."""


class BoundaryLikeLine(Ambiguity):
    """A line inside a part starts like a boundary delimiter of the message."""


class MalformedHeaderLine(Ambiguity):
    """A header block holds a line that is not a header field."""


def _email_leaves(msg: email.message.Message, path: str,
                  out: dict[str, email.message.Message]) -> None:
    if msg.is_multipart():
        for i, sub in enumerate(msg.get_payload()):
            if isinstance(sub, email.message.Message):
                _email_leaves(sub, f"{path}.{i + 1}" if path else str(i + 1), out)
    else:
        out[path] = msg


def find(raw: bytes, walker: Walker) -> Ambiguity | None:
    """Why readers could disagree about this message's structure, or None. relay.mimewalk's walk
    is one reader; Python's email package (compat32, as most Python mail tools use it) is
    another, and a line that starts like a delimiter is read as one by lenient parsers."""
    if walker.malformed:
        return MalformedHeaderLine(walker.malformed)
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    defects = sorted({type(d).__name__ for p in msg.walk() for d in p.defects})
    if defects:
        return ParserDefect(", ".join(defects))
    for p in msg.walk():  # first-wins (the email package) or last-wins (others) readers
        names = [k.strip().lower() for k, _ in (p.get_params() or [])[1:]]
        for name in ("boundary", "charset", "format", "delsp"):
            if names.count(name) > 1:
                return OtherStructure(f"{names.count(name)} {name} parameters")
    bounds = set(walker.boundaries)
    for p in msg.walk():
        b = p.get_boundary() if p.is_multipart() else None
        if b:
            bounds.add(b.encode("latin-1", "replace"))
    starts = tuple(b"--" + b for b in bounds)
    if starts:
        like = re.compile(rb"(?m)^(?:" + b"|".join(re.escape(x) for x in starts) + rb")")
        for m in like.finditer(raw):
            if m.start() not in walker.delimiters:
                return BoundaryLikeLine(f"at byte {m.start()}")
    leaves: dict[str, email.message.Message] = {}
    _email_leaves(msg, "", leaves)
    for part in walker.parts:
        leaf = leaves.get(part.path)
        if leaf is None or leaf.get_content_type() != f"text/{part.subtype}":
            return OtherStructure(f"no text/{part.subtype} at part {label(part.path)}")
        cte = str(leaf.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if cte in IDENTITY_CTES:  # the raw body bytes, as the email package holds them
            body = leaf.get_payload(decode=True)
        else:  # quoted-printable and base64 bodies are ASCII (relay.qp and relay.b64 checked)
            payload = leaf.get_payload()
            body = payload.encode("ascii", "replace") if isinstance(payload, str) else b""
        if cte != part.cte or body != part.body:
            return OtherStructure(f"another body or encoding at part {label(part.path)}")
        if part.cte == "quoted-printable" and starts and any(s in part.body for s in starts):
            # a soft line break could put it at the start of a line in a copy
            return BoundaryLikeLine(f"inside quoted-printable part {label(part.path)}")
    return None
