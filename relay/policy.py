"""Pure decisions about messages: all-staff detection, list members, newline normalisation.

Nothing here does I/O except `load_members` (reads the members files named in the config) and
`read_text`. Envelope address checks are in relay.addresses; SMTP AUTH in relay.passwords.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .addresses import check_mailbox
from .config import ConfigError, Policy

_NEWLINE = re.compile(rb"\r\n|\r|\n")


# --- message classification ---------------------------------------------------------------

def header_block(data: bytes, limit: int = 256 * 1024) -> bytes:
    """The header section of a message (up to the first empty line), at most `limit` bytes."""
    head = data[:limit]
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = head.find(sep)
        if i >= 0:
            return head[: i + len(sep) // 2]
    return head


def header_addresses(header: bytes, names: Sequence[str] = ("to", "cc")) -> list[str]:
    """Lower-cased addresses in the given header fields; malformed fields give what parses."""
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        header_block(header))
    values: list[str] = []
    for name in names:
        for v in msg.get_all(name, []):
            values.append(str(v))
    return [a.strip().lower() for _, a in email.utils.getaddresses(values) if a and "@" in a]


def is_all_staff(header: bytes, envelope_rcpts: Sequence[str], policy: Policy) -> bool:
    """Fingerprint this message? A To or Cc address in `policy.lists` (case-insensitive), or at
    least `policy.min_recipients` envelope recipients when that is > 0. `header` may be the whole
    message; only its header section is read."""
    if policy.min_recipients > 0 and len(envelope_rcpts) >= policy.min_recipients:
        return True
    lists = {a.lower() for a in policy.lists}
    return any(a in lists for a in header_addresses(header))


def addressed_to_list(envelope_rcpts: Sequence[str], policy: Policy) -> bool:
    """An envelope recipient is itself a list address (the relay sits in front of the MTA, or
    the list was Bcc'd): fingerprint too."""
    lists = {a.lower() for a in policy.lists} | {a.lower() for a in policy.members}
    return any(r.lower() in lists for r in envelope_rcpts)


def unexpanded_lists(envelope_rcpts: Sequence[str], policy: Policy,
                     members: Mapping[str, Sequence[str]]) -> list[str]:
    """List addresses of `[policy] lists` that arrived as envelope recipients although the
    relay has no members file for them: the MTA did not expand the list before the relay
    (an aliases(5) list, expanded by local delivery after the filter), so every member will get
    the same copy."""
    lists = {a.lower() for a in policy.lists}
    return [r for r in envelope_rcpts if r.lower() in lists and r.lower() not in members]


def parse_members(text: str, source: str) -> tuple[str, ...]:
    """One address per line, `#` starts a comment; duplicates (case-insensitive) dropped."""
    out: list[str] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        addr = line.split("#", 1)[0].strip()
        if not addr:
            continue
        if addr.startswith("<") and addr.endswith(">"):
            addr = addr[1:-1]
        bad = check_mailbox(addr, smtputf8=True)
        if bad is not None:
            raise ConfigError(f"{source}: line {n}: {addr!r} is not a usable address "
                              f"({bad[1].split(' ', 1)[1]})")
        if addr.lower() not in seen:
            seen.add(addr.lower())
            out.append(addr)
    return tuple(out)


def read_text(path: Path, what: str) -> str:
    """A UTF-8 file named in the config; ConfigError naming it and `what` it is."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8"
        raise ConfigError(f"{path}: cannot read {what}: {why}") from None


def load_members(policy: Policy) -> dict[str, tuple[str, ...]]:
    """Read every members file named in `[policy] members`; ConfigError naming a missing or
    unreadable file."""
    out: dict[str, tuple[str, ...]] = {}
    for addr, path in policy.members.items():
        text = read_text(path, f"members file of {addr}")
        out[addr.lower()] = parse_members(text, str(path))
    return out


def expand(rcpts: Sequence[str], members: Mapping[str, Sequence[str]]) -> list[str]:
    """Envelope recipients with every list address that has a members file replaced by its
    members; the result has no case-insensitive duplicates (first spelling kept)."""
    out: list[str] = []
    seen: set[str] = set()
    for r in rcpts:
        for a in members.get(r.lower(), (r,)):
            if a.lower() not in seen:
                seen.add(a.lower())
                out.append(a)
    return out


def normalise_newlines(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF (so no bare CR/LF ever goes upstream, and a
    `\\n.\\n` inside the content is an ordinary, dot-stuffed line upstream, never an end of DATA);
    the message ends with CRLF."""
    # counting finds what a search for bare CR/LF would, at C speed: a lookbehind expression
    # over a 51 MB message held the event loop (every other client waited)
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = _NEWLINE.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data
