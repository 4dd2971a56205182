"""Running the admin commands as an admin does (shared by tests/test_operator.py and
tests/test_checks.py): `python -m relay ARGS` in a real process, and the TOML for a relay under
test."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from relay.config import Config

ROOT = Path(__file__).resolve().parent.parent
STAFF = [f"member{i}@example.com" for i in range(6)]


async def cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """`python -m relay ARGS` without blocking the loop the relay under test runs on."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", *args, cwd=cwd or ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 120)
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


def one_line(rc: int, err: str, want_rc: int, *needles: str) -> None:
    assert rc == want_rc, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


def write_config(cfg: Config, path: Path, listen_port: int, **extra: str) -> Path:
    """The TOML an admin would have for this relay."""
    sections = {
        "listen": f'host = "127.0.0.1"\nport = {listen_port}\nhostname = "{cfg.listen.hostname}"',
        "upstream": f'host = "127.0.0.1"\nport = {cfg.upstream.port}',
        "policy": 'lists = ["all-staff@example.com"]',
        "store": (f'url = "{cfg.store.url}"' if cfg.store.url else f'path = "{cfg.store.path}"'),
        "signature": f'key_file = "{cfg.signature.key_file}"',
    }
    for k, v in extra.items():
        sections[k] = sections.get(k, "") + "\n" + v
    path.write_text("".join(f"[{k}]\n{v}\n" for k, v in sections.items()))
    return path


