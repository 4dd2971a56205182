"""Configuration: the TOML file, its defaults, and one clear error per bad value.

One frozen dataclass per TOML section (`[listen]` is `Listen`, `[store]` is `StoreConfig`, ...),
its fields named exactly as the section's keys: each key is declared once, there, with its type,
its default and its lower bound. The reader below derives from those declarations which keys a
section knows and how a value is checked; `Config` holds the sections. A component takes only the
section(s) it uses; relay.server.Relay, the composition root, hands them out.

Every user mistake raises ConfigError with a message naming the file and key; the CLI prints it
as one line and exits 2.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn, get_type_hints

from .errors import USAGE, RelayError

PROFILES: dict[str, float] = {
    # share of ordinary word gaps a recipient's copy doubles (exactly, in every block of about
    # 48 word gaps: wordblocks.Blocks)
    "stealth": 0.0,  # sentence gaps only (the 2008 scheme)
    "standard": 1 / 6,  # default: one word gap in six, never more
    "dense": 0.3,
}


NUM = (int, float)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(RelayError):
    """A user-caused configuration problem; str() is the one line to show."""

    exit_status = USAGE


def _at_least(minimum: float, default: Any) -> Any:
    """A key whose value must be at least `minimum`."""
    return field(default=default, metadata={"minimum": minimum})


def _port(default: int) -> Any:
    return field(default=default, metadata={"minimum": 0, "maximum": 65535})


@dataclass(frozen=True)
class Listen:
    """[listen]: the SMTP service the clients see."""

    host: str = "127.0.0.1"
    port: int = _port(10025)
    allow: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                  ipaddress.ip_network("::1/128"))
    hostname: str = "localhost"  # greeting, EHLO upstream, DSN Reporting-MTA
    domains: tuple[str, ...] = ()  # recipient domains accepted; empty = any (from allowed clients)
    max_message_size: int = _at_least(1024, 50 * 1024 * 1024)
    max_recipients: int = _at_least(100, 10000)
    timeout: float = _at_least(10, 300.0)  # a client's idle time, seconds
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_file: Path | None = None
    max_connections: int = _at_least(1, 200)  # open SMTP sessions in all; more get 421 4.7.0
    max_connections_per_client: int = _at_least(1, 50)  # per IPv4 address / IPv6 /64


@dataclass(frozen=True)
class Upstream:
    """[upstream]: the MTA's reinjection listener."""

    host: str = "127.0.0.1"
    port: int = _port(10026)
    concurrency: int = _at_least(1, 8)
    timeout: float = _at_least(1, 60.0)  # seconds per upstream command
    fanout_budget: float = _at_least(1, 240.0)  # seconds of fan-out before temp-failing the rest


@dataclass(frozen=True)
class Policy:
    """[policy]: which mail is fingerprinted, and how much of it is analysed at all."""

    lists: tuple[str, ...] = ("all-staff@example.com",)
    min_recipients: int = _at_least(0, 20)
    members: dict[str, Path] = field(default_factory=dict)  # list address -> members file
    # what is analysed at all: bigger mail is delivered untouched (README, "Hostile input")
    max_message_bytes: int = _at_least(0, 10 * 1024 * 1024)
    max_text_bytes: int = _at_least(0, 256 * 1024)  # decoded size of one text/plain|html part
    analysis_timeout: float = _at_least(1, 20.0)  # seconds; slower leaves the message untouched


@dataclass(frozen=True)
class StoreConfig:
    """[store]: the log. `url` (PostgreSQL) and `path` (SQLite) select different backends."""

    path: Path = Path("var/relay.db")
    keep_days: int = _at_least(0, 730)  # retention of the log; 0 = keep everything
    url: str | None = None  # postgresql://...; when set, `path` is not used


@dataclass(frozen=True)
class Signature:
    """[signature]: the key file and how many word gaps a copy doubles."""

    key_file: Path = Path("var/relay.key")
    profile: str = "standard"

    @property
    def word_rate(self) -> float:
        return PROFILES[self.profile]


@dataclass(frozen=True)
class Decode:
    """[decode]: `relay decode`'s verdict threshold and OCR languages."""

    threshold: float = 1e-6
    ocr_languages: str = "eng+fra"


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: the Prometheus and health endpoint, off unless `listen` is set."""

    listen: tuple[str, int] | None = None  # "HOST:PORT" in the file


@dataclass(frozen=True)
class Config:
    """The whole file: one field per TOML section, and where it was read from."""

    listen: Listen = field(default_factory=Listen)
    upstream: Upstream = field(default_factory=Upstream)
    policy: Policy = field(default_factory=Policy)
    store: StoreConfig = field(default_factory=StoreConfig)
    signature: Signature = field(default_factory=Signature)
    decode: Decode = field(default_factory=Decode)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    source: str = "built-in defaults"

    def with_keys(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys of some sections changed, e.g. `cfg.with_keys(listen={"port":
        0}, store={"path": p})`. The values are taken as given (already parsed): for
        command-line flags and tests. A misspelt section or key is a TypeError."""
        return replace(self, **{name: replace(getattr(self, name), **keys)
                                for name, keys in sections.items()})


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ConfigError naming `what` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"{what}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"{what}: port {p} out of range 0-65535")
    return host, p


# --- reading the file -------------------------------------------------------------------------

# the sections, from Config's fields: [listen] -> Listen, ...
SECTIONS: dict[str, type] = {k: v for k, v in get_type_hints(Config).items() if k != "source"}
_HINTS: dict[str, dict[str, Any]] = {k: get_type_hints(v) for k, v in SECTIONS.items()}

# the TOML type of a key, from its declared type (the keys in _SPECIAL aside)
_PLAIN: dict[Any, type | tuple[type, ...]] = {
    str: str, str | None: str, int: int, float: NUM, Path: str, Path | None: str}


class _Table:
    """One section of the file: its keys are its dataclass's fields, each value is checked by
    the field's declared type and bounds (or by its entry in _SPECIAL); every error names the
    file and the key."""

    def __init__(self, name: str, raw: Any, source: str, base: Path) -> None:
        self.name, self.source, self.base = name, source, base
        self.cls = SECTIONS[name]
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: [{name}]: must be a table")
        self.raw: dict[str, Any] = raw
        known = sorted(f.name for f in fields(self.cls))
        for k in raw:
            if k not in known:
                self.fail(k, f"unknown key (known: {', '.join(known)})")

    def where(self, key: str) -> str:
        return f"{self.source}: {self.name}.{key}"

    def fail(self, key: str, why: str) -> NoReturn:
        raise ConfigError(f"{self.where(key)}: {why}")

    def path(self, value: str) -> Path:
        """A path from the file: relative ones are relative to the file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base / p

    def read(self) -> Any:
        """The section: the keys set in the file, the dataclass's defaults for the others."""
        hints = _HINTS[self.name]
        section = self.cls(**{f.name: self.value(f.name, hints[f.name], f.metadata)
                              for f in fields(self.cls) if f.name in self.raw})
        check = _CHECKS.get(self.name)
        if check is not None:
            check(self, section)
        return section

    def value(self, key: str, hint: Any, bounds: Mapping[str, Any]) -> Any:
        val = self.raw[key]
        special = _SPECIAL.get(f"{self.name}.{key}")
        typ, convert = special if special is not None else (_PLAIN[hint], None)
        numeric = typ in (int, float, NUM)
        if not isinstance(val, typ) or (isinstance(val, bool) and numeric):
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            self.fail(key, f"expected {names}, got {val!r}")
        if convert is not None:
            return convert(self, val)
        if hint in (Path, Path | None):
            return self.path(val)
        lo, hi = bounds.get("minimum"), bounds.get("maximum")
        if hi is not None and not lo <= val <= hi:
            self.fail(key, f"{val} out of range {lo}-{hi}")
        if lo is not None and val < lo:
            self.fail(key, f"must be at least {lo}, got {val}")
        return float(val) if hint is float else val


def _network(value: Any, where: str) -> Network:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a network (like 127.0.0.0/8)") from None


def _lists(t: _Table, value: list[Any]) -> tuple[str, ...]:
    lists = tuple(str(x).strip().lower() for x in value)
    for a in lists:
        if "@" not in a:
            t.fail("lists", f"{a!r} is not an e-mail address")
    return lists


def _members(t: _Table, value: dict[str, Any]) -> dict[str, Path]:
    members: dict[str, Path] = {}
    for addr, file in value.items():
        if not isinstance(file, str):
            t.fail(f"members.{addr}", "expected a file path")
        members[addr.strip().lower()] = t.path(file)
    return members


def _profile(t: _Table, value: str) -> str:
    if value not in PROFILES:
        t.fail("profile", f"{value!r} is not one of {', '.join(PROFILES)}")
    return value


def _threshold(t: _Table, value: float) -> float:
    value = float(value)
    if not 0 < value < 1:
        t.fail("threshold", f"must be between 0 and 1, got {value}")
    return value


def _postgres_url(t: _Table, value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        t.fail("url", "expected a postgresql:// URL")  # never echoed: it may hold a password
    return value


# keys whose TOML value is not their declared type, or that need more than a bound:
# "section.key" -> (TOML type, conversion)
_SPECIAL: dict[str, tuple[type | tuple[type, ...], Callable[[_Table, Any], Any]]] = {
    "listen.allow": (list, lambda t, v: tuple(_network(a, t.where("allow")) for a in v)),
    "listen.domains": (list, lambda t, v: tuple(str(x).lower().rstrip(".") for x in v)),
    "policy.lists": (list, _lists),
    "policy.members": (dict, _members),
    "store.url": (str, _postgres_url),
    "signature.profile": (str, _profile),
    "decode.threshold": (NUM, _threshold),
    "metrics.listen": (str, lambda t, v: parse_hostport(v, t.where("listen"))),
}


def _check_listen(t: _Table, s: Listen) -> None:
    if (s.tls_cert is None) != (s.tls_key is None):
        t.fail("tls_cert", "tls_cert and tls_key go together")
    if s.auth_file is not None and s.tls_cert is None:
        t.fail("auth_file", "AUTH is offered only over TLS: set tls_cert and tls_key too")


def _check_store(t: _Table, s: StoreConfig) -> None:
    if "url" in t.raw and "path" in t.raw:
        t.fail("url", "url (PostgreSQL) and path (SQLite) select different backends: set one")


# rules across the keys of one section
_CHECKS: dict[str, Callable[[_Table, Any], None]] = {"listen": _check_listen,
                                                     "store": _check_store}


def load(path: Path | None) -> Config:
    """Read the config; `path=None` means ./config.toml when present, else built-in defaults."""
    if path is None:
        if not Path("config.toml").exists():
            return Config()
        path = Path("config.toml")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(data, str(path), path.resolve().parent)


def from_dict(data: dict[str, Any], source: str = "config", base: Path | None = None) -> Config:
    for k in data:
        if k not in SECTIONS:
            raise ConfigError(f"{source}: [{k}]: unknown section "
                              f"(known: {', '.join(sorted(SECTIONS))})")
    tables = [_Table(name, data.get(name, {}), source, base or Path.cwd()) for name in SECTIONS]
    return Config(**{t.name: t.read() for t in tables}, source=source)
