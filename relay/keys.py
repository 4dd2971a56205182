"""The signature key file: created mode 0600 from the first byte, rotatable.

Format: one key per line, `<key-id> <64 hex digits>`; the last line signs new mail, every line
still decodes the mail it signed. `relay rotate-key` appends a line.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import CANNOT_RUN, RelayError


class KeyFileError(RelayError):
    """A user-visible problem with the key file (missing, malformed, not mode 0600)."""

    exit_status = CANNOT_RUN


@dataclass(frozen=True)
class Keyring:
    keys: tuple[tuple[str, bytes], ...]

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[-1]

    def get(self, key_id: str) -> bytes:
        for kid, k in self.keys:
            if kid == key_id:
                return k
        raise KeyFileError(f"key {key_id!r} is not in the key file (was it rotated out?)")


def _new_line() -> str:
    return f"{secrets.token_hex(4)} {secrets.token_hex(32)}\n"


def _write_new(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load(path: Path, create: bool = False) -> Keyring:
    if create and not path.exists():
        try:
            _write_new(path, _new_line())
        except FileExistsError:
            pass
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create key file: {e.strerror}") from None
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file: {e.strerror}") from None
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) != 2 or len(parts[1]) != 64:
                raise ValueError
            keys.append((parts[0], bytes.fromhex(parts[1])))
        except ValueError:
            raise KeyFileError(f"{path}: line {n}: expected '<key-id> <64 hex digits>'") from None
    if not keys:
        raise KeyFileError(f"{path}: no key in key file")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"{path}: key file is mode {mode:o}; it must be 0600 (chmod 600 {path})")
    return Keyring(tuple(keys))


def rotate(path: Path) -> str:
    """Append a new key; returns its id. Older keys stay for decoding."""
    try:
        if not path.exists():
            _write_new(path, _new_line())
        else:
            load(path)  # refuses a malformed or exposed file before a new secret goes into it
            with open(path, "a") as f:
                f.write(_new_line())
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise KeyFileError(f"{path}: cannot write key file: {e.strerror}") from None
    return load(path).current[0]
