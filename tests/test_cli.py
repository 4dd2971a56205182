"""The command line as users meet it: `python -m relay serve` as a real process in front of a
loopback sink, then `relay decode` on a leaked excerpt; one-line errors and exit codes."""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import bombs
import pytest
from conftest import Sink, free_port

from relay.cli import render_report

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, stdin: bytes | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "relay", *args], input=stdin and stdin.decode(),
                          capture_output=True, text=True, timeout=120, cwd=cwd or ROOT, env=env)


def one_line_error(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert p.returncode == code, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_flag_is_one_line_exit_2() -> None:
    one_line_error(run("serve", "--no-such-flag"), 2, "--no-such-flag")
    one_line_error(run("frobnicate"), 2, "frobnicate")


def test_bad_config_value_names_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[listen]\nport = 'many'\n")
    one_line_error(run("serve", "--config", str(cfg)), 2, str(cfg), "listen.port")
    one_line_error(run("decode", "--config", str(cfg), "x.txt"), 2, "listen.port")
    one_line_error(run("serve", "--config", str(tmp_path / "missing.toml")), 2, "missing.toml")
    one_line_error(run("serve", "--listen", "nonsense"), 2, "--listen")


def test_flags_set_their_sections_keys(tmp_path: Path) -> None:
    from relay.cli import _load, _parser

    conf = tmp_path / "c.toml"
    conf.write_text('[listen]\nhostname = "mx.test"\n[store]\nurl = "postgresql://db/relay"\n')
    plain = _load(_parser().parse_args(["serve", "--config", str(conf)]))
    cfg = _load(_parser().parse_args(["serve", "--config", str(conf), "--listen", "[::1]:2600",
                                      "--upstream", "mx.internal:25", "--db", "x.db"]))
    assert (cfg.listen.host, cfg.listen.port, cfg.listen.hostname) == ("::1", 2600, "mx.test")
    assert (cfg.upstream.host, cfg.upstream.port) == ("mx.internal", 25)
    assert plain.store.url == "postgresql://db/relay"
    assert cfg.store.path == Path("x.db") and cfg.store.url is None  # --db: this SQLite file
    assert (cfg.policy, cfg.signature, cfg.source) == (plain.policy, plain.signature, str(conf))


def test_decode_missing_input_and_missing_database(tmp_path: Path) -> None:
    one_line_error(run("decode", "--db", str(tmp_path / "x.db"), str(tmp_path / "nope.txt")),
                   2, "nope.txt")
    (tmp_path / "leak.txt").write_text("some words")
    p = run("decode", "--db", str(tmp_path / "none.db"), str(tmp_path / "leak.txt"),
            cwd=tmp_path)
    one_line_error(p, 1, "none.db")
    assert not (tmp_path / "none.db").exists()


def test_decode_report_into_a_missing_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "leak.txt").write_text("some words")
    p = run("decode", "--db", str(tmp_path / "none.db"), "--report",
            str(tmp_path / "no" / "sheet.html"), str(tmp_path / "leak.txt"))
    one_line_error(p, 2, "--report", "no such directory")


def prose() -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 30][10:16]


def all_staff_message() -> bytes:
    paras = prose()
    m = EmailMessage()
    m["From"] = "ceo@example.com"
    m["To"] = "all-staff@example.com"
    m["Subject"] = "Reorganisation"
    m["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    m["Message-ID"] = "<reorg@example.com>"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras), cte="quoted-printable")
    m.add_alternative("<html><body>" + "".join(f"<p>{html.escape(p)}</p>" for p in paras)
                      + "</body></html>", subtype="html", cte="base64")
    m.add_attachment(b"%PDF-1.4\x00binary\xff" * 50, maintype="application", subtype="pdf",
                     filename="org.pdf")
    return m.as_bytes().replace(b"\n", b"\r\n")


def leaves(raw: bytes) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [(p.get_content_type(), p.get_payload(decode=True) or b"") for p in msg.walk()
            if not p.is_multipart()]


def squash(s: str) -> str:
    return re.sub(r"(?:&nbsp;|[ \u00a0])+", " ", s)


async def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("relay did not start")


async def test_serve_fingerprints_and_decode_names_the_leaker(tmp_path: Path, sink: Sink) -> None:
    listen = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[listen]
port = {listen}
[upstream]
port = {sink.port}
[store]
path = "state/relay.db"
[signature]
key_file = "state/relay.key"
""")
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--config", str(cfg)],
                            cwd=ROOT, stderr=subprocess.PIPE)
    try:
        await wait_port(listen, proc)
        raw = all_staff_message()
        rcpts = [f"user{i:03d}@example.com" for i in range(200)]
        errors, reply = await aiosmtplib.send(raw, sender="ceo@example.com", recipients=rcpts,
                                              hostname="127.0.0.1", port=listen, timeout=120)
        assert errors == {}
        # ordinary mail: one transaction, byte-identical
        plain = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello  there.\r\n"
        await aiosmtplib.send(plain, sender="a@example.com", recipients=["b@example.com"],
                              hostname="127.0.0.1", port=listen)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    for name in ("relay.db", "relay.key"):
        assert (tmp_path / "state" / name).stat().st_mode & 0o077 == 0
    copies = [m for m in sink.messages if m.mail_from == "ceo@example.com"]
    assert sorted(r for m in copies for r in m.rcpt_tos) == rcpts
    assert all(len(m.rcpt_tos) == 1 for m in copies)
    assert len({m.data for m in copies}) == len(rcpts)
    head = raw.split(b"\r\n\r\n", 1)[0]
    for m in copies:
        assert m.data.split(b"\r\n\r\n", 1)[0] == head
        for (t, b), (_, ob) in zip(leaves(m.data), leaves(raw), strict=True):
            assert squash(b.decode("latin-1")) == squash(ob.decode("latin-1"))
            assert t.startswith("text/") or b == ob
    other = [m for m in sink.messages if m.mail_from == "a@example.com"]
    assert len(other) == 1 and other[0].data == plain and other[0].rcpt_tos == ["b@example.com"]
    # the log never shows which copy carries which signature
    assert "user007" not in err.decode()
    assert "fingerprint" not in err.decode().lower() and "signature" not in err.decode().lower()

    leaker = copies[123]
    text = next(b for t, b in leaves(leaker.data) if t == "text/plain").decode()
    excerpt = " ".join(text.split(" ")[100:250])
    (tmp_path / "leak.txt").write_text(excerpt)
    p = run("decode", "--json", "--config", str(cfg), str(tmp_path / "leak.txt"))
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["verdict"] == "identified"
    assert rep["candidates"][0]["recipient"] == leaker.rcpt_tos[0]
    assert rep["candidates"][0]["false_match_probability"] <= 1e-6
    assert rep["message"] == {"message_id": "<reorg@example.com>", "subject": "Reorganisation",
                              "date": "Mon, 23 Nov 2026 10:00:00 +0000"}
    assert 1 <= len(rep["candidates"]) <= 10
    # readable report from standard input
    p = run("decode", "--config", str(cfg), "-", stdin=excerpt.encode())
    assert p.returncode == 0 and "IDENTIFIED" in p.stdout and leaker.rcpt_tos[0] in p.stdout
    # unrelated text
    p = run("decode", "--json", "--config", str(cfg), "-",
            stdin=b"Completely unrelated words about gardening and tomatoes in the spring.")
    rep = json.loads(p.stdout)
    assert rep["verdict"] == "no_match" and rep["message"] is None and rep["candidates"] == []


def test_render_report_no_match_and_inconclusive() -> None:
    assert "NO MATCH" in render_report({"verdict": "no_match", "message": None,
                                        "candidates": [], "other_messages": [], "excerpts": [],
                                        "recipients_scored": 0, "threshold": 1e-6})
    rep = {"verdict": "inconclusive", "message": {"subject": "S", "date": None,
                                                  "message_id": "<m>"},
           "candidates": [{"recipient": "a@example.com", "bits_observed": 10,
                           "bits_matching": 9, "false_match_probability": 0.4}],
           "other_messages": [], "excerpts": [{"words": 20, "words_aligned": 20,
                                                "bits_observed": 10}],
           "recipients_scored": 5, "threshold": 1e-6}
    out = render_report(rep)
    assert "INCONCLUSIVE" in out and "a@example.com" in out and "0.4" in out


def test_render_report_says_where_the_text_travelled() -> None:
    """The report says which later message carried the text and from whose copy, and that a
    match with that copy does not show a leak."""
    rep = {"verdict": "inconclusive", "message": {"subject": "Plans", "date": "Mon",
                                                  "message_id": "<m>"},
           "candidates": [{"recipient": "x@example.com", "bits_observed": 90,
                           "bits_matching": 90, "false_match_probability": 1e-20}],
           "other_messages": [], "excerpts": [{"words": 100, "words_aligned": 100,
                                                "bits_observed": 90}],
           "recipients_scored": 300, "threshold": 1e-6,
           "provenance": [{"message": {"subject": "FW: Plans", "date": "Tue",
                                       "message_id": "<f>"},
                           "sender": "x@example.com", "contains": {"subject": "Plans",
                                                                   "date": "Mon",
                                                                   "message_id": "<m>"},
                           "from_copy_of": "x@example.com", "explains_top_candidate": True}]}
    out = render_report(rep)
    assert "Travelled: FW: Plans (Tue, sent by x@example.com) carries the text of Plans, made " \
           "from the copy of x@example.com." in out
    assert "x@example.com sent this text on to all staff" in out


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_suffix_selects_ocr(tmp_path: Path, suffix: str) -> None:
    bad = tmp_path / f"shot{suffix}"
    bad.write_bytes(b"not an image")
    (tmp_path / "relay.key").write_text("k1 " + "00" * 32 + "\n")
    (tmp_path / "relay.key").chmod(0o600)
    from relay.store import Store

    Store(tmp_path / "relay.db").close()
    p = run("decode", "--db", str(tmp_path / "relay.db"), str(bad), cwd=tmp_path)
    # a garbage image is read by the OCR path (no text comes out), never as UTF-8 text
    assert p.returncode in (0, 1), p.stderr
    assert "Traceback" not in p.stderr


# --- hostile input: image bombs, huge text, terminal escapes ---------------------------------

def decode_peak_rss_mib(*args: str, cwd: Path) -> tuple[int, float]:
    """(exit status, peak RSS in MiB) of `relay decode ARGS` and any child it waited for."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "relay", "decode", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


@pytest.mark.parametrize("name,make,needle", [
    ("bomb.png", lambda: bombs.png_bomb(20_000, 20_000), "20000 x 20000"),
    ("big.jpg", lambda: bombs.jpeg_claiming(12_000, 12_000), "12000 x 12000"),
    ("wide.tiff", lambda: bombs.pillow_image("TIFF", 4_000, 4_000, frames=2), "2 pages"),
])
def test_decode_refuses_image_bombs_in_one_line(tmp_path: Path, name: str, make, needle: str
                                                ) -> None:
    f = tmp_path / name
    f.write_bytes(make())
    # no database or key needed: the image is refused from its header first
    p = run("decode", "--db", str(tmp_path / "none.db"), str(f), cwd=tmp_path)
    one_line_error(p, 1, name, needle, "megapixels")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    q = subprocess.run([sys.executable, "-m", "relay", "decode", "--image", "-"],  # stdin
                       input=f.read_bytes(), capture_output=True, timeout=120, cwd=tmp_path,
                       env=env)
    assert q.returncode == 1 and b"megapixels" in q.stderr and b"Traceback" not in q.stderr
    code, peak = decode_peak_rss_mib("--db", str(tmp_path / "none.db"), str(f), cwd=tmp_path)
    assert code == 1 and peak < 500  # before the header check: 3,100-6,200 MiB


def test_decode_refuses_text_over_the_size_limit(tmp_path: Path) -> None:
    from relay.cli import MAX_TEXT_BYTES

    f = tmp_path / "huge.txt"
    f.write_bytes(b"word " * (MAX_TEXT_BYTES // 5 + 1))
    one_line_error(run("decode", "--db", str(tmp_path / "x.db"), str(f)), 1, "huge.txt",
                   "1 MiB")


def test_report_escapes_terminal_controls() -> None:
    hostile = "Hi\x1b]0;owned\x07\x1b[2J\x9b31m \u202egnp.exe"
    rep = {"verdict": "identified",
           "message": {"subject": hostile, "date": "\x1b[1m", "message_id": "<m\x9b>"},
           "candidates": [{"recipient": "b\u202eob@example.com", "bits_observed": 40,
                           "bits_matching": 40, "false_match_probability": 1e-9}],
           "other_messages": [{"subject": "\x1b[K", "date": "d", "message_id": "<o>"}],
           "excerpts": [{"words": 60, "words_aligned": 60, "bits_observed": 40}],
           "recipients_scored": 5, "threshold": 1e-6}
    out = render_report(rep)
    from relay.printable import has_unsafe

    assert not has_unsafe(out.replace("\n", ""))
    assert "Hi\\x1b]0;owned\\x07\\x1b[2J\\x9b31m \\u202egnp.exe" in out
    assert "b\\u202eob@example.com" in out
