"""Delivery status notifications (RFC 3464; RFC 6533 when an address is not ASCII). Pure.

The relay sends one when it answered a message with 250 although the upstream refused some
recipients permanently (the client's MTA cannot know: SMTP has one reply per DATA). It goes from
`<>` to the envelope sender (never to a list address: `outcomes.withheld`) and names every failed
recipient with the upstream's reply; the original message's header section is attached
(text/rfc822-headers), never its body.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from .outcomes import one_line, status_of
from .policy import header_block

_MSGID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]{1,900}>)", re.I | re.M)


@dataclass(frozen=True)
class Failure:
    recipient: str
    reply: str  # the upstream's reply, e.g. "550 5.1.1 <bob@example.com>: user unknown"


@dataclass(frozen=True)
class Notice:
    data: bytes  # the whole message, CRLF line ends
    mail_options: tuple[str, ...]  # BODY=8BITMIME / SMTPUTF8 when the content needs them


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def build(*, reporting_mta: str, sender: str, failures: Sequence[Failure], original: bytes,
          arrival: datetime, remote_mta: str | None = None, now: datetime | None = None,
          boundary: str | None = None, message_id: str | None = None) -> Notice:
    """A multipart/report (report-type=delivery-status) for `failures`, addressed to `sender`:
    a human-readable part, a message/delivery-status part (Reporting-MTA, Arrival-Date, then per
    recipient Final-Recipient, Action: failed, Status, Remote-MTA, Diagnostic-Code) and the
    original header section as text/rfc822-headers."""
    if not failures:
        raise ValueError("a delivery status notification needs at least one failure")
    now = now or datetime.now(UTC)
    boundary = boundary or f"=_relay_{secrets.token_hex(12)}"
    message_id = message_id or f"<{secrets.token_hex(12)}@{reporting_mta}>"
    headers = header_block(original)
    headers = re.sub(rb"\r\n|\r|\n", b"\r\n", headers)
    if headers and not headers.endswith(b"\r\n"):
        headers += b"\r\n"
    utf8 = not sender.isascii() or any(not f.recipient.isascii() for f in failures)
    eight_bit = utf8 or any(b > 127 for b in headers)
    addr_type = "utf-8" if utf8 else "rfc822"
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    headers_type = "message/global-headers" if utf8 else "text/rfc822-headers"

    human = [
        f"This is the mail relay at {reporting_mta}.",
        "",
        "Your message could not be delivered to the recipients below; the receiving",
        "system refused it permanently. All other recipients got it.",
        "",
    ]
    for f in failures:
        human.append(f"<{f.recipient}>: {one_line(f.reply)}")
    human.append("")

    status = [f"Reporting-MTA: dns; {reporting_mta}",
              f"Arrival-Date: {format_datetime(arrival)}", ""]
    for f in failures:
        diag = one_line(f.reply)
        status.append(f"Final-Recipient: {addr_type}; {f.recipient}")
        status.append("Action: failed")
        status.append(f"Status: {status_of(f.reply)}")
        if remote_mta:
            status.append(f"Remote-MTA: dns; {remote_mta}")
        status.append(f"Diagnostic-Code: smtp; {diag if utf8 else _ascii(diag)}")
        status.append(f"Last-Attempt-Date: {format_datetime(now)}")
        status.append("")

    orig_id = _MSGID.search(headers)
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {message_id}",
    ]
    if orig_id:
        ref = orig_id.group(1).decode("ascii", "replace")
        lines += [f"In-Reply-To: {ref}", f"References: {ref}"]
    charset = "utf-8" if utf8 else "us-ascii"
    cte = "8bit" if utf8 else "7bit"
    lines += [
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        f"Content-Type: text/plain; charset={charset}",
        f"Content-Transfer-Encoding: {cte}",
        "",
        *(h if utf8 else _ascii(h) for h in human),
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: {status_type}",
        *([f"Content-Transfer-Encoding: {cte}"] if utf8 else []),
        "",
        *status,
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        f"Content-Type: {headers_type}",
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}",
        "",
    ]
    head = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    options: list[str] = []
    if eight_bit:
        options.append("BODY=8BITMIME")
    if utf8:
        options.append("SMTPUTF8")
    return Notice(head + headers + tail, tuple(options))
