"""CPython's own corpus of real and malformed messages (Lib/test/test_email/data, shipped with
CPython's test package), each handled as all-staff mail: every copy is either a correct
fingerprinted copy (only text whitespace differs, as the email package reads the original and
the copy) or the original bytes, and nothing raises. A message the email package reads with
defects is never rewritten (relay.mime.Ambiguity)."""

from __future__ import annotations

import email
import email.policy
import sysconfig
from pathlib import Path

import clients
import pytest

from relay.fingerprint import prepare
from relay.policy import normalise_newlines
from relay.scheme import SCHEME

CORPUS = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
FILES = sorted(p for p in CORPUS.glob("msg_*.txt")) if CORPUS.is_dir() else []
KEY = bytes(range(32))


def leaves(raw: bytes) -> list[tuple[str, bytes, str | None]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = []
    for p in msg.walk():
        if p.is_multipart():
            continue
        payload = p.get_payload(decode=True)
        out.append((p.get_content_type(), payload if isinstance(payload, bytes) else b"",
                    p.get_content_charset()))
    return out


def has_defects(raw: bytes) -> bool:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return any(p.defects for p in msg.walk())


def test_corpus_present() -> None:
    assert len(FILES) >= 40, f"CPython email test corpus not found at {CORPUS}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_message_fingerprints_or_passes(path: Path) -> None:
    raw = normalise_newlines(path.read_bytes())
    p = prepare(raw, "sender@example.com", "k1", KEY, SCHEME.with_rate(0.5))
    copies = [p.copy_for(f"user{i}@example.com") for i in range(3)]
    if has_defects(raw):  # readers could disagree about its structure: left whole
        assert p.ambiguity is not None and all(c == raw for c in copies)
    for c in copies:
        assert clients.whitespace_only(raw, c) is None
        assert b"\r" not in c.replace(b"\r\n", b""), "bare CR"
        assert b"\n" not in c.replace(b"\r\n", b""), "bare LF"
        if c == raw:
            continue
        # only text whitespace changed (whitespace_only above): same headers, same parts
        assert c.split(b"\r\n\r\n", 1)[0] == raw.split(b"\r\n\r\n", 1)[0]
        got, orig = leaves(c), leaves(raw)
        assert [t for t, _, _ in got] == [t for t, _, _ in orig]
    if p.carriers >= 8:  # three equal codes of 8+ fair bits: < 1e-4
        assert len(set(copies)) > 1


async def test_corpus_through_the_relay(relay: object, sink: object) -> None:
    """Every corpus message, sent as all-staff mail through the running relay: never a 5xx,
    one copy per recipient, each copy the original or a whitespace-only variant."""
    from conftest import smtp_send

    port = relay.port  # type: ignore[attr-defined]
    rcpts = ["a@example.com", "b@example.com", "all-staff@example.com"]
    rewritten = whole = 0
    for path in FILES:
        raw = normalise_newlines(path.read_bytes())
        before = len(sink.messages)  # type: ignore[attr-defined]
        reply = await smtp_send(port, "sender@example.com", rcpts, raw,
                                mail_options="BODY=8BITMIME")
        assert reply.startswith("250"), f"{path.name}: {reply}"
        got = sink.messages[before:]  # type: ignore[attr-defined]
        assert sorted(r for m in got for r in m.rcpt_tos) == sorted(rcpts), path.name
        for m in got:
            assert len(m.rcpt_tos) == 1
            rewritten += m.data != raw
            whole += m.data == raw
            if m.data != raw:
                assert not has_defects(raw), path.name
                assert clients.whitespace_only(raw, m.data) is None, path.name
                assert m.data.split(b"\r\n\r\n", 1)[0] == raw.split(b"\r\n\r\n", 1)[0]
    assert rewritten and whole and rewritten + whole == len(FILES) * len(rcpts)
