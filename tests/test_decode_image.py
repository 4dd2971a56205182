"""`relay decode SCREENSHOT`: a recipient's copy rendered by real Chromium, read by real
Tesseract through the CLI, names that recipient."""

from __future__ import annotations

import email
import email.policy
import html
import json
import os
import re
import subprocess
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import require_tool
from render import chromium_path, html_mail, page_height, plain_mail, render_html

from relay.fingerprint import prepare
from relay.scheme import SCHEME
from relay.store import ACCEPTED, Store

ROOT = Path(__file__).resolve().parent.parent
KEY_HEX = "5a" * 32


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tool("chromium", chromium_path())
    require_tool("tesseract")


def paragraphs() -> list[str]:
    text = Path("/usr/share/common-licenses/GPL-3").read_text()
    paras = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n\n")]
    return [p for p in paras if len(p.split()) > 40][4:8]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("img")
    paras = paragraphs()
    m = EmailMessage()
    m["From"] = "ceo@example.com"
    m["To"] = "all-staff@example.com"
    m["Subject"] = "Licensing"
    m.set_content("\n\n".join(textwrap.fill(p, 72) for p in paras))
    m.add_alternative("<html><body>" + "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
                      + "</body></html>", subtype="html")
    raw = m.as_bytes().replace(b"\n", b"\r\n")
    key = bytes.fromhex(KEY_HEX)
    p = prepare(raw, "ceo@example.com", "k1", key, SCHEME.with_rate(0.16))
    store = Store(tmp / "relay.db")
    store.record_message(**p.log_entry("ceo@example.com"))
    rcpts = [f"staff{i:04d}@example.com" for i in range(1000)]
    for r in rcpts:
        store.set_copy_states(p.identity, [(r, ACCEPTED, "250 ok")])
    store.close()
    keyfile = tmp / "relay.key"
    keyfile.write_text(f"k1 {KEY_HEX}\n")
    keyfile.chmod(0o600)
    (tmp / "config.toml").write_text('[store]\npath = "relay.db"\n[signature]\n'
                                     'key_file = "relay.key"\n')
    copies = {r: p.copy_for(r) for r in (rcpts[17], rcpts[480], rcpts[999])}
    return tmp, copies


def part(raw: bytes, ctype: str) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = next(p for p in msg.walk() if p.get_content_type() == ctype)
    return body.get_content()


def decode(tmp: Path, image: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "relay", "decode", "--json", "--config",
                        str(tmp / "config.toml"), str(image)], capture_output=True, text=True,
                       timeout=180, env=env, check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("scale,fmt,who", [(1, "png", 0), (2, "jpg", 1)])
def test_html_screenshot_names_recipient(logged: tuple[Path, dict[str, bytes]], scale: int,
                                         fmt: str, who: int) -> None:
    tmp, copies = logged
    leaker = sorted(copies)[who]
    frags = re.findall(r"<p>(.*?)</p>", part(copies[leaker], "text/html"), re.S)[:3]
    assert any("&nbsp; " in f for f in frags)
    png = render_html(html_mail(frags), width=700, height=page_height(24, font_px=15),
                      scale=scale, fmt=fmt)
    shot = tmp / f"shot{scale}.{fmt}"
    shot.write_bytes(png)
    rep = decode(tmp, shot)
    assert rep["verdict"] == "identified", rep
    assert rep["candidates"][0]["recipient"] == leaker
    assert rep["message"]["subject"] == "Licensing"


def test_monospace_plain_screenshot_names_recipient(
        logged: tuple[Path, dict[str, bytes]]) -> None:
    tmp, copies = logged
    leaker = sorted(copies)[2]
    text = part(copies[leaker], "text/plain")
    excerpt = "\n\n".join(text.split("\n\n")[:2])
    png = render_html(plain_mail(excerpt, monospace=True), width=760,
                      height=page_height(excerpt.count("\n") + 3, font_px=14))
    shot = tmp / "plain.png"
    shot.write_bytes(png)
    rep = decode(tmp, shot)
    assert rep["verdict"] == "identified", rep
    assert rep["candidates"][0]["recipient"] == leaker
