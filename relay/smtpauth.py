"""SMTP AUTH (PLAIN, LOGIN) against the `[listen] auth_file` users: only after STARTTLS, and
then required (format: relay.passwords). Hashes are checked on a small thread pool, never on
the event loop; failures end the session at the 3rd and back off per client address
(relay.limits.Backoff).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from . import limits
from .passwords import dummy_hash, verify_password

if TYPE_CHECKING:
    from .handler import Handler
    from .session import RelaySMTP

log = logging.getLogger("relay")


def credentials(data: Any) -> tuple[str | None, bytes]:
    """(user, password) from what aiosmtpd parsed out of AUTH PLAIN or LOGIN; user None when
    the login is not UTF-8 (or nothing was parsed), password b"" when there is none: such an
    attempt is checked against the dummy hash and fails like any other."""
    user: str | None = None
    password = b""
    if isinstance(data, LoginPassword):
        password = data.password
        try:
            user = data.login.decode("utf-8")
        except UnicodeDecodeError:
            user = None
    return user, password


class Authenticator:
    """AUTH PLAIN / LOGIN over the `[listen] auth_file` users (only after STARTTLS).

    * Hashes are checked on a pool of WORKERS threads (scrypt and PBKDF2 release the GIL),
      never on the event loop; at most MAX_PENDING checks wait at once, an attempt beyond that
      gets `454 4.7.0` at once, so attackers cannot queue up unbounded work.
    * An unknown user is checked against a dummy hash of the same cost: the time to refuse
      does not tell which users exist.
    * The 3rd failure in a session is answered `421 4.7.0` and closes it; per client address
      (limits.Backoff) after 5 failures each further attempt must wait 1, 2, 4... up to 300 s
      after the last failure, and is answered `421 4.7.0` (no hash computed) until then.
    """

    WORKERS = 2
    MAX_PENDING = 8

    def __init__(self, users: dict[str, str], handler: Handler | None = None) -> None:
        self.users = users
        self.handler = handler
        self.backoff = limits.Backoff()
        self.pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="relay-auth")
        self.pending = 0

    @property
    def users(self) -> dict[str, str]:
        return self._users

    @users.setter
    def users(self, users: dict[str, str]) -> None:
        self._users = users
        self.dummy = dummy_hash(users.values())

    def _warn(self, line: str, key: str) -> None:
        if self.handler is not None:
            self.handler.warn(line, key)
        else:
            log.warning("%s", line)

    async def check(self, server: RelaySMTP, data: Any) -> AuthResult:
        loop = asyncio.get_running_loop()
        client = server.client
        if self.backoff.wait(client, loop.time()) > 0:
            self._warn(f"AUTH from {client} refused: too many failures, backing off",
                       f"auth backoff {client}")
            server.auth_close = True
            return AuthResult(success=False, handled=False, message=(
                "421 4.7.0 too many failed authentications from your address, "
                "try again later"))
        if self.pending >= self.MAX_PENDING:
            return AuthResult(success=False, handled=False,
                              message="454 4.7.0 temporary authentication failure, try again later")
        user, password = credentials(data)
        stored = self.users.get(user) if user is not None else None
        self.pending += 1
        try:
            ok = await loop.run_in_executor(self.pool, verify_password, password,
                                            stored if stored is not None else self.dummy)
        finally:
            self.pending -= 1
        if ok and stored is not None:
            return AuthResult(success=True, auth_data=user)
        self.backoff.fail(client, loop.time())
        server.auth_failures += 1
        shown = ascii(user[:64]) if user is not None else "(not UTF-8)"
        self._warn(f"authentication failed for {shown} from {client}", f"auth failed {client}")
        if server.auth_failures >= limits.AUTH_FAILURES_PER_SESSION:
            server.auth_close = True
            return AuthResult(success=False, handled=False,
                              message="421 4.7.0 too many failed authentications, closing")
        return AuthResult(success=False, handled=False)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
