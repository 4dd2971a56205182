"""Pure policy decisions: envelope address checks, all-staff detection, members expansion."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import policy
from relay.config import Config, ConfigError

CFG = Config(lists=("all-staff@example.com",), min_recipients=20)


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
    assert policy.parse_path(arg) == expected


@pytest.mark.parametrize("addr", [
    "alice@example.com", "Alice.Smith+tag@mail.example.com", "o'brien@example.com",
    '"john..doe"@example.com', "x@localhost", "a-b_c=d@sub-domain.example.org",
])
def test_good_recipients(addr: str) -> None:
    assert policy.check_rcpt(addr, CFG) is None


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
    bad = policy.check_rcpt(addr, CFG)
    assert bad is not None and bad[0] == code and bad[1].startswith(enhanced), bad


@pytest.mark.parametrize("addr", [
    "a\u009b31m@example.com",       # C1 CSI: a terminal escape in one character
    "a\u0085b@example.com",         # C1 NEL
    "moc.elpmaxe@\u202eevil",       # right-to-left override: reads as evil@example.com
    "\u2066bob\u2069@example.com",  # bidi isolates
    "b\u202aob@example.com",
])
def test_smtputf8_addresses_with_controls_or_bidi_overrides_are_refused(addr: str) -> None:
    for check in (policy.check_rcpt, policy.check_sender):
        bad = check(addr, CFG, smtputf8=True)
        assert bad is not None and bad[0] == 553 and bad[1].startswith("5.1.3"), (addr, bad)


def test_utf8_recipient_with_smtputf8() -> None:
    assert policy.check_rcpt("jürgen@exämple.de", CFG, smtputf8=True) is None
    assert policy.check_rcpt("jürgen@exämple.de", CFG, smtputf8=False)[0] == 553  # type: ignore


def test_domains_restrict_relaying() -> None:
    cfg = replace(CFG, domains=("example.com",))
    assert policy.check_rcpt("a@EXAMPLE.com", cfg) is None
    assert policy.check_rcpt("a@other.example", cfg) == (550, "5.7.1 relay not permitted for "
                                                          "this domain")
    assert policy.check_rcpt("postmaster", cfg) is None


def test_sender_checks() -> None:
    assert policy.check_sender("<>", CFG) is None
    assert policy.check_sender("a@[192.0.2.1]", CFG) is None  # a literal sender is forwardable
    assert policy.check_sender("a%b@example.com", CFG) is not None
    assert policy.check_sender("a@[999.1.1.1]", CFG) is not None


def test_strip_route() -> None:
    assert policy.strip_route("@a.example,@b.example:u@c.example") == "u@c.example"
    assert policy.strip_route("u@c.example") == "u@c.example"
    assert policy.strip_route("@a.example") is None
    assert policy.strip_route("@[1.2.3.4]:u@c.example") is None


@given(st.text(min_size=1, max_size=80))
def test_accepted_addresses_go_upstream_verbatim(addr: str) -> None:
    # whatever is accepted, aiosmtplib puts on the wire unchanged, and it has no line break
    from aiosmtplib.email import parse_address

    if policy.check_rcpt(addr, CFG, smtputf8=True) is None:
        assert parse_address(addr) == addr or addr.lower() == "postmaster"
        assert not any(c in addr for c in "\r\n <>,%!")


def test_mail_options_upstream() -> None:
    assert policy.mail_options_upstream(["SIZE=123", "BODY=8BITMIME", "SMTPUTF8"]) == [
        "BODY=8BITMIME", "SMTPUTF8"]


def test_is_all_staff_by_header() -> None:
    msg = b"From: a@x\r\nTo: Everyone <All-Staff@Example.com>, b@x\r\nSubject: s\r\n\r\nhi\r\n"
    assert policy.is_all_staff(msg, ["b@x"], CFG)
    cc = b"From: a@x\r\nTo: b@x\r\nCc: all-staff@example.com\r\n\r\nhi\r\n"
    assert policy.is_all_staff(cc, ["b@x"], CFG)
    other = b"From: a@x\r\nTo: b@x\r\nSubject: all-staff@example.com\r\n\r\n" \
            b"To: all-staff@example.com\r\n"
    assert not policy.is_all_staff(other, ["b@x"], CFG)  # only To/Cc in the header section


def test_is_all_staff_by_count() -> None:
    msg = b"To: b@x\r\n\r\nhi\r\n"
    rcpts = [f"u{i}@example.com" for i in range(20)]
    assert policy.is_all_staff(msg, rcpts, CFG)
    assert not policy.is_all_staff(msg, rcpts[:19], CFG)
    assert not policy.is_all_staff(msg, rcpts, replace(CFG, min_recipients=0))


def test_addressed_to_list() -> None:
    assert policy.addressed_to_list(["ALL-staff@example.com"], CFG)
    assert not policy.addressed_to_list(["bob@example.com"], CFG)


@pytest.mark.parametrize("rcpts,members,expected", [
    (["ALL-staff@example.com"], {}, ["ALL-staff@example.com"]),  # an aliases(5) list
    (["all-staff@example.com"], {"all-staff@example.com": ("a@x.org",)}, []),  # members file
    (["a@example.com", "b@example.com"], {}, []),  # expanded by the MTA
    (["other-list@example.com"], {}, []),  # not a [policy] list
])
def test_unexpanded_lists(rcpts: list[str], members: dict, expected: list[str]) -> None:
    assert policy.unexpanded_lists(rcpts, CFG, members) == expected


def test_members(tmp_path: Path) -> None:
    f = tmp_path / "staff.txt"
    f.write_text("# staff\nalice@example.com\nBob@example.com  # boss\n\nbob@EXAMPLE.com\n"
                 "<carol@example.com>\n")
    cfg = replace(CFG, members={"all-staff@example.com": f})
    members = policy.load_members(cfg)
    assert members == {"all-staff@example.com": ("alice@example.com", "Bob@example.com",
                                                 "carol@example.com")}
    out = policy.expand(["dave@example.com", "All-Staff@example.com", "alice@example.com"],
                        members)
    assert out == ["dave@example.com", "alice@example.com", "Bob@example.com",
                   "carol@example.com"]


def test_members_file_missing_or_bad(tmp_path: Path) -> None:
    cfg = replace(CFG, members={"all-staff@example.com": tmp_path / "nope.txt"})
    with pytest.raises(ConfigError, match="nope.txt"):
        policy.load_members(cfg)
    bad = tmp_path / "bad.txt"
    bad.write_text("ok@example.com\nx%y@example.com\n")
    with pytest.raises(ConfigError, match="bad.txt: line 2"):
        policy.load_members(replace(CFG, members={"l@example.com": bad}))


@pytest.mark.parametrize("raw,expected", [
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\rb\r\n", b"a\r\nb\r\n"),
    (b"a\r\n.\nb", b"a\r\n.\r\nb\r\n"),
    (b"", b""),
])
def test_normalise_newlines(raw: bytes, expected: bytes) -> None:
    assert policy.normalise_newlines(raw) == expected


@given(st.binary(max_size=200))
def test_normalise_newlines_leaves_no_bare_cr_or_lf(raw: bytes) -> None:
    out = policy.normalise_newlines(raw)
    stripped = out.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped
