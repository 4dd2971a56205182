"""Pure policy decisions: envelope address checks, all-staff detection, members expansion."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import policy
from relay.config import ConfigError, Policy

CFG = Policy(lists=("all-staff@example.com",), min_recipients=20)


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
    rules = replace(CFG, members={"all-staff@example.com": f})
    members = policy.load_members(rules)
    assert members == {"all-staff@example.com": ("alice@example.com", "Bob@example.com",
                                                 "carol@example.com")}
    out = policy.expand(["dave@example.com", "All-Staff@example.com", "alice@example.com"],
                        members)
    assert out == ["dave@example.com", "alice@example.com", "Bob@example.com",
                   "carol@example.com"]


def test_members_file_missing_or_bad(tmp_path: Path) -> None:
    rules = replace(CFG, members={"all-staff@example.com": tmp_path / "nope.txt"})
    with pytest.raises(ConfigError, match="nope.txt"):
        policy.load_members(rules)
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
