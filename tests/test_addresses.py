"""Envelope address checks (relay.addresses): syntax, open-relay forms, verbatim forwarding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import addresses


@pytest.mark.parametrize("arg,expected", [
    ("<a@b.example>", ("a@b.example", "")),
    ("<a@b.example> SIZE=100 BODY=8BITMIME", ("a@b.example", "SIZE=100 BODY=8BITMIME")),
    ("<>", ("", "")),
    ('<"a>b"@c.example>', ('"a>b"@c.example', "")),
    ("a@b.example SIZE=1", ("a@b.example", "SIZE=1")),
    ("<@r1.example,@r2.example:u@d.example>", ("@r1.example,@r2.example:u@d.example", "")),
    ("<a@b.example", None),
    ("<a@b.example>junk", None),
])
def test_parse_path(arg: str, expected: tuple[str, str] | None) -> None:
    assert addresses.parse_path(arg) == expected


@pytest.mark.parametrize("addr", [
    "alice@example.com", "Alice.Smith+tag@mail.example.com", "o'brien@example.com",
    '"john..doe"@example.com', "x@localhost", "a-b_c=d@sub-domain.example.org",
])
def test_good_recipients(addr: str) -> None:
    assert addresses.check_rcpt(addr) is None


@pytest.mark.parametrize("addr,code,enhanced", [
    ("a%b@example.com", 553, "5.7.1"),          # percent hack
    ("b!a@example.com", 553, "5.7.1"),          # bang path
    ('"a@b"@example.com', 553, "5.7.1"),        # quoted @
    ('"a%b"@example.com', 553, "5.7.1"),        # quoted %
    ('"a b"@example.com', 553, "5.1.3"),        # space
    ("a@[192.0.2.1]", 550, "5.7.1"),             # address literal
    ("a@[IPv6:::1]", 550, "5.7.1"),
    ("@example.com", 553, "5.1.3"),              # empty local part
    ("x" * 65 + "@example.com", 553, "5.1.3"),  # local part > 64
    ("a@" + ("d" * 60 + ".") * 5 + "com", 553, "5.1.3"),  # path > 256
    ("a\x01b@example.com", 553, "5.1.3"),       # control character
    ("a b@example.com", 553, "5.1.3"),
    ("a,b@example.com", 553, "5.1.3"),
    ("a@b@example.com", 553, "5.7.1"),
    ("a..b@example.com", 553, "5.1.3"),
    (".a@example.com", 553, "5.1.3"),
    ("a(comment)@example.com", 553, "5.1.3"),
    ("a@-bad-.example", 553, "5.1.3"),
    ("a@example.com.", 553, "5.1.3"),
    ("noat", 553, "5.1.3"),
    ("ü@example.com", 553, "5.6.7"),             # needs SMTPUTF8
    ("a\udcff@example.com", 553, "5.6.7"),       # not UTF-8
])
def test_bad_recipients(addr: str, code: int, enhanced: str) -> None:
    bad = addresses.check_rcpt(addr)
    assert bad is not None and bad[0] == code and bad[1].startswith(enhanced), bad


@pytest.mark.parametrize("addr", [
    "a\u009b31m@example.com",       # C1 CSI: a terminal escape in one character
    "a\u0085b@example.com",         # C1 NEL
    "moc.elpmaxe@\u202eevil",       # right-to-left override: reads as evil@example.com
    "\u2066bob\u2069@example.com",  # bidi isolates
    "b\u202aob@example.com",
])
def test_smtputf8_addresses_with_controls_or_bidi_overrides_are_refused(addr: str) -> None:
    for check in (addresses.check_rcpt, addresses.check_sender):
        bad = check(addr, smtputf8=True)
        assert bad is not None and bad[0] == 553 and bad[1].startswith("5.1.3"), (addr, bad)


def test_utf8_recipient_with_smtputf8() -> None:
    assert addresses.check_rcpt("jürgen@exämple.de", smtputf8=True) is None
    assert addresses.check_rcpt("jürgen@exämple.de", smtputf8=False)[0] == 553  # type: ignore


def test_domains_restrict_relaying() -> None:
    domains = ("example.com",)
    assert addresses.check_rcpt("a@EXAMPLE.com", domains) is None
    assert addresses.check_rcpt("a@other.example", domains) == (
        550, "5.7.1 relay not permitted for this domain")
    assert addresses.check_rcpt("postmaster", domains) is None


def test_sender_checks() -> None:
    assert addresses.check_sender("<>") is None
    assert addresses.check_sender("a@[192.0.2.1]") is None  # a literal sender is forwardable
    assert addresses.check_sender("a%b@example.com") is not None
    assert addresses.check_sender("a@[999.1.1.1]") is not None


def test_strip_route() -> None:
    assert addresses.strip_route("@a.example,@b.example:u@c.example") == "u@c.example"
    assert addresses.strip_route("u@c.example") == "u@c.example"
    assert addresses.strip_route("@a.example") is None
    assert addresses.strip_route("@[1.2.3.4]:u@c.example") is None


@given(st.text(min_size=1, max_size=80))
def test_accepted_addresses_go_upstream_verbatim(addr: str) -> None:
    # whatever is accepted, aiosmtplib puts on the wire unchanged, and it has no line break
    from aiosmtplib.email import parse_address

    if addresses.check_rcpt(addr, smtputf8=True) is None:
        assert parse_address(addr) == addr or addr.lower() == "postmaster"
        assert not any(c in addr for c in "\r\n <>,%!")


def test_mail_options_upstream() -> None:
    assert addresses.mail_options_upstream(["SIZE=123", "BODY=8BITMIME", "SMTPUTF8"]) == [
        "BODY=8BITMIME", "SMTPUTF8"]
