"""relay.smtpauth: what an AUTH attempt's parsed credentials are (the checks themselves run
through a real relay in tests/test_server.py)."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import LoginPassword

from relay.smtpauth import credentials


@pytest.mark.parametrize("data,want", [
    (LoginPassword(b"alice", b"s3cret"), ("alice", b"s3cret")),
    (LoginPassword("Zoë".encode(), b"p\xffw"), ("Zoë", b"p\xffw")),
    (LoginPassword(b"\xff\xfe", b"pw"), (None, b"pw")),  # not UTF-8: no such user
    (LoginPassword(b"", b""), ("", b"")),
    (None, (None, b"")),  # nothing parsed
    (b"alice\0pw", (None, b"")),  # anything but aiosmtpd's LoginPassword
])
def test_credentials(data: object, want: tuple[str | None, bytes]) -> None:
    assert credentials(data) == want
