"""The RFC 3464 delivery status notification builder."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from relay import dsn

ORIGINAL = (b"From: Boss <boss@example.com>\r\nTo: all-staff@example.com\r\n"
            b"Subject: Secret plans\r\nMessage-ID: <m1@example.com>\r\n\r\n"
            b"The body must not be in the notice.\r\n")


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore


def test_structure() -> None:
    arrival = datetime(2025, 11, 24, 10, 0, tzinfo=UTC)
    n = dsn.build(reporting_mta="relay.test", sender="boss@example.com",
                  failures=[dsn.Failure("bob@example.com", "550 5.1.1 <bob@example.com>: no "
                                                           "such user\nsecond line"),
                            dsn.Failure("eve@example.com", "554 rejected")],
                  original=ORIGINAL, arrival=arrival, remote_mta="127.0.0.1")
    assert n.mail_options == ()
    assert b"\r\n" in n.data and b"\n" not in n.data.replace(b"\r\n", b"")
    assert max(len(line) for line in n.data.split(b"\r\n")) <= 998
    msg = parse(n.data)
    assert msg["To"] == "boss@example.com"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<m1@example.com>"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert "bob@example.com" in parts[0].get_content()
    # message/delivery-status: per-message block, then one block per recipient
    blocks = [b for b in parts[1].get_payload()]
    fields = [dict(b.items()) for b in blocks]
    assert fields[0]["Reporting-MTA"] == "dns; relay.test"
    assert fields[0]["Arrival-Date"].startswith("Mon, 24 Nov 2025 10:00:00")
    assert fields[1]["Final-Recipient"] == "rfc822; bob@example.com"
    assert fields[1]["Action"] == "failed"
    assert fields[1]["Status"] == "5.1.1"
    assert fields[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1 <bob@example.com>: no such")
    assert "second line" in fields[1]["Diagnostic-Code"]
    assert fields[2]["Final-Recipient"] == "rfc822; eve@example.com"
    assert fields[2]["Status"] == "5.0.0"
    headers = parts[2].get_payload(decode=True)
    assert b"Subject: Secret plans" in headers
    assert b"must not be in the notice" not in n.data


def test_utf8_notice_uses_global_types() -> None:
    n = dsn.build(reporting_mta="relay.test", sender="jürgen@example.de",
                  failures=[dsn.Failure("zoë@example.com", "550 5.1.1 nope")],
                  original="Subject: Grüße\r\n\r\nx\r\n".encode(), arrival=datetime.now(UTC))
    assert set(n.mail_options) == {"BODY=8BITMIME", "SMTPUTF8"}
    msg = parse(n.data)
    types = [p.get_content_type() for p in msg.iter_parts()]
    assert types == ["text/plain", "message/global-delivery-status", "message/global-headers"]
    assert "Final-Recipient: utf-8; zoë@example.com".encode() in n.data


def test_eight_bit_headers_ask_for_8bitmime() -> None:
    n = dsn.build(reporting_mta="r", sender="a@example.com",
                  failures=[dsn.Failure("b@example.com", "550 no")],
                  original="Subject: Grüße\r\n\r\nx\r\n".encode(), arrival=datetime.now(UTC))
    assert n.mail_options == ("BODY=8BITMIME",)
