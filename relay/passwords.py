"""SMTP AUTH passwords: the auth file (`[listen] auth_file`, one `user:HASH` a line), hashing
and checking (scrypt or PBKDF2, constant time), and the dummy hash that makes an unknown user
cost as much as a known one."""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from .config import ConfigError
from .policy import read_text

# --- SMTP AUTH (offered only over TLS) ----------------------------------------------------------
#
# `[listen] auth_file`: one user per line, `user:HASH`, `#` comments. HASH is
#   $scrypt$ln=14,r=8,p=1$<salt, base64>$<key, base64>          (hashlib.scrypt, 32-byte key)
#   $pbkdf2-sha256$<iterations>$<salt, base64>$<key, base64>    (hashlib.pbkdf2_hmac)
# Make one with: python -c "from relay.passwords import hash_password; print(hash_password('pw'))"

def hash_password(password: str, *, salt: bytes | None = None, ln: int = 14) -> str:
    """An scrypt hash line for the auth file (without the `user:` prefix)."""
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=8, p=1,
                         maxmem=256 * 1024 * 1024, dklen=32)
    b64 = base64.b64encode
    return f"$scrypt$ln={ln},r=8,p=1${b64(salt).decode()}${b64(key).decode()}"


def _check_hash(stored: str) -> None:
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] != "":
        raise ValueError("expected $scheme$params$salt$key")
    scheme, params, salt, key = parts[1:]
    base64.b64decode(salt, validate=True)
    base64.b64decode(key, validate=True)
    if scheme == "scrypt":
        p = dict(kv.split("=", 1) for kv in params.split(","))
        if set(p) != {"ln", "r", "p"} or not all(v.isdigit() for v in p.values()) \
                or not 1 <= int(p["ln"]) <= 20:
            raise ValueError("scrypt parameters must be ln=N,r=N,p=N")
    elif scheme == "pbkdf2-sha256":
        if not params.isdigit() or int(params) < 1000:
            raise ValueError("pbkdf2-sha256 needs an iteration count of at least 1000")
    else:
        raise ValueError(f"unknown hash scheme {scheme!r} (scrypt or pbkdf2-sha256)")


def verify_password(password: bytes, stored: str) -> bool:
    """Constant-time check of a password against an auth-file hash."""
    try:
        _check_hash(stored)
    except ValueError:
        return False
    scheme, params, salt_b64, key_b64 = stored.split("$")[1:]
    salt, key = base64.b64decode(salt_b64), base64.b64decode(key_b64)
    if scheme == "scrypt":
        p = {k: int(v) for k, v in (kv.split("=", 1) for kv in params.split(","))}
        got = hashlib.scrypt(password, salt=salt, n=1 << p["ln"], r=p["r"], p=p["p"],
                             maxmem=256 * 1024 * 1024, dklen=len(key))
    else:
        got = hashlib.pbkdf2_hmac("sha256", password, salt, int(params), dklen=len(key))
    return hmac.compare_digest(got, key)


def dummy_hash(stored: Iterable[str]) -> str:
    """A hash nobody's password matches, with the parameters most of `stored` use: checking an
    unknown user against it costs what checking a known one does."""
    params = collections.Counter("$".join(h.split("$")[:3]) for h in stored)
    head = params.most_common(1)[0][0] if params else "$scrypt$ln=14,r=8,p=1"
    b64 = base64.b64encode
    return f"{head}${b64(os.urandom(16)).decode()}${b64(os.urandom(32)).decode()}"


def load_auth_file(path: Path) -> dict[str, str]:
    """user -> hash; ConfigError naming the file (and line) for any problem."""
    text = read_text(path, "auth file")
    users: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user:
            raise ConfigError(f"{path}: line {n}: expected user:$scheme$params$salt$key")
        try:
            _check_hash(stored)
        except ValueError as e:
            raise ConfigError(f"{path}: line {n}: {e}") from None
        users[user] = stored
    if not users:
        raise ConfigError(f"{path}: no user in auth file")
    return users
