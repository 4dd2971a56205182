"""A private PostgreSQL cluster for the tests, and the `backend` fixture that runs a test on
SQLite and on PostgreSQL.

`pg_server` (session): initdb in a temporary folder, the server on 127.0.0.1 and a free port,
its unix socket in that folder, stopped and removed at the end of the session. The binaries are
found through `pg_config --bindir` or /usr/lib/postgresql/<version>/bin (Debian's `postgresql`
package); as root, initdb and pg_ctl run as the `postgres` user (initdb refuses root). Loopback
is trusted, except for the role `relay_pw`, which must give its password (scram-sha-256).
Each test gets its own database (`new_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config

INSTALL = "bash .ci/install-system-deps (Debian package postgresql)"
PASSWORD_ROLE = "relay_pw"


def bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, newest version first."""
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        p = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if p.returncode == 0:
            found.append(Path(p.stdout.strip()))

    def version(d: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in d.parent.name.split(".") if x.isdigit())

    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for d in found:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


class PgServer:
    """One cluster; `url(db)` for the relay, `stop()`/`start()` for outage tests."""

    def __init__(self, bin_dir: Path, port: int, durable: bool = False) -> None:
        self.bin = bin_dir
        self.port = port
        self.durable = durable  # fsync on (bench/store_backends.py); off for the tests
        self.dir = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and no `postgres` user to run initdb as "
                                   f"({INSTALL})") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            runuser = (shutil.which("runuser")
                       or shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin"))
            if runuser is None:
                raise RuntimeError("running as root and no runuser (util-linux) to run "
                                   "initdb as `postgres`")
            self.as_user = [runuser, "-u", "postgres", "--"]
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        p = subprocess.run([*self.as_user, *args], capture_output=True, text=True,
                           check=False, timeout=120)
        if p.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {p.stdout}{p.stderr}{tail}")

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n")
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def admin(self) -> object:
        import psycopg

        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True)

    def new_database(self, owner: str = "postgres") -> str:
        name = f"t{next(self._names)}"
        with self.admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'CREATE DATABASE {name} OWNER "{owner}"')
        return name

    def url(self, db: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    from conftest import free_port

    found = bindir()
    if found is None:  # as conftest.require_tool: skipped on a laptop, a failure in CI
        why = f"PostgreSQL server binaries (initdb, pg_ctl) not installed ({INSTALL})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and a required tool is missing: {why}", pytrace=False)
        pytest.skip(why)
    server = PgServer(found, free_port())
    try:
        server.init()
        yield server
    finally:
        server.destroy()


@dataclass(frozen=True)
class Backend:
    """Where a test's log lives: an SQLite file (url None) or a fresh PostgreSQL database."""

    name: str
    url: str | None
    server: PgServer | None = None

    def config(self, cfg: Config) -> Config:
        return cfg.with_keys(store=dict(url=self.url))

    def store(self, path: Path) -> Any:
        from relay.store import Store

        return Store(path, url=self.url)

    def another(self) -> Backend:
        """A second, empty log on the same backend."""
        if self.server is None:
            return self
        return replace(self, url=self.server.url(self.server.new_database()))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", None)
    server: PgServer = request.getfixturevalue("pg_server")
    return Backend("postgresql", server.url(server.new_database()), server)
