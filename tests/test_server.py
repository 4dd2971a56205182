"""The SMTP side of `relay serve`, end to end over loopback: relay in-process (and once as a
subprocess), a recording aiosmtpd sink as the upstream."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
from pathlib import Path

import aiosmtplib
import pytest
from conftest import Client, Sink, StartRelay, make_message, smtp_send, start_sink

from relay.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent


async def test_ordinary_mail_is_byte_identical(relay, sink: Sink) -> None:
    data = make_message(to="bob@example.com", body=(
        ".leading dot line\r\n..two dots\r\nGrüße aus Köln, 8-bit text\r\n"
        "trailing spaces   \r\n\ttab\r\n" + "x" * 990 + "\r\n"))
    reply = await smtp_send(relay.port, "boss@example.com",
                            ["bob@example.com", "Carol@Example.com"], data,
                            mail_options="BODY=8BITMIME")
    assert reply.startswith("250 ")
    assert len(sink.messages) == 1
    m = sink.messages[0]
    assert m.data == data
    assert m.mail_from == "boss@example.com"
    assert m.rcpt_tos == ["bob@example.com", "Carol@Example.com"]
    assert "BODY=8BITMIME" in m.mail_options


async def test_smtputf8_and_8bitmime_end_to_end(relay, sink: Sink) -> None:
    data = make_message(to="jürgen@exämple.de", subject="Grüße")
    reply = await smtp_send(relay.port, "zoë@example.com", ["jürgen@exämple.de"], data,
                            mail_options="BODY=8BITMIME SMTPUTF8")
    assert reply.startswith("250")
    m = sink.messages[0]
    assert m.mail_from == "zoë@example.com" and m.rcpt_tos == ["jürgen@exämple.de"]
    assert set(m.mail_options) >= {"BODY=8BITMIME", "SMTPUTF8"}
    assert m.data == data


async def test_size_limit(cfg: Config, start_relay: StartRelay, sink: Sink) -> None:
    relay = await start_relay(cfg.with_keys(listen=dict(max_message_size=4096)))
    big = make_message(to="b@example.com", body="y" * 80 + "\r\n" * 1 + ("z" * 70 + "\r\n") * 80)
    reply = await smtp_send(relay.port, "a@example.com", ["b@example.com"], big)
    assert reply.startswith("552")
    reply = await smtp_send(relay.port, "a@example.com", ["b@example.com"], b"x\r\n",
                            mail_options="SIZE=5000")
    assert reply.startswith("552")
    assert sink.messages == []
    small = make_message(to="b@example.com", body="short")
    assert (await smtp_send(relay.port, "a@example.com", ["b@example.com"], small)
            ).startswith("250")


async def test_upstream_down_gives_451(base_cfg: Config, start_relay: StartRelay) -> None:
    relay = await start_relay(base_cfg)  # nothing listens on base_cfg.upstream.port
    reply = await smtp_send(relay.port, "a@example.com", ["b@example.com"],
                            make_message(to="b@example.com"))
    assert reply.startswith("451")
    reply = await smtp_send(relay.port, "a@example.com",
                            [f"u{i}@example.com" for i in range(25)], make_message())
    assert reply.startswith("451")


async def test_key_file_and_database_are_private(relay, cfg: Config, sink: Sink) -> None:
    await smtp_send(relay.port, "a@example.com", ["b@example.com"], make_message())
    assert stat.S_IMODE(os.stat(cfg.signature.key_file).st_mode) == 0o600
    for f in [cfg.store.path, *cfg.store.path.parent.glob(cfg.store.path.name + "-*")]:
        assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f


async def test_startup_errors_are_one_line(base_cfg: Config, start_relay: StartRelay,
                                           tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="members file"):
        await start_relay(base_cfg.with_keys(
            policy=dict(members={"l@example.com": tmp_path / "none.txt"})))
    from relay.keys import KeyFileError
    from relay.store import StoreError

    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="dir.db"):
        await start_relay(base_cfg.with_keys(store=dict(path=tmp_path / "dir.db")))
    loose = tmp_path / "loose.key"
    loose.write_text("k1 " + "ab" * 32 + "\n")
    loose.chmod(0o644)
    with pytest.raises(KeyFileError, match="0600"):
        await start_relay(base_cfg.with_keys(signature=dict(key_file=loose)))
    blocker = await start_sink()
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            await start_relay(base_cfg.with_keys(listen=dict(port=blocker.port)))
    finally:
        await blocker.close()


async def test_aiosmtplib_client_roundtrip(relay, sink: Sink) -> None:
    # an ordinary library client (with its own EHLO/SIZE handling) works too
    data = make_message(to="b@example.com")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False) as s:
        errors, _ = await s.sendmail("a@example.com", ["b@example.com"], data)
    assert errors == {}
    assert sink.messages[0].data == data


# --- the command line -------------------------------------------------------------------------

def write_config(path: Path, upstream_port: int, extra: str = "") -> Path:
    path.write_text(
        '[listen]\nhost = "127.0.0.1"\nport = 0\nhostname = "relay.test"\n'
        f'[upstream]\nhost = "127.0.0.1"\nport = {upstream_port}\ntimeout = 5\n'
        'concurrency = 2\n'
        '[store]\npath = "var/relay.db"\n[signature]\nkey_file = "var/relay.key"\n' + extra)
    return path


async def start_cli(config: Path) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "serve", "--config", str(config),
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        if not line:
            raise AssertionError("relay exited before listening")
        m = re.search(rb"listening on [^ ]+:(\d+)", line)
        if m:
            return proc, int(m.group(1))


async def drain(stream: asyncio.StreamReader | None) -> bytes:
    return await stream.read() if stream is not None else b""


async def test_cli_serve_subprocess(tmp_path: Path, sink: Sink) -> None:
    conf = write_config(tmp_path / "config.toml", sink.port)
    proc, port = await start_cli(conf)
    try:
        data = make_message(to="b@example.com")
        assert (await smtp_send(port, "a@example.com", ["b@example.com"], data)).startswith("250")
        assert sink.messages[0].data == data
        assert stat.S_IMODE(os.stat(tmp_path / "var" / "relay.key").st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
    err = (await drain(proc.stderr)).decode()
    assert rc == 0, err
    assert "from=<a@example.com>" in err and "Quarterly" not in err  # logged, without subject


async def test_cli_config_error_is_one_line(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "config.toml", 1,
                        '[policy]\nmembers = { "l@example.com" = "missing.txt" }\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "serve", "--config", str(conf), cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert err.decode().count("\n") == 1 and "missing.txt" in err.decode()


# --- graceful stop ---------------------------------------------------------------------------

STAFF = [f"member{i}@example.com" for i in range(40)]


async def test_stop_answers_open_data_and_restart_resumes(cfg: Config, start_relay: StartRelay,
                                                          sink: Sink) -> None:
    relay = await start_relay(cfg.with_keys(upstream=dict(concurrency=2)))
    sink.data_delay = 0.05
    data = make_message()
    idle = await Client.connect(relay.port)
    await idle.reply()
    task = asyncio.create_task(smtp_send(relay.port, "boss@example.com", STAFF, data))
    while len(sink.messages) < 4:
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await relay.stop(grace=10)
    reply = await task
    assert reply.startswith("451 4.3.2"), reply
    assert loop.time() - t0 < 5
    assert (await idle.reply()).startswith("421")  # idle sessions are told, then closed
    await idle.close()
    delivered = len(sink.messages)
    assert 4 <= delivered < len(STAFF)
    # a new process on the same database: the retry sends only the missing copies
    relay2 = await start_relay(cfg.with_keys(upstream=dict(concurrency=4)))
    sink.data_delay = 0
    assert (await smtp_send(relay2.port, "boss@example.com", STAFF, data)).startswith("250")
    got = sorted(r for m in sink.messages for r in m.rcpt_tos)
    assert got == sorted(STAFF)


async def test_sigterm_during_fanout(tmp_path: Path, sink: Sink) -> None:
    conf = write_config(tmp_path / "config.toml", sink.port)
    proc, port = await start_cli(conf)
    sink.data_delay = 0.1  # 40 copies over 2 connections: about 2 s of fan-out
    loop = asyncio.get_running_loop()
    try:
        task = asyncio.create_task(smtp_send(port, "boss@example.com", STAFF, make_message()))
        while len(sink.messages) < 2:
            await asyncio.sleep(0.01)
        t0 = loop.time()
        proc.send_signal(signal.SIGTERM)
        # README: "every open DATA gets 250 or 451 within about 20 s, exit 0"
        reply = await asyncio.wait_for(task, 20)
        assert reply[:3] in ("250", "451"), reply
        rc = await asyncio.wait_for(proc.wait(), max(0.1, 20 - (loop.time() - t0)))
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len({m.rcpt_tos[0] for m in sink.messages}) == len(sink.messages)


# --- STARTTLS and AUTH -----------------------------------------------------------------------

def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("relay.test")]), False)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


async def test_starttls(cfg: Config, start_relay: StartRelay, sink: Sink,
                        tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    relay = await start_relay(cfg.with_keys(listen=dict(tls_cert=cert, tls_key=key)))
    data = make_message(to="b@example.com")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=True,
                               validate_certs=False) as s:
        assert s.get_transport_info("sslcontext") is not None  # the session is encrypted
        await s.sendmail("a@example.com", ["b@example.com"], data)
    assert sink.messages[0].data == data


async def test_starttls_required_beyond_loopback(cfg: Config, start_relay: StartRelay,
                                                 sink: Sink, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    relay = await start_relay(cfg.with_keys(listen=dict(host="0.0.0.0", tls_cert=cert,
                                                        tls_key=key)))
    c = await Client.connect(relay.port)
    await c.reply()
    assert "STARTTLS" in await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<a@example.com>")).startswith("530")
    await c.close()


async def test_auth_only_over_tls(cfg: Config, start_relay: StartRelay, sink: Sink,
                                  tmp_path: Path) -> None:
    from relay.passwords import hash_password

    cert, key = make_cert(tmp_path)
    users = tmp_path / "users"
    users.write_text(f"# users\nalice:{hash_password('s3cret', ln=10)}\n")
    relay = await start_relay(cfg.with_keys(listen=dict(tls_cert=cert, tls_key=key,
                                                        auth_file=users)))
    c = await Client.connect(relay.port)
    await c.reply()
    ehlo = await c.cmd("EHLO client.test")
    assert "AUTH" not in ehlo  # not before TLS
    assert (await c.cmd("AUTH PLAIN AGFsaWNlAHMzY3JldA==")).startswith("538")
    assert (await c.cmd("MAIL FROM:<a@example.com>")).startswith("530")
    await c.close()

    data = make_message(to="b@example.com")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=True,
                               validate_certs=False) as s:
        await s.ehlo()
        assert s.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await s.login("alice", "wrong")
        with pytest.raises(aiosmtplib.SMTPSenderRefused):
            await s.sendmail("a@example.com", ["b@example.com"], data)
        await s.login("alice", "s3cret")
        await s.sendmail("a@example.com", ["b@example.com"], data)
    assert [m.data for m in sink.messages] == [data]


# --- hostile sessions: AUTH, connection limits, log floods ----------------------------------

async def tls_client(port: int, source: str = "127.0.0.1") -> Client:
    """A raw client after EHLO, STARTTLS, EHLO (no certificate check)."""
    import ssl

    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    c = Client(r, w)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("STARTTLS")).startswith("220")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    await w.start_tls(ctx)
    assert "AUTH" in await c.cmd("EHLO client.test")
    return c


def plain(user: str, password: str) -> str:
    import base64

    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def auth_relay(cfg: Config, start_relay: StartRelay, tmp_path: Path, ln: int = 10,
                     **kw: object) -> object:
    from relay.passwords import hash_password

    cert, key = make_cert(tmp_path)
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('s3cret', ln=ln)}\n")
    listen = dict(tls_cert=cert, tls_key=key, auth_file=users, **kw)
    return await start_relay(cfg.with_keys(listen=listen))


async def test_auth_failures_end_the_session_at_the_third(cfg: Config, start_relay: StartRelay,
                                                          sink: Sink, tmp_path: Path) -> None:
    relay = await auth_relay(cfg, start_relay, tmp_path)
    c = await tls_client(relay.port)
    assert (await c.cmd(plain("alice", "wrong1"))).startswith("535")
    assert (await c.cmd(plain("bob", "wrong2"))).startswith("535")
    assert (await c.cmd(plain("alice", "wrong3"))).startswith("421 4.7.0")
    assert await asyncio.wait_for(c.reader.read(), 10) == b""  # closed
    await c.close()
    # a new session may try again, and the right password still works
    c = await tls_client(relay.port)
    assert (await c.cmd(plain("alice", "s3cret"))).startswith("235")
    await c.close()


async def test_auth_backs_off_per_client_address(cfg: Config, start_relay: StartRelay,
                                                 sink: Sink, tmp_path: Path) -> None:
    relay = await auth_relay(cfg, start_relay, tmp_path)
    fails = 0
    for _ in range(2):
        c = await tls_client(relay.port, "127.0.0.2")
        for _ in range(3):
            r = await c.cmd(plain("alice", "wrong"))
            fails += 1
            if r.startswith("421"):
                break
        await c.close()
    assert fails == 6  # 5 free failures, the 6th started the backoff
    c = await tls_client(relay.port, "127.0.0.2")
    t = asyncio.get_running_loop().time()
    # even the right password is not checked during the backoff: no hash, no guess
    assert (await c.cmd(plain("alice", "s3cret"))).startswith("421 4.7.0")
    assert asyncio.get_running_loop().time() - t < 5
    await c.close()
    c = await tls_client(relay.port, "127.0.0.3")  # another client is not affected
    assert (await c.cmd(plain("alice", "s3cret"))).startswith("235")
    await c.close()


async def test_unknown_user_costs_as_much_as_a_known_one(cfg: Config, start_relay: StartRelay,
                                                          sink: Sink, tmp_path: Path) -> None:
    relay = await auth_relay(cfg, start_relay, tmp_path, ln=14)
    loop = asyncio.get_running_loop()

    async def refusal(user: str) -> float:
        c = await tls_client(relay.port, f"127.0.1.{len(times[user]) + 1}")
        t = loop.time()
        assert (await c.cmd(plain(user, "wrong"))).startswith("535")
        dt = loop.time() - t
        await c.close()
        return dt

    times: dict[str, list[float]] = {"alice": [], "nobody": []}
    for _ in range(5):
        for user in times:
            times[user].append(await refusal(user))
    import statistics

    known, unknown = (statistics.median(times[u]) for u in ("alice", "nobody"))
    # an scrypt check (ln=14) for both; without the dummy hash unknown was about 300x faster
    assert 0.5 < unknown / known < 2, times


async def test_password_hashing_does_not_block_other_sessions(
        cfg: Config, start_relay: StartRelay, sink: Sink, tmp_path: Path) -> None:
    relay = await auth_relay(cfg, start_relay, tmp_path, ln=16)  # about 1 s per check here
    c = await tls_client(relay.port)
    other = await Client.connect(relay.port)
    await other.reply()
    await other.cmd("EHLO other.test")
    c.writer.write((plain("alice", "wrong") + "\r\n").encode())
    await c.writer.drain()
    await asyncio.sleep(0.1)  # the check is running
    auth = asyncio.ensure_future(c.reply())
    # the other session is answered while the hash is computed, not after it
    assert (await other.cmd("NOOP")).startswith("250")
    assert not auth.done()
    assert (await auth).startswith("535")
    await c.close()
    await other.close()


def test_aiosmtpd_warnings_are_throttled() -> None:
    import logging

    from relay.server import _OncePerInterval

    f = _OncePerInterval()
    recs = [logging.LogRecord("mail.log", logging.WARNING, __file__, 1, "%r unrecognised: %s",
                              (("127.0.0.1", i), "XYZ"), None) for i in range(100)]
    assert sum(f.filter(r) for r in recs) == 1


async def test_no_dsn_to_a_list_address_sender(relay, sink: Sink, caplog) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="relay")
    sink.rcpt_replies["b@example.com"] = "550 5.1.1 no such user"
    data = make_message(to="c@example.com", sender="all-staff@example.com")
    reply = await smtp_send(relay.port, "all-staff@example.com",
                            ["b@example.com", "c@example.com"], data)
    assert reply.startswith("250"), reply
    assert [m.rcpt_tos for m in sink.messages] == [["c@example.com"]]  # and no notice from <>
    assert any("no notice: the envelope sender is a list address" in r.getMessage()
               for r in caplog.records)
    # an ordinary sender still gets its notice
    reply = await smtp_send(relay.port, "boss@example.com",
                            ["b@example.com", "c@example.com"], make_message(to="c@example.com"))
    assert reply.startswith("250") and sink.messages[-1].mail_from == "<>"
