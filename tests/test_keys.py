"""The signature key file: created 0600 from the first byte, rotatable, refused when exposed."""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import keys
from relay.keys import KeyFileError, Keyring

LINE = re.compile(r"^[0-9a-f]{8} [0-9a-f]{64}$")
HEX = "ab" * 32

# Audit hooks cannot be removed; this one only records while a test has switched it on.
_EVENTS: list[tuple[str, tuple[Any, ...]]] = []
_RECORDING: list[bool] = [False]


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _RECORDING[0] and event in ("open", "os.chmod", "os.chown"):
        _EVENTS.append((event, args))


sys.addaudithook(_hook)


@pytest.fixture
def zero_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_created_0600_from_first_byte(tmp_path: Path, zero_umask: None) -> None:
    path = tmp_path / "var" / "sub" / "relay.key"
    _EVENTS.clear()
    _RECORDING[0] = True
    try:
        ring = keys.load(path, create=True)
    finally:
        _RECORDING[0] = False
    # with umask 0 nothing but the creation call itself can have made the mode 0600 ...
    assert mode(path) == 0o600
    # ... and no chmod/fchmod fixed it up afterwards (the file was never readable by others)
    mine = [(e, a) for e, a in _EVENTS if str(a[0]) == str(path) or isinstance(a[0], int)]
    assert not [e for e, _ in mine if e in ("os.chmod", "os.chown")], mine
    creates = [a for e, a in mine if e == "open" and str(a[0]) == str(path)
               and isinstance(a[2], int) and a[2] & os.O_CREAT]
    assert creates, mine
    assert all(a[2] & os.O_EXCL for a in creates)
    # parent folders created, private
    assert path.parent.is_dir()
    assert mode(path.parent) == 0o700
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]), text
    kid, key = ring.current
    assert lines[0] == f"{kid} {key.hex()}"
    assert len(key) == 32


def test_create_does_not_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    first = keys.load(path, create=True)
    again = keys.load(path, create=True)
    assert again == first
    other = keys.load(tmp_path / "other.key", create=True)
    assert other.current != first.current  # keys are random, not derived from the path


def test_missing_without_create(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError) as e:
        keys.load(path)
    assert str(path) in str(e.value)
    assert not path.exists()


def test_rotate_appends_and_old_keys_stay(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    ring1 = keys.load(path, create=True)
    old_id, old_key = ring1.current
    new_id = keys.rotate(path)
    assert new_id != old_id
    ring2 = keys.load(path)
    assert ring2.current[0] == new_id
    assert ring2.get(old_id) == old_key
    assert ring2.get(new_id) != old_key
    third = keys.rotate(path)
    ring3 = keys.load(path)
    assert [k for k, _ in ring3.keys] == [old_id, new_id, third]
    assert ring3.get(old_id) == old_key and ring3.get(new_id) == ring2.get(new_id)
    assert path.read_text().splitlines()[0] == f"{old_id} {old_key.hex()}"
    assert mode(path) == 0o600


def test_rotate_creates_missing_file(tmp_path: Path, zero_umask: None) -> None:
    path = tmp_path / "new" / "relay.key"
    kid = keys.rotate(path)
    assert keys.load(path).current[0] == kid
    assert mode(path) == 0o600


def test_keyring_get_unknown_id() -> None:
    ring = Keyring((("k1", bytes(32)), ("k2", bytes(range(32)))))
    assert ring.current == ("k2", bytes(range(32)))
    assert ring.get("k1") == bytes(32)
    with pytest.raises(KeyFileError) as e:
        ring.get("zz")
    assert "zz" in str(e.value)


@pytest.mark.parametrize("perm", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_exposed_key_file_refused(tmp_path: Path, perm: int) -> None:
    path = tmp_path / "relay.key"
    keys.load(path, create=True)
    os.chmod(path, perm)
    with pytest.raises(KeyFileError) as e:
        keys.load(path)
    assert str(path) in str(e.value) and "600" in str(e.value)


def test_stricter_mode_accepted(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    ring = keys.load(path, create=True)
    os.chmod(path, 0o400)
    assert keys.load(path) == ring


def _keyfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_comments_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = _keyfile(tmp_path, f"# signing keys\n\nold {HEX}\n   \n  # rotated\nnew {'cd' * 32}\n")
    ring = keys.load(path)
    assert ring.keys == (("old", bytes.fromhex(HEX)), ("new", bytes.fromhex("cd" * 32)))


@pytest.mark.parametrize(("text", "line"), [
    ("justone\n", 1),
    (f"# c\n\nk1 {HEX}\nk2 {HEX[:-2]}\n", 4),
    (f"k1 {HEX}\nk2 {'zz' * 32}\n", 2),
    (f"k1 {HEX} extra\n", 1),
    (f"k1 {HEX}\n\nk2{HEX}\n", 3),
    (f"k1 {HEX}0\n", 1),
])
def test_malformed_line_refused_with_number(tmp_path: Path, text: str, line: int) -> None:
    path = _keyfile(tmp_path, text)
    with pytest.raises(KeyFileError) as e:
        keys.load(path)
    assert str(path) in str(e.value)
    assert f"line {line}:" in str(e.value)


def test_file_without_keys_refused(tmp_path: Path) -> None:
    path = _keyfile(tmp_path, "# nothing yet\n\n")
    with pytest.raises(KeyFileError) as e:
        keys.load(path)
    assert str(path) in str(e.value)


def test_rotate_refuses_exposed_file_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    keys.load(path, create=True)
    os.chmod(path, 0o644)
    before = path.read_text()
    with pytest.raises(KeyFileError):
        keys.rotate(path)
    assert path.read_text() == before  # got: a second key line, world-readable


def test_rotate_into_an_unusable_path_is_a_key_file_error(tmp_path: Path) -> None:
    """`relay rotate-key` with key_file under a plain file: one line, exit 1 (was a traceback)."""
    (tmp_path / "afile").write_text("")
    path = tmp_path / "afile" / "relay.key"
    with pytest.raises(KeyFileError, match="cannot write key file"):
        keys.rotate(path)
