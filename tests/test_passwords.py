"""The auth file and password hashes (relay.passwords)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from relay.config import ConfigError
from relay.passwords import hash_password, load_auth_file, verify_password


def test_auth_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_auth_file(tmp_path / "none")
    bad = tmp_path / "bad"
    bad.write_text("alice:plaintext\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_auth_file(bad)
    h = hash_password("pw", ln=10)
    assert verify_password(b"pw", h) and not verify_password(b"pw2", h)
    salt = b"0123456789abcdef"
    key = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 1000)
    p = f"$pbkdf2-sha256$1000${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    assert verify_password(b"pw", p)
