"""Envelope addresses: what the relay accepts on MAIL FROM and RCPT TO, and puts on the
upstream line byte for byte. Pure.

Envelope addresses
------------------
The relay forwards every envelope address exactly as received, so it accepts only addresses it
can put on the upstream MAIL/RCPT line byte for byte, and refuses the forms an open relay would
honour. `parse_path` takes the argument of MAIL FROM:/RCPT TO: (after the colon) and returns the
text between the angle brackets; `check_sender` / `check_rcpt` then decide:

* A source route (`<@a,@b:user@c>`, RFC 5321 section 4.1.1.3 says to ignore it) is *dropped*:
  the mailbox `user@c` is what is checked and forwarded.
* Refused with 553 5.1.3: an empty local part; local part over 64 octets, domain over 255,
  path over 256 (RFC 5321 section 4.5.3.1); control characters (C0, DEL, C1 such as U+009B)
  and bidi overrides (U+202A-U+202E, U+2066-U+2069; relay.printable), spaces, commas, comments,
  backslashes, bytes that are not UTF-8; a dot-string with empty atoms; a quoted local part
  holding anything but atext characters and dots (`"john..doe"@x` passes, `"a b"@x` does not);
  an address aiosmtplib would not put on the wire verbatim.
* Refused with 553 5.7.1 (open-relay forms): `%` or `!` in the local part (percent hack, UUCP
  bang paths), a quoted local part with `@` or `%`.
* Refused with 553 5.6.7: a non-ASCII address when the client did not say MAIL ... SMTPUTF8.
* Refused with 550 5.7.1: an address literal (`user@[192.0.2.1]`) as recipient; a recipient
  domain not in `[listen] domains` when that list is not empty (exact match, case-insensitive).
* `<>` is accepted as sender only; `<postmaster>` (no domain, RFC 5321 section 4.5.1) is accepted
  as recipient.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from aiosmtplib.email import parse_address

from .printable import has_unsafe

Reply = tuple[int, str]

MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_PATH = 256  # including the angle brackets

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010ffff]+")
# a quoted local part may hold atext and dots in any order ("john..doe"), nothing else
_QTEXT_OK = re.compile(r"[A-Za-z0-9#$&'*+\-./=?^_`{|}~]*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def parse_path(arg: str) -> tuple[str, str] | None:
    """Split `<path> params` (or a bare `addr params`, which some clients send) into the text
    between the brackets and the rest; None when the brackets do not balance. Quotes are
    honoured so that `>` inside a quoted local part does not end the path."""
    s = arg.lstrip(" ")
    if not s.startswith("<"):
        addr, _, rest = s.partition(" ")
        return (addr, rest.strip()) if addr else None
    quoted = False
    i = 1
    while i < len(s):
        c = s[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            rest = s[i + 1:]
            if rest and not rest.startswith(" "):
                return None
            return s[1:i], rest.strip()
        i += 1
    return None


def strip_route(path: str) -> str | None:
    """`@a,@b:user@c` -> `user@c`; a path without a route unchanged; None if the route is
    malformed."""
    if not path.startswith("@"):
        return path
    route, sep, mailbox = path.partition(":")
    if not sep:
        return None
    for hop in route.split(","):
        if not hop.startswith("@") or _domain_problem(hop[1:], smtputf8=False) is not None:
            return None
    return mailbox


def _bad(code: int, text: str) -> Reply:
    return (code, text)


def _domain_problem(domain: str, smtputf8: bool) -> str | None:
    if not domain:
        return "empty domain"
    if len(domain.encode("utf-8", "surrogateescape")) > MAX_DOMAIN:
        return "domain longer than 255 octets"
    for label in domain.split("."):
        if label.isascii():
            if not _LABEL.fullmatch(label):
                return "malformed domain"
        else:
            if not smtputf8:
                return "non-ASCII domain"
            try:
                ace = label.encode("idna")
            except UnicodeError:
                return "malformed domain"
            if not _LABEL.fullmatch(ace.decode("ascii")):
                return "malformed domain"
    return None


def _literal_ok(domain: str) -> bool:
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return ipaddress.ip_address(inner[5:]).version == 6
        return ipaddress.ip_address(inner).version == 4
    except ValueError:
        return False


def check_mailbox(addr: str, smtputf8: bool = False, *, literal_ok: bool = False) -> Reply | None:
    """Syntax and open-relay checks common to senders and recipients (route already stripped)."""
    if has_unsafe(addr):  # C0, DEL, C1 (U+009B...), bidi overrides: they reach logs and DSNs
        return _bad(553, "5.1.3 control characters are not allowed in addresses")
    try:
        raw = addr.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes: not UTF-8
        return _bad(553, "5.6.7 address is not valid UTF-8")
    if not addr.isascii() and not smtputf8:
        return _bad(553, "5.6.7 non-ASCII address needs MAIL FROM ... SMTPUTF8")
    if len(raw) + 2 > MAX_PATH:
        return _bad(553, "5.1.3 address longer than 256 octets")
    if " " in addr or "," in addr:
        return _bad(553, "5.1.3 spaces and commas are not allowed in addresses")
    local, at, domain = addr.rpartition("@")
    if not at:
        return _bad(553, "5.1.3 address needs a domain")
    if not local:
        return _bad(553, "5.1.3 empty local part")
    if len(local.encode("utf-8")) > MAX_LOCAL:
        return _bad(553, "5.1.3 local part longer than 64 octets")
    if local.startswith('"'):
        if len(local) < 2 or not local.endswith('"'):
            return _bad(553, "5.1.3 malformed quoted local part")
        inner = local[1:-1]
        if "@" in inner or "%" in inner:
            return _bad(553, "5.7.1 quoted local parts with @ or % are not relayed")
        if not _QTEXT_OK.fullmatch(inner):
            return _bad(553, "5.1.3 quoted local part cannot be forwarded verbatim")
    else:
        if "%" in local or "!" in local or "@" in local:
            return _bad(553, "5.7.1 %, ! and @ routing in the local part is not relayed")
        if not all(_ATEXT.fullmatch(atom) for atom in local.split(".")):
            return _bad(553, "5.1.3 malformed local part")
    if domain.startswith("["):
        if not (literal_ok and domain.endswith("]") and _literal_ok(domain)):
            return _bad(550, "5.7.1 address literals are not relayed")
    else:
        why = _domain_problem(domain, smtputf8)
        if why is not None:
            return _bad(553, f"5.1.3 {why}")
    try:
        verbatim = parse_address(addr) == addr
    except ValueError:
        verbatim = False
    if not verbatim:
        return _bad(553, "5.1.3 address cannot be forwarded verbatim")
    return None


def check_rcpt(addr: str, domains: Sequence[str] = (), smtputf8: bool = False) -> Reply | None:
    """None if `addr` (route already stripped) may be relayed to, else (code, text).
    `domains`: `[listen] domains`, the only recipient domains relayed to when not empty."""
    if addr.lower() == "postmaster":
        return None
    bad = check_mailbox(addr, smtputf8)
    if bad is not None:
        return bad
    domain = addr.rpartition("@")[2].lower()
    if domains and domain not in domains:
        return _bad(550, "5.7.1 relay not permitted for this domain")
    return None


def check_sender(addr: str, smtputf8: bool = False) -> Reply | None:
    """None if `addr` (route stripped; `<>` for the null sender) is an acceptable sender."""
    if addr in ("<>", ""):
        return None
    return check_mailbox(addr, smtputf8, literal_ok=True)


def mail_options_upstream(options: Iterable[str]) -> list[str]:
    """The client's MAIL parameters that must reach the upstream (BODY=, SMTPUTF8); SIZE is
    recomputed by the client library for each copy."""
    out = []
    for opt in options:
        name = opt.partition("=")[0].upper()
        if name in ("BODY", "SMTPUTF8"):
            out.append(opt.upper())
    return out
